"""Teacher training options (no torch import, so the CLI can build its flags instantly)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TeacherTrainConfig:
    hidden: int = field(default=64, metadata={"help": "embedding / hidden size"})
    layers: int = field(default=2, metadata={"help": "transformer blocks"})
    heads: int = field(default=2, metadata={"help": "attention heads"})
    inner: int = field(default=256, metadata={"help": "feed-forward size"})
    dropout: float = field(default=0.2, metadata={"help": "dropout (RecLM-gen uses 0.5 with max_len 10)"})
    max_len: int = field(default=50, metadata={"help": "history length the model sees"})
    loss: str = field(default="ce", metadata={"help": "'ce' (full softmax) or 'bce' (one sampled negative)"})
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
        if self.loss not in ("ce", "bce"):
            raise ValueError(f"loss must be 'ce' or 'bce', got {self.loss!r}")
        if self.max_len < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError("max_len, hidden and layers must be positive")
