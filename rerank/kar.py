"""Knowledge-augmented reranker (KAR-style) for the RLRF4Rec loop (REFERENCE.md §2).

Pure torch/numpy, no language model inside: the caller encodes the knowledge texts into
vectors (one user-knowledge vector per list, one item-knowledge vector per item) and this
module turns them into reranking scores, so that each generated text can be judged by
the NDCG@K / MAP@K its user's list reaches.

- :func:`build_rerank_lists` cuts each user's time-ordered sequence into lists of
  ``list_len`` items: ``n_pos`` consecutive interacted items + random never-interacted
  negatives, label 1 iff rating >= 4 (KAR's MovieLens protocol). Test = the last window,
  valid = the one before, train = earlier windows.
- :class:`KnowledgeAdapter`: KAR's hybrid experts (shared + per-tower MLP experts,
  softmax gates; towers "user" and "item").
- :class:`KARReranker`: item-id embedding (+ item-tower(item knowledge) + user-tower(user
  knowledge)) per list item -> DLCM (GRU) or PRM (self-attention) backbone -> one score
  per item. ``knowledge_dim=None`` is the no-knowledge baseline.
- :func:`train_reranker` / :func:`score_lists`.

>>> lists = RerankLists(np.array([0]), np.array([[3, 1, 2]]), np.array([[1.0, 0.0, 1.0]]))
>>> len(lists), lists.list_len
(1, 3)
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import KARConfig
from .metrics import rerank_metrics

TOWERS = ("user", "item")


# ----------------------------------------------------------------------------- lists
@dataclass
class RerankLists:
    """Rectangular reranking lists: ``users`` [n] user index, ``items`` [n, L] item indices
    (1-based, as in the dataset), ``labels`` [n, L] 0/1 floats; ``n_items`` the catalogue
    size when known (so a model trained on these lists can embed every item)."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    n_items: int | None = None

    def __post_init__(self):
        self.users = np.asarray(self.users, dtype=np.int64).reshape(-1)
        self.items = np.asarray(self.items, dtype=np.int64)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.items.ndim != 2 or self.items.shape != self.labels.shape or len(self.users) != len(self.items):
            raise ValueError(f"need users [n], items [n, L], labels [n, L]; got {self.users.shape}, "
                             f"{self.items.shape}, {self.labels.shape}")

    def __len__(self) -> int:
        return len(self.users)

    @property
    def list_len(self) -> int:
        return int(self.items.shape[1])

    def subset(self, idx) -> "RerankLists":
        """The lists at ``idx`` (indices or a boolean mask), in that order."""
        return RerankLists(self.users[idx], self.items[idx], self.labels[idx], self.n_items)


