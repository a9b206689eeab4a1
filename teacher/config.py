"""Teacher training options (no torch import, so the CLI can build its flags instantly)."""
from __future__ import annotations

from dataclasses import dataclass, field

ITEM_REPRS = ("id", "content", "hybrid")
# How tables name a variant, and how an eval report names the teacher behind its reference row.
VARIANT_NAMES = {"id": "SASRec (id)", "content": "LEARN (content)", "hybrid": "SASRec id+content (hybrid)"}
TEACHER_LABELS = {"id": "SASRec teacher", "content": "LEARN teacher (content)",
                  "hybrid": "SASRec id+content teacher (hybrid)"}
# The item text the content encoder reads (Jinja over the item's catalog row).
DEFAULT_CONTENT_TEMPLATE = ("{{ title }}{% if year %} ({{ year }}){% endif %}"
                            "{% if categories %}. Categories: {{ categories | join(', ') }}{% endif %}"
                            "{% if description %}. {{ description }}{% endif %}")


@dataclass
class TeacherTrainConfig:
    hidden: int = field(default=64, metadata={"help": "embedding / hidden size"})
    layers: int = field(default=2, metadata={"help": "transformer blocks"})
    heads: int = field(default=2, metadata={"help": "attention heads"})
    inner: int = field(default=256, metadata={"help": "feed-forward size"})
    dropout: float = field(default=0.2, metadata={"help": "dropout (RecLM-gen uses 0.5 with max_len 10)"})
    max_len: int = field(default=50, metadata={"help": "history length the model sees"})
    item_repr: str = field(default="id", metadata={
        "help": "'id' (SASRec), 'content' (LEARN: frozen-LLM item embeddings, two towers, no ids) or "
                "'hybrid' (SASRec id embedding + projected content embedding)"})
    content_model: str = field(default="smollm2-135m-instruct", metadata={
        "help": "frozen LM that encodes item texts (content/hybrid)"})
    content_template: str = field(default=DEFAULT_CONTENT_TEMPLATE, metadata={
        "help": "Jinja template of an item's text over its catalog fields"})
    content_max_length: int = field(default=64, metadata={"help": "tokens of item text the encoder reads"})
    temperature: float = field(default=0.05, metadata={"help": "content: cosine-score temperature"})
    logq: bool = field(default=True, metadata={
        "help": "infonce: subtract log target frequency (in-batch negatives are drawn by popularity)"})
    id_dropout: float = field(default=0.5, metadata={
        "help": "hybrid: share of items whose id part is dropped each training step, so that the content "
                "part learns to score an item alone, as it must for a new item"})
    drop_unseen_id: bool = field(default=True, metadata={
        "help": "hybrid: items without training interactions use their content part only"})
    loss: str = field(default="auto", metadata={
        "help": "'ce' (full softmax), 'bce' (one sampled negative), 'infonce' (in-batch negatives); "
                "auto: infonce for content, ce otherwise"})
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = field(default=32, metadata={"help": "windows per step (32 reached its best validation in ~0.12x RecBole's CPU time, bench/RESULTS.md)"})
    epochs: int = field(default=200, metadata={"help": "upper bound; early stopping ends sooner"})
    patience: int = field(default=10, metadata={"help": "epochs without validation NDCG@10 gain"})
    eval_every: int = 1
    mask_history: bool = field(default=True, metadata={"help": "mask history items when validating"})
    seed: int = 42
    threads: int | None = field(default=None, metadata={"help": "torch threads (None: torch default)"})
    time_budget_s: float | None = field(default=None, metadata={"help": "stop training after this many seconds"})

    def __post_init__(self):
        if self.item_repr not in ITEM_REPRS:
            raise ValueError(f"item_repr must be one of {', '.join(ITEM_REPRS)}, got {self.item_repr!r}")
        if self.loss == "auto":
            self.loss = "infonce" if self.item_repr == "content" else "ce"
        if self.loss not in ("ce", "bce", "infonce"):
            raise ValueError(f"loss must be 'ce', 'bce', 'infonce' or 'auto', got {self.loss!r}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError("id_dropout must be in [0, 1)")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if self.max_len < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("max_len, hidden and layers must be positive")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.eval_every < 1:
            raise ValueError(f"epochs ({self.epochs}), patience, batch_size and eval_every must be >= 1: "
                             "zero epochs would save an untrained teacher")
