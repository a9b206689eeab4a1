"""Text → vector with a frozen language model (LEARN-style content embeddings, REFERENCE.md §4).

The vector of a text is the mean of the model's last hidden states over its tokens. Vectors
are cached per (model, text): the RLRF4Rec loop encodes the same item facts and many
repeated knowledge texts every round. An empty text (a degenerate generation) gets the
zero vector: it is still a candidate (and a likely "rejected" one), never an error.

>>> enc = KnowledgeEncoder("tiny-random")                        # doctest: +SKIP
>>> enc.encode(["likes dark thrillers", ""]).shape               # doctest: +SKIP
(2, 64)
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from recalign.data.util import atomic_write

from .resolve import trunk


class KnowledgeEncoder:
    def __init__(self, model: str = "smollm2-135m-instruct", batch_size: int = 16, max_length: int = 512,
                 cache_file: str | Path | None = None):
        from .resolve import load_model, model_fingerprint, resolve_model

        from .device import compute_dtype, device

        self.model, self.tok = load_model(model, dtype=compute_dtype())
        self.device = device()
        self.model.to(self.device).eval()
        self.tok.padding_side = "right"
        self.batch_size, self.max_length = batch_size, max_length
        self.dim = int(self.model.config.hidden_size)
        dt = compute_dtype()          # GPU vectors (bf16) are not CPU ones: keep them apart
        self._key = f"{model_fingerprint(resolve_model(model))}|{max_length}|" + ("" if str(dt) == "torch.float32"
                                                                                else f"{dt}|")
        self._cache: dict[str, np.ndarray] = {}
        self.cache_file = Path(cache_file) if cache_file else None
        if self.cache_file and self.cache_file.is_file():
            with np.load(self.cache_file) as z:
                self._cache = {k: z[k] for k in z.files}
        self.hits = self.misses = 0

    def _h(self, text: str) -> str:
        return hashlib.sha256((self._key + text).encode()).hexdigest()[:32]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), hidden] float32 mean-pooled last hidden states."""
        import torch

        keys = [self._h(t) for t in texts]
        todo = sorted({(k, t) for k, t in zip(keys, texts) if k not in self._cache and t.strip()},
                      key=lambda kt: len(kt[1]))          # similar lengths per batch: less padding
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s:s + self.batch_size]
            enc = self.tok([t for _, t in chunk], return_tensors="pt", padding=True, truncation=True,
                           max_length=self.max_length, add_special_tokens=False).to(self.device)
            with torch.no_grad():
                h = trunk(self.model)(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            vecs = ((h * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy()
            for (k, _), v in zip(chunk, vecs):
                self._cache[k] = v.astype(np.float32)
        zero = np.zeros(self.dim, dtype=np.float32)
        return np.stack([self._cache.get(k, zero) for k in keys]) if texts else np.zeros((0, self.dim), np.float32)

    def save(self) -> None:
        """Write the cache (atomically) to ``cache_file``."""
        if self.cache_file is None:
            return
        import io

        buf = io.BytesIO()
        np.savez(buf, **self._cache)
        atomic_write(self.cache_file, buf.getvalue())