def build_rerank_lists(ds, users=None, list_len: int = 10, n_pos: int = 5, max_train_lists: int = 4,
                       min_rated: int | None = None, seed: int = 0, pos_rating: float = 4.0):
    """Reranking lists from a :class:`~recalign.data.RecDataset` (KAR's protocol).

    Per user with sequence ``s`` (time order, length ``n``) and ratings ``r``:

    - test list  = ``s[n-n_pos:n]`` + ``list_len - n_pos`` negatives,
    - valid list = ``s[n-2*n_pos:n-n_pos]`` + negatives,
    - train lists = ``s[n-(k+3)*n_pos:n-(k+2)*n_pos]`` + negatives for k = 0, 1, ... while the
      window fits, at most ``max_train_lists`` (the most recent first).

    Negatives are items the user never interacted with, distinct within a list and drawn
    afresh for every list. Each list is shuffled, so its initial order (which DLCM/PRM
    read) carries no signal. Label = 1 iff rating >= ``pos_rating`` (negatives 0); when the
    dataset has no ratings every interacted item is a positive (implicit feedback).
    Randomness is seeded per (seed, user), so a user's lists do not depend on which other
    users are built.

    Users with fewer than ``3 * n_pos`` items (valid + test + one train window), fewer than
    ``min_rated``, or too few never-interacted items for the negatives are skipped, never
    an error: ``info["skipped_users"]`` counts them and ``info["skipped"]`` maps each to why.
    ``info["knowledge_cut"][u] = n - 2*n_pos``: a knowledge prompt for user ``u`` may show
    ``s[:cut]`` only, so valid and test items never leak into it (the train windows lie
    inside it, as in KAR, where the prompt history overlaps the training data).

    Returns ``(train, valid, test, info)``.
    """
    if not 0 < n_pos < list_len:
        raise ValueError(f"need 0 < n_pos < list_len; got n_pos={n_pos}, list_len={list_len}")
    if max_train_lists < 1:
        raise ValueError("max_train_lists must be >= 1")
    n_items = ds.n_items
    n_neg = list_len - n_pos
    need = max(3 * n_pos, int(min_rated or 0))
    users = range(ds.n_users) if users is None else [int(u) for u in users]
    all_items = np.arange(1, n_items + 1, dtype=np.int64)
    out = {name: ([], [], []) for name in ("train", "valid", "test")}
    cut, skipped = {}, {}
    for u in users:
        s = np.asarray(ds.sequences[u], dtype=np.int64)
        n = len(s)
        if n < need:
            skipped[u] = f"{n} interactions < {need}"
            continue
        cand = np.setdiff1d(all_items, s)
        if len(cand) < n_neg:
            skipped[u] = f"{len(cand)} never-interacted items < {n_neg} negatives"
            continue
        pos_label = (np.ones(n, dtype=np.float32) if ds.ratings is None
                     else (np.asarray(ds.ratings[u], dtype=np.float64) >= pos_rating).astype(np.float32))
        rng = np.random.default_rng([seed, u])
        windows = [("test", n - n_pos), ("valid", n - 2 * n_pos)]
        windows += [("train", n - (k + 3) * n_pos) for k in range(max_train_lists) if n - (k + 3) * n_pos >= 0]
        for name, start in windows:
            items = np.concatenate([s[start:start + n_pos], rng.choice(cand, size=n_neg, replace=False)])
            labels = np.concatenate([pos_label[start:start + n_pos], np.zeros(n_neg, dtype=np.float32)])
            perm = rng.permutation(list_len)
            us, its, lbs = out[name]
            us.append(u)
            its.append(items[perm])
            lbs.append(labels[perm])
        cut[u] = n - 2 * n_pos

    def pack(name):
        us, its, lbs = out[name]
        return RerankLists(np.array(us, dtype=np.int64),
                           np.array(its, dtype=np.int64).reshape(-1, list_len),
                           np.array(lbs, dtype=np.float32).reshape(-1, list_len), n_items)

    train, valid, test = pack("train"), pack("valid"), pack("test")
    info = {
        "skipped_users": len(skipped), "skipped": skipped, "knowledge_cut": cut, "n_users": len(cut),
        "list_len": list_len, "n_pos": n_pos, "max_train_lists": max_train_lists, "seed": seed,
        "labels": "implicit (all interacted items)" if ds.ratings is None else f"rating >= {pos_rating}",
        "positive_rate": {k: float(v.labels.mean()) if len(v) else 0.0
                          for k, v in (("train", train), ("valid", valid), ("test", test))},
    }
    return train, valid, test, info


