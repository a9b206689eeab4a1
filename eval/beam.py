"""Grounded beam search over titles: the K best catalog titles for the first list slot.

Greedy grounded decoding (:mod:`recalign.eval.grounded`) commits to a title by its first
token, so lists drift to whatever titles share a likely first word ("A Chef in Love",
"Aparajito" ...). Generative recommenders rank instead (BIGRec, D3): a beam search through
the title trie after ``1.`` keeps the ``width`` most probable partial titles, and the
finished beams, best first, are the list. Scores follow D3 ("Decoding Matters", Bao et al.
2024): the sum of the model's own token log-probabilities, with no length normalisation
(``length_penalty=0``), so the near-certain "ghost" tokens that finish a long title neither
help nor hurt it, and a title ends only where the model would write the newline after it
(the newline's probability is part of the score). History titles are not in a row's trie,
and beams are distinct token paths, so NonExist, RepeatItem and InHistory are zero.

>>> answers = beam_lists(model, tok, chat_texts, trie, histories, ks=[10] * len(chat_texts))  # doctest: +SKIP
>>> answers[0].splitlines()[0]                                                                  # doctest: +SKIP
'1. Star Wars (1977)'
"""
from __future__ import annotations

from typing import Sequence

import torch

from .grounded import TitleTrie


class TitleBeamProcessor:
    """A transformers logits processor for beam search: each beam may only extend a live
    title path (its row's history switched off), or end a complete title with ``end_id``."""

    def __init__(self, trie: TitleTrie, histories: Sequence[Sequence[int]], num_beams: int, end_id: int):
        self.trie, self.num_beams, self.end_id = trie, num_beams, end_id
        self.counts = [trie.fresh_counts(h) for h in histories]
        self._prompt_len: int | None = None

    def node(self, tokens: Sequence[int]) -> int | None:
        """Trie node reached by ``tokens`` (None: off the trie)."""
        node = 0
        for t in tokens:
            node = self.trie.children[node].get(int(t))
            if node is None:
                return None
        return node

    def live_item(self, row: int, node: int) -> int:
        """The title ending at ``node`` if it is allowed for ``row`` (else 0)."""
        item = self.trie.terminal[node]
        if not item:
            return 0
        c = self.counts[row]
        below = sum(int(c[ch]) for ch in self.trie.children[node].values())
        return item if int(c[node]) > below else 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
        gen = input_ids[:, self._prompt_len:].tolist()
        mask = torch.ones_like(scores, dtype=torch.bool)
        for b, tokens in enumerate(gen):
            row = b // self.num_beams
            node = self.node(tokens)
            if node is None:                       # cannot happen under this mask; end the beam
                mask[b, self.end_id] = False
                continue
            c = self.counts[row]
            allowed = [t for t, ch in self.trie.children[node].items() if c[ch] > 0]
            if self.live_item(row, node):
                allowed.append(self.end_id)
            mask[b, allowed or [self.end_id]] = False
        return scores.masked_fill(mask, float("-inf"))


def beam_lists(model, tok, chat_texts: Sequence[str], trie: TitleTrie, histories: Sequence[Sequence[int]],
               ks: Sequence[int], width: int = 10, batch_size: int = 4, length_penalty: float = 0.0,
               progress: bool = True) -> list[str]:
    """Numbered lists of the ``ks[i]`` best titles for each prompt (chat-formatted text).

    ``width`` beams are searched (at least ``ks[i]``); a row whose catalog runs out of
    titles gets a shorter list."""
    # early_stopping=False: transformers then stops only when no running beam can beat the
    # worst finished one, which is exact for length_penalty <= 0 (scores only fall)
    from tqdm.auto import tqdm

    newline = tok("\n", add_special_tokens=False)["input_ids"]
    if len(newline) != 1:
        raise ValueError("beam search needs a tokenizer that writes '\\n' as one token")
    end_id = newline[0]
    depth = max(len(p) for p in trie.paths[1:]) if len(trie.paths) > 1 else 1
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        starts = range(0, len(chat_texts), batch_size)
        for s in tqdm(starts, desc="beam search", disable=not progress or len(starts) < 2, mininterval=2.0):
            texts = [t + "1." for t in chat_texts[s:s + batch_size]]
            k = [int(x) for x in ks[s:s + batch_size]]
            beams = max(width, max(k))
            proc = TitleBeamProcessor(trie, histories[s:s + batch_size], beams, end_id)
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(**enc, logits_processor=[proc], num_beams=beams,
                                     num_return_sequences=beams, do_sample=False, length_penalty=length_penalty,
                                     early_stopping=False, max_new_tokens=depth, eos_token_id=end_id,
                                     pad_token_id=pad, temperature=None, top_p=None, top_k=None)
            new = gen[:, enc["input_ids"].shape[1]:].tolist()
            for i in range(len(texts)):
                items: list[int] = []
                for seq in new[i * beams:(i + 1) * beams]:
                    if end_id not in seq:
                        continue                    # ran out of length without finishing a title
                    node = proc.node(seq[:seq.index(end_id)])
                    item = proc.live_item(i, node) if node is not None else 0
                    if item and item not in items:
                        items.append(item)
                    if len(items) == k[i]:
                        break
                out.append("\n".join(f"{j}. {trie.titles[it - 1]}" for j, it in enumerate(items, 1)))
    finally:
        tok.padding_side = side
    return out
