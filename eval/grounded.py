"""Grounded decoding: every list item the model writes is a real catalog title.

A token trie holds each allowed title as it is tokenised after a list marker
(``" " + title``). While the model writes free text nothing is constrained; once it has
written a list marker at the start of a line (``1.``, ``2)``, ``-``, ``*``) the next
tokens must follow the trie until a title is complete, then a newline or end of text.
Titles already written and titles in the prompt's history are switched off per row, so
NonExist, RepeatItem and InHistory are zero by construction.

``strict=True`` also writes the numbering itself (``1.``, ``2.``, ...) and stops after
``max_items``: the whole answer is then a clean numbered list.

>>> trie = TitleTrie(tokenizer, catalog.titles[1:])                      # doctest: +SKIP
>>> proc = GroundedLogitsProcessor(trie, histories=[[1, 50]], tokenizer=tokenizer)  # doctest: +SKIP
>>> model.generate(**batch, logits_processor=[proc])                    # doctest: +SKIP
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch

_MARKER = re.compile(r"(?:^|\n)[ \t]*(?:\d+[.)]|[-*•])$")


class TitleTrie:
    """Titles (1-based item index = position in ``titles`` + 1) as token paths."""

    def __init__(self, tokenizer, titles: Sequence[str], prefix: str = " "):
        self.titles = list(titles)
        self.children: list[dict[int, int]] = [{}]
        self.terminal: list[int] = [0]            # item index ending at this node (0: none)
        self.paths: list[list[int]] = [[]]         # node path per item (index 0 unused)
        for item, title in enumerate(titles, 1):
            ids = tokenizer(prefix + title, add_special_tokens=False)["input_ids"]
            node, path = 0, [0]
            for t in ids:
                nxt = self.children[node].get(t)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][t] = nxt
                    self.children.append({})
                    self.terminal.append(0)
                node = nxt
                path.append(node)
            if self.terminal[node] == 0:           # equal token paths: the first title wins
                self.terminal[node] = item
            self.paths.append(path)
        counts = np.zeros(len(self.children), dtype=np.int32)
        for item in range(1, len(self.paths)):
            if self.terminal[self.paths[item][-1]] == item:
                counts[self.paths[item]] += 1
        self.counts = counts                       # live titles in each node's subtree

    def fresh_counts(self, disabled: Sequence[int] = ()) -> np.ndarray:
        c = self.counts.copy()
        for item in disabled:
            self.disable(c, int(item))
        return c

    def live_item(self, counts: np.ndarray, node: int) -> int:
        """The title ending at ``node`` if ``counts`` still allows it (else 0). A terminal node's
        count includes its own title and the subtree below: compare with its children's."""
        item = self.terminal[node]
        if not item:
            return 0
        below = sum(int(counts[c]) for c in self.children[node].values())
        return item if int(counts[node]) > below else 0

    def disable(self, counts: np.ndarray, item: int) -> None:
        if 0 < item < len(self.paths):
            path = self.paths[item]
            if self.terminal[path[-1]] == item and counts[path[-1]] > 0:
                counts[path] -= 1


class _Row:
    __slots__ = ("text", "node", "counts", "items", "done")

    def __init__(self, counts: np.ndarray, text: str):
        self.text, self.node, self.counts, self.items, self.done = text, None, counts, [], False


