"""Options of the knowledge-augmented reranker (rerank/kar.py); torch-free, so that recipes and
``--help`` load without torch."""
from __future__ import annotations

from dataclasses import dataclass, field


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
