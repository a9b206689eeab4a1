"""SASRec (Kang & McAuley, 2018): item embeddings + learned positions, causal pre-LN
transformer blocks, scores = dot product with the tied item embeddings.

Sequences are left-padded with 0 to ``max_len`` so the most recent item always sits at the
last position: the representation of a history is ``hidden[:, -1]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class SASRecConfig:
    n_items: int
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    inner: int = 256
    dropout: float = 0.2
    max_len: int = 50

    def to_dict(self) -> dict:
        return asdict(self)


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, cfg.inner, cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs [B, L] left-padded item indices -> hidden states [B, L, D]."""
        b, length = seqs.shape
        real = seqs > 0
        pos = torch.arange(length, device=seqs.device) + (self.cfg.max_len - length)
        x = self.item_emb(seqs) * self.cfg.hidden ** 0.5 + self.pos_emb(pos)[None]
        x = self.drop(x) * real[..., None]
        # Causal, and no attention to padding keys, except that every position may see itself
        # so that fully-padded rows stay finite (their outputs are never used).
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        allowed = causal[None] & (real[:, None, :] | torch.eye(length, dtype=torch.bool, device=seqs.device)[None])
        mask = (~allowed).repeat_interleave(self.cfg.heads, dim=0)
        h = self.encoder(x, mask=mask)
        return self.norm(h)

    def item_logits(self, h: torch.Tensor) -> torch.Tensor:
        """[..., D] -> [..., N+1] scores against every item; padding scored -inf."""
        logits = h @ self.item_emb.weight.T
        logits[..., 0] = float("-inf")
        return logits


def left_pad(histories, max_len: int, device=None, trim: bool = False) -> torch.Tensor:
    """Keep the last ``max_len`` items of each history and left-pad with 0.

    ``trim`` pads only to the longest history in the batch: the positions are counted from
    the right, so the scores are the same and short prompt windows cost far less.
    """
    if trim:
        max_len = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = torch.zeros(len(histories), max_len, dtype=torch.long)
    for i, h in enumerate(histories):
        h = list(h)[-max_len:]
        if h:
            out[i, max_len - len(h):] = torch.as_tensor(h, dtype=torch.long)
    return out.to(device) if device is not None else out