# ----------------------------------------------------------------------------- model
def _mlp(in_dim: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class KnowledgeAdapter(nn.Module):
    """KAR's hybrid-expert adapter: ``n_shared`` experts shared by both towers and
    ``n_tower`` experts per tower, each an MLP ``in_dim -> hidden -> out``; each tower mixes
    (shared + its own) experts with a softmax gate computed from the input vector."""

    def __init__(self, in_dim: int, n_shared: int = 2, n_tower: int = 2, hidden: int = 128, out: int = 32,
                 dropout: float = 0.0):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out
        self.shared = nn.ModuleList(_mlp(in_dim, hidden, out, dropout) for _ in range(n_shared))
        self.towers = nn.ModuleDict({t: nn.ModuleList(_mlp(in_dim, hidden, out, dropout) for _ in range(n_tower))
                                     for t in TOWERS})
        self.gates = nn.ModuleDict({t: nn.Linear(in_dim, n_shared + n_tower) for t in TOWERS})

    def gate(self, x: torch.Tensor, tower: str) -> torch.Tensor:
        """[..., in_dim] -> [..., n_shared + n_tower] softmax weights (shared experts first)."""
        return torch.softmax(self.gates[tower](x), dim=-1)

    def forward(self, x: torch.Tensor, tower: str) -> torch.Tensor:
        """[..., in_dim] -> [..., out]: the gate-weighted sum of the tower's experts."""
        experts = torch.stack([e(x) for e in (*self.shared, *self.towers[tower])], dim=-2)
        return (self.gate(x, tower).unsqueeze(-1) * experts).sum(-2)


class KARReranker(nn.Module):
    """Scores every item of a list from the item's id embedding (and, with knowledge, the
    item tower's output for that item's knowledge vector and the user tower's output for
    the list's user-knowledge vector, concatenated) through a list-aware backbone.

    - ``dlcm`` (Ai et al., 2018): a unidirectional GRU reads the list in its initial order;
      item i is scored by an MLP on [features_i, GRU output_i, final GRU state]. The final
      state summarises the whole list, so every item sees every other one despite the one
      direction (DLCM's local context model also scores with its final state).
    - ``prm`` (Pei et al., 2019): features -> linear -> + learned position embedding ->
      pre-LN transformer encoder (self-attention over the list) -> per-item MLP.
    """

    def __init__(self, n_items: int, cfg: KARConfig, knowledge_dim: int | None = None):
        super().__init__()
        self.n_items, self.cfg, self.knowledge_dim = int(n_items), cfg, knowledge_dim
        self.item_emb = nn.Embedding(self.n_items + 1, cfg.emb_dim, padding_idx=0)
        feat = cfg.emb_dim
        self.adapter = None
        if knowledge_dim is not None:
            self.adapter = KnowledgeAdapter(int(knowledge_dim), cfg.n_shared, cfg.n_tower, cfg.expert_hidden,
                                            cfg.expert_out, cfg.dropout)
            feat += 2 * cfg.expert_out
        self.drop = nn.Dropout(cfg.dropout)
        h = cfg.hidden
        if cfg.backbone == "dlcm":
            self.gru = nn.GRU(feat, h, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0)
            self.scorer = _mlp(feat + 2 * h, h, 1, cfg.dropout)
        else:
            self.inp = nn.Linear(feat, h)
            self.pos_emb = nn.Embedding(cfg.max_list_len, h)
            layer = nn.TransformerEncoderLayer(h, cfg.heads, 2 * h, cfg.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(h)
            self.scorer = _mlp(h, h, 1, cfg.dropout)

    def features(self, items: torch.Tensor, user_k: torch.Tensor | None = None,
                 item_k: torch.Tensor | None = None) -> torch.Tensor:
        """items [B, L], user_k [B, D], item_k [B, L, D] -> per-item features [B, L, F].
        Ids above ``n_items`` (never seen in training) use the padding row, a zero vector."""
        x = self.item_emb(items.masked_fill(items > self.n_items, 0))
        if self.adapter is not None:
            if user_k is None or item_k is None:
                raise ValueError("this reranker was built with knowledge: pass user and item knowledge vectors")
            u = self.adapter(user_k, "user").unsqueeze(1).expand(-1, items.shape[1], -1)
            x = torch.cat([x, self.adapter(item_k, "item"), u], dim=-1)
        elif user_k is not None or item_k is not None:
            raise ValueError("this reranker has no knowledge adapter (knowledge_dim=None)")
        return self.drop(x)

    def forward(self, items: torch.Tensor, user_k: torch.Tensor | None = None,
                item_k: torch.Tensor | None = None) -> torch.Tensor:
        """-> scores [B, L] (higher = ranked earlier)."""
        x = self.features(items, user_k, item_k)
        if self.cfg.backbone == "dlcm":
            o, _ = self.gru(x)
            last = o[:, -1:].expand_as(o)
            return self.scorer(torch.cat([x, o, last], dim=-1)).squeeze(-1)
        length = items.shape[1]
        if length > self.cfg.max_list_len:
            raise ValueError(f"list length {length} > max_list_len {self.cfg.max_list_len}")
        h = self.inp(x) + self.pos_emb(torch.arange(length, device=items.device))[None]
        h = self.norm(self.encoder(self.drop(h)))
        return self.scorer(h).squeeze(-1)


# ----------------------------------------------------------------------------- train / score
def _as_array(v, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return a


def _check_knowledge(user_vecs, item_vecs, n_lists: int, n_items: int | None):
    if (user_vecs is None) != (item_vecs is None):
        raise ValueError("pass both user_vecs and item_vecs (knowledge) or neither (id-only baseline)")
    if user_vecs is None:
        return None, None
    u, it = _as_array(user_vecs, "user_vecs"), _as_array(item_vecs, "item_vecs")
    if len(u) != n_lists:
        raise ValueError(f"user_vecs has {len(u)} rows for {n_lists} lists (one vector per list)")
    if u.shape[1] != it.shape[1]:
        raise ValueError(f"user_vecs dim {u.shape[1]} != item_vecs dim {it.shape[1]}")
    if n_items is not None and len(it) < n_items + 1:
        raise ValueError(f"item_vecs has {len(it)} rows; need n_items + 1 = {n_items + 1} (row = item index)")
    return u, it


def _loss(scores: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor | None:
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(scores, labels)
    tot = labels.sum(-1)
    keep = tot > 0
    if not keep.any():
        return None                       # no positive in the batch: nothing to learn listwise
    target = labels[keep] / tot[keep, None]
    return -(target * F.log_softmax(scores[keep], dim=-1)).sum(-1).mean()


def _batch_inputs(lists: RerankLists, idx, user_t, item_t):
    items = torch.from_numpy(lists.items[idx])
    if user_t is None:
        return items, None, None
    return items, user_t[idx], item_t[items]


def train_reranker(train: RerankLists, valid: RerankLists | None, cfg: KARConfig, user_vecs=None,
                   item_vecs=None, log=None, valid_user_vecs=None, n_items: int | None = None):
    """Train a :class:`KARReranker`; returns ``(model, history)`` with the model in eval mode.

    User knowledge is one vector per list. Give it as ``user_vecs=[len(train), D]`` with
    ``valid_user_vecs=[len(valid), D]``, or as ``user_vecs=(train_vecs, valid_vecs)``, or as
    one array ``[len(train) + len(valid), D]`` with the train lists' rows first.
    ``item_vecs`` is ``[n_items + 1, D]`` (row = item index, row 0 unused). Give user and
    item knowledge both or neither (``None``: the id-only baseline).

    The id embedding table covers ``n_items`` items: the argument, else ``train.n_items``,
    else ``len(item_vecs) - 1``, else the largest id in train/valid (items beyond it are
    scored later as unknown ids, see :func:`score_lists`).

    Loss (``cfg.loss``): ``softmax`` (default) is the listwise softmax cross-entropy between
    the scores and the labels normalised to sum 1 (lists without a positive add no loss);
    ``bce`` is pointwise binary cross-entropy. AdamW; after each epoch the validation lists
    are scored and the weights with the best validation NDCG@``cfg.select_k`` are kept (stop
    after ``cfg.patience`` epochs without gain). Without ``valid`` it trains ``cfg.epochs``
    epochs and keeps the last weights. Seeded and deterministic on CPU.

    ``history``: ``{"epochs": [per-epoch rows], "best_epoch", "best_valid" (metrics at the
    best epoch), "time_s"}``.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if n_items is None:
        n_items = train.n_items or (len(item_vecs) - 1 if item_vecs is not None else None)
    if n_items is None:
        n_items = int(max(train.items.max(initial=0), valid.items.max(initial=0) if valid is not None else 0))
    n_valid = len(valid) if valid is not None else 0
    tr_u = va_u = None
    if valid_user_vecs is not None:
        if user_vecs is None:
            raise ValueError("valid_user_vecs given without user_vecs")
        tr_u, va_u = user_vecs, valid_user_vecs
    elif user_vecs is not None:
        if isinstance(user_vecs, (tuple, list)) and len(user_vecs) == 2 and np.ndim(user_vecs[0]) == 2:
            tr_u, va_u = user_vecs
        else:
            both = _as_array(user_vecs, "user_vecs")
            if len(both) != len(train) + n_valid:
                raise ValueError(f"user_vecs has {len(both)} rows; need len(train) + len(valid) = "
                                 f"{len(train) + n_valid} or a (train_vecs, valid_vecs) pair")
            tr_u, va_u = both[:len(train)], both[len(train):]
    tr_u, item_a = _check_knowledge(tr_u, item_vecs, len(train), n_items)
    if valid is not None and tr_u is not None:
        va_u, _ = _check_knowledge(va_u, item_a, n_valid, n_items)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = KARReranker(n_items, cfg, None if tr_u is None else tr_u.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    user_t = None if tr_u is None else torch.from_numpy(tr_u)
    item_t = None if item_a is None else torch.from_numpy(item_a)
    labels_t = torch.from_numpy(train.labels)
    key = f"NDCG@{cfg.select_k}"
    rows, best, best_state, best_epoch, best_valid, bad = [], -1.0, None, 0, {}, 0
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(len(train))
        total, steps = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            items, uk, ik = _batch_inputs(train, idx, user_t, item_t)
            loss = _loss(model(items, uk, ik), labels_t[idx], cfg.loss)
            if loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        row = {"epoch": epoch, "loss": total / max(steps, 1), "time_s": round(time.perf_counter() - t0, 2)}
        if valid is not None and len(valid):
            m = rerank_metrics(score_lists(model, valid, va_u, item_a), valid.labels, ks=sorted({1, 3, 5, 7, cfg.select_k}))
            row.update({f"valid_{k}": v for k, v in m.items()})
            if m[key] > best:
                best, best_epoch, best_valid, bad = m[key], epoch, m, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        rows.append(row)
        if log is not None:
            log(json.dumps(row))
        if bad >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(rows)
    model.eval()
    return model, {"epochs": rows, "best_epoch": best_epoch, "best_valid": best_valid,
                   "time_s": round(time.perf_counter() - t0, 2)}


@torch.no_grad()
def score_lists(model: KARReranker, lists: RerankLists, user_vecs=None, item_vecs=None,
                batch_size: int = 512) -> np.ndarray:
    """Scores ``[n, L]`` (float32) for every list; eval mode, no gradients, batched.
    ``user_vecs`` [n, D] aligned with ``lists``; ``item_vecs`` [n_items + 1, D]. Item ids
    above the model's ``n_items`` are unknown ids (zero id embedding; their knowledge
    vectors, when given, still count)."""
    if lists.items.size and lists.items.min() < 1:
        raise ValueError("item indices start at 1")
    user_a, item_a = _check_knowledge(user_vecs, item_vecs, len(lists), model.n_items)
    if (user_a is None) != (model.knowledge_dim is None):
        raise ValueError("knowledge vectors must be given exactly when the model has a knowledge adapter")
    if item_a is not None and lists.items.size and lists.items.max() >= len(item_a):
        raise ValueError(f"item index {lists.items.max()} has no row in item_vecs ({len(item_a)} rows)")
    was_training = model.training
    model.eval()
    user_t = None if user_a is None else torch.from_numpy(user_a)
    item_t = None if item_a is None else torch.from_numpy(item_a)
    out = np.zeros(lists.items.shape, dtype=np.float32)
    for i in range(0, len(lists), batch_size):
        idx = np.arange(i, min(i + batch_size, len(lists)))
        out[idx] = model(*_batch_inputs(lists, idx, user_t, item_t)).numpy()
    model.train(was_training)
    return out
