"""SASRec (Kang & McAuley, 2018): item embeddings + learned positions, causal pre-LN
transformer blocks, scores = dot product with the tied item embeddings.

``item_repr`` picks how an item is represented (REFERENCE.md §4, LEARN):

- ``id``: a learned id embedding (plain SASRec);
- ``hybrid``: id embedding + a projection of the item's frozen LLM content embedding; the
  id part is dropped (``id_mask`` 0) for items without training interactions, whose id
  vectors never saw a positive, so a new item is scored by its text alone;
- ``content`` (LEARN): no ids at all. The user tower is the same causal transformer over
  projected content embeddings, the item tower an MLP over the content embedding, and
  scores are cosine similarities over a temperature.

Sequences are left-padded with 0 to ``max_len`` so the most recent item always sits at the
last position: the representation of a history is ``hidden[:, -1]``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ITEM_REPRS


@dataclass
class SASRecConfig:
    n_items: int
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    inner: int = 256
    dropout: float = 0.2
    max_len: int = 50
    item_repr: str = "id"
    content_dim: int = 0
    temperature: float = 0.05           # content only: cosine / temperature
    id_dropout: float = 0.0             # hybrid, training only: share of items whose id part is off

    def to_dict(self) -> dict:
        return asdict(self)


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        if cfg.item_repr not in ITEM_REPRS:
            raise ValueError(f"item_repr must be one of {', '.join(ITEM_REPRS)}, got {cfg.item_repr!r}")
        if cfg.item_repr != "id" and cfg.content_dim < 1:
            raise ValueError(f"item_repr {cfg.item_repr!r} needs content embeddings (content_dim > 0)")
        self.cfg = cfg
        n = cfg.n_items + 1
        if cfg.item_repr in ("id", "hybrid"):
            self.item_emb = nn.Embedding(n, cfg.hidden, padding_idx=0)
        if cfg.item_repr in ("content", "hybrid"):
            # Frozen (a buffer, saved with the model so that serving needs no LLM); row 0 and
            # items without text are zero, and the projections have no bias, so they add 0.
            self.register_buffer("content", torch.zeros(n, cfg.content_dim))
            self.content_proj = nn.Linear(cfg.content_dim, cfg.hidden, bias=False)
        if cfg.item_repr == "hybrid":
            self.register_buffer("id_mask", torch.ones(n))
            # what an item without its id part gets instead (an OOV id, trained by id dropout)
            self.unk_id = nn.Parameter(torch.zeros(cfg.hidden))
        if cfg.item_repr == "content":
            self.item_tower = nn.Sequential(nn.Linear(cfg.content_dim, cfg.inner), nn.GELU(),
                                            nn.Linear(cfg.inner, cfg.hidden))
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
        if self.cfg.item_repr == "hybrid":
            # One draw per step, shared by the input and the output side: an item whose id
            # part is off must be scored by its content alone, as a new item will be
            # (DropoutNet, Volkovs et al. 2017).
            keep = self.id_mask
            if self.training and self.cfg.id_dropout > 0:
                keep = keep * (torch.rand_like(keep) >= self.cfg.id_dropout)
            self._id_keep = keep
        x = self.input_vectors(seqs) * self.cfg.hidden ** 0.5 + self.pos_emb(pos)[None]
        x = self.drop(x) * real[..., None]
        # Causal, and no attention to padding keys, except that every position may see itself
        # so that fully-padded rows stay finite (their outputs are never used).
        causal = torch.ones(length, length, dtype=torch.bool, device=seqs.device).tril()
        allowed = causal[None] & (real[:, None, :] | torch.eye(length, dtype=torch.bool, device=seqs.device)[None])
        mask = (~allowed).repeat_interleave(self.cfg.heads, dim=0)
        h = self.encoder(x, mask=mask)
        return self.norm(h)

    def input_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item indices [...] -> the vectors the user tower reads [..., D]."""
        rep = self.cfg.item_repr
        if rep == "id":
            return self.item_emb(items)
        c = self.content_proj(self.content[items])
        if rep == "content":
            return c
        keep = self._id_keep if self.training and hasattr(self, "_id_keep") else self.id_mask
        k = keep[items, None]
        return self.item_emb(items) * k + self.unk_id * ((1 - k) * (items > 0)[..., None]) + c

    def output_vectors(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """The item tower: vectors that score ``items`` (default all, padding included)."""
        if items is None:
            items = torch.arange(self.cfg.n_items + 1, device=self.pos_emb.weight.device)
        if self.cfg.item_repr != "content":
            return self.input_vectors(items)             # tied, as in SASRec
        return F.normalize(self.item_tower(self.content[items]), dim=-1)

    def user_vectors(self, h: torch.Tensor) -> torch.Tensor:
        """The user tower's output as it meets the item vectors (content: cosine / temperature)."""
        if self.cfg.item_repr == "content":
            return F.normalize(h, dim=-1) / self.cfg.temperature
        return h

    def item_logits(self, h: torch.Tensor, items: torch.Tensor | None = None) -> torch.Tensor:
        """[..., D] -> [..., N+1] scores against every item (padding scored -inf), or
        [..., len(items)] against the given ones."""
        logits = self.user_vectors(h) @ self.output_vectors(items).T
        if items is None:
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
