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


@dataclass
class KARConfig:
    """Knowledge-augmented reranker (KAR-style, REFERENCE.md §2) options; torch-free."""

    backbone: str = field(default="dlcm", metadata={"help": "'dlcm' (GRU over the list) or 'prm' (self-attention)"})
    emb_dim: int = field(default=32, metadata={"help": "item-id embedding size"})
    expert_hidden: int = field(default=128, metadata={"help": "adapter expert MLP hidden size (KAR: 128)"})
    expert_out: int = field(default=32, metadata={"help": "adapter expert output size (KAR: 32)"})
    n_shared: int = field(default=2, metadata={"help": "experts shared by the user and item towers"})
    n_tower: int = field(default=2, metadata={"help": "experts owned by each tower"})
    hidden: int = field(default=64, metadata={"help": "backbone hidden size (GRU state / transformer width)"})
    layers: int = field(default=1, metadata={"help": "GRU layers or transformer blocks"})
    heads: int = field(default=2, metadata={"help": "attention heads (prm)"})
    dropout: float = 0.1
    max_list_len: int = field(default=50, metadata={"help": "longest list (prm position embeddings)"})
    loss: str = field(default="softmax", metadata={
        "help": "'softmax': listwise softmax cross-entropy against the normalised labels "
                "(lists without a positive add no loss); 'bce': pointwise binary cross-entropy"})
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = field(default=64, metadata={"help": "lists per step"})
    epochs: int = field(default=50, metadata={"help": "upper bound; early stopping ends sooner"})
    patience: int = field(default=5, metadata={"help": "epochs without validation NDCG@5 gain"})
    select_k: int = field(default=5, metadata={"help": "early stopping watches validation NDCG@select_k"})
    seed: int = 0
    threads: int | None = field(default=None, metadata={"help": "torch threads (None: leave as is)"})

    def __post_init__(self):
        if self.backbone not in ("dlcm", "prm"):
            raise ValueError(f"backbone must be 'dlcm' or 'prm', got {self.backbone!r}")
        if self.loss not in ("softmax", "bce"):
            raise ValueError(f"loss must be 'softmax' or 'bce', got {self.loss!r}")
        if min(self.emb_dim, self.expert_hidden, self.expert_out, self.hidden, self.layers, self.heads,
               self.batch_size, self.epochs, self.patience, self.select_k, self.max_list_len) < 1:
            raise ValueError("sizes, epochs, patience and select_k must be positive")
        if self.n_shared < 0 or self.n_tower < 0 or self.n_shared + self.n_tower < 1:
            raise ValueError("need n_shared, n_tower >= 0 and at least one expert per tower")
        if self.backbone == "prm" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