class GroundedLogitsProcessor:
    """A transformers ``LogitsProcessor`` (one row per prompt; no beam search)."""

    def __init__(self, trie: TitleTrie, tokenizer, histories: Sequence[Sequence[int]],
                 strict: bool = False, max_items: int | Sequence[int] = 10, response_prefix: str = "",
                 eos_ids: Sequence[int] | None = None):
        self.trie, self.tok, self.strict = trie, tokenizer, strict
        self.rows = [_Row(trie.fresh_counts(h), "\n" + response_prefix) for h in histories]
        self.max_items = [max_items] * len(histories) if isinstance(max_items, int) else list(max_items)
        self.newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        self.end_ids = [tokenizer.eos_token_id] if eos_ids is None else list(eos_ids)
        self._marker_ids: dict[int, list[int]] = {}
        self._prompt_len: int | None = None
        self._pending: list[list[int]] = [[] for _ in histories]   # forced token queues (strict mode)
        for r in self.rows:
            self._enter_item_if_marker(r)

    # -- state updates
    def _enter_item_if_marker(self, r: _Row) -> None:
        if r.node is None and _MARKER.search(r.text):
            r.node = 0

    def _marker(self, k: int) -> list[int]:
        if k not in self._marker_ids:
            self._marker_ids[k] = self.tok(f"{k}.", add_special_tokens=False)["input_ids"]
        return self._marker_ids[k]

    def _advance(self, b: int, token: int) -> None:
        r = self.rows[b]
        if r.done:
            return
        if r.node is not None:
            nxt = self.trie.children[r.node].get(token)
            if nxt is not None:
                r.node = nxt
                return
            item = self.trie.terminal[r.node]      # the title ended (newline / end of text)
            if item:
                r.items.append(item)
                self.trie.disable(r.counts, item)
            r.node = None
            r.text = ""
        r.text = (r.text + self.tok.decode([token]))[-64:]
        if token in self.end_ids:
            r.done = True
            return
        self._enter_item_if_marker(r)

    # -- constraints
    def _allowed(self, b: int) -> list[int] | None:
        r = self.rows[b]
        if r.done:
            return None
        if self._pending[b]:
            return [self._pending[b][0]]
        if r.node is not None:
            allowed = [t for t, child in self.trie.children[r.node].items() if r.counts[child] > 0]
            item = self.trie.terminal[r.node]
            if item and self._title_live(r, item):
                if not self.strict:
                    allowed += self.newline[:1] + self.end_ids
                else:                              # strict: a newline until the list is full
                    allowed += self.end_ids if len(r.items) + 1 >= self.max_items[b] else self.newline[:1]
            if not allowed:                        # every title is used up: end the list
                allowed = self.end_ids
            return allowed
        if self.strict:
            if len(r.items) >= self.max_items[b]:
                return self.end_ids
            if r.text.endswith("\n") or r.text == "":
                self._pending[b] = list(self._marker(len(r.items) + 1))
                return [self._pending[b][0]]
            return self.newline[:1]
        return None

    def _title_live(self, r: _Row, item: int) -> bool:
        return self.trie.live_item(r.counts, self.trie.paths[item][-1]) == item

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prompt_len is None:
            self._prompt_len = input_ids.shape[1]
        elif input_ids.shape[1] > self._prompt_len:
            last = input_ids[:, -1].tolist()
            for b, tok in enumerate(last):
                if self._pending[b] and self._pending[b][0] == tok:
                    self._pending[b].pop(0)
                self._advance(b, tok)
        mask = None
        for b in range(scores.shape[0]):
            allowed = self._allowed(b)
            if allowed is None:
                continue
            if mask is None:
                mask = torch.zeros_like(scores, dtype=torch.bool)
            mask[b] = True
            mask[b, allowed] = False
        return scores if mask is None else scores.masked_fill(mask, float("-inf"))

    # -- hook for engines that step one request at a time (vLLM's V1 logits processor,
    #    eval/vllm_backend.py); ``__call__`` above is the same two steps for a batch.
    def feed(self, b: int, token: int) -> None:
        """Row ``b`` wrote ``token`` (call once per generated token, in order)."""
        if self._pending[b] and self._pending[b][0] == token:
            self._pending[b].pop(0)
        self._advance(b, token)

    def allowed(self, b: int) -> list[int] | None:
        """Token ids row ``b`` may write next; None = unconstrained."""
        return self._allowed(b)

    def items(self) -> list[list[int]]:
        """Item indices written per row (complete titles only)."""
        out = []
        for r in self.rows:
            items = list(r.items)
            if r.node is not None and self.trie.terminal[r.node] and self._title_live(r, self.trie.terminal[r.node]):
                items.append(self.trie.terminal[r.node])
            out.append(items)
        return out
