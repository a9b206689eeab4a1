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
    """Per-row trie state of a beam search: each row's live titles (its history switched
    off); a beam may only extend a live title path, or end a complete title with ``end_id``."""

    def __init__(self, trie: TitleTrie, histories: Sequence[Sequence[int]], end_id: int):
        self.trie, self.end_id = trie, end_id
        self.counts = [trie.fresh_counts(h) for h in histories]

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
        return self.trie.live_item(self.counts[row], node)


def _search(model, enc, proc: TitleBeamProcessor, ks: list[int], width: int, depth: int,
            length_penalty: float) -> list[list[int]]:
    """Beam search through the title trie for one batch of prompts, sharing each prompt's
    prefill across its beams (transformers' beam search prefills every beam: 10x the work).
    Returns the items of each row, best first."""
    B, W = enc["input_ids"].shape[0], width
    dev = enc["input_ids"].device
    attn = enc["attention_mask"]
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=attn, position_ids=pos, use_cache=True,
                    logits_to_keep=1)
    cache = out.past_key_values
    logp0 = torch.log_softmax(out.logits[:, -1].float(), -1).cpu()
    cache.batch_repeat_interleave(W)
    attn = attn.repeat_interleave(W, 0)
    last_pos = pos[:, -1].repeat_interleave(W, 0)
    # running beams per row: (score, node, tokens); one start beam at the root
    running = [[(0.0, 0, 0)] for _ in range(B)]          # (score, node, parent slot)
    finished: list[list[tuple[float, int]]] = [[] for _ in range(B)]
    logp = logp0.repeat_interleave(W, 0)
    for step in range(depth):
        new_running, parents, tokens = [], [], []
        for r in range(B):
            c = proc.counts[r]
            cands = []
            for j, (score, node, _) in enumerate(running[r]):
                lp = logp[r * W + j]
                kids = [(t, ch) for t, ch in proc.trie.children[node].items() if c[ch] > 0]
                if kids:
                    ids = torch.tensor([t for t, _ in kids])
                    vals = lp[ids].tolist()
                    cands += [(score + v, ch, j, t) for (t, ch), v in zip(kids, vals)]
                item = proc.live_item(r, node) if node else 0
                if item:                                   # end the title here: the newline's log-prob
                    total = score + float(lp[proc.end_id])
                    finished[r].append((total / ((step + 1) ** length_penalty), item))
            cands.sort(key=lambda x: -x[0])
            keep = cands[:W]
            done = sorted(finished[r], reverse=True)
            if length_penalty <= 0 and len(done) >= ks[r] and (not keep or done[ks[r] - 1][0] >= keep[0][0]):
                keep = []                                  # no running beam can beat the k-th title: stop
            new_running.append([(sc, ch, j) for sc, ch, j, _ in keep])
            for slot in range(W):
                if slot < len(keep):
                    parents.append(r * W + keep[slot][2])
                    tokens.append(keep[slot][3])
                else:                                      # an empty slot: any beam, ignored
                    parents.append(r * W)
                    tokens.append(proc.end_id)
        running = new_running
        if not any(running):
            break
        idx = torch.tensor(parents, device=dev)
        cache.reorder_cache(idx)
        attn = torch.cat([attn[idx], torch.ones(B * W, 1, dtype=attn.dtype, device=dev)], 1)
        last_pos = last_pos[idx] + 1
        with torch.no_grad():
            out = model(input_ids=torch.tensor(tokens, device=dev)[:, None], attention_mask=attn,
                        position_ids=last_pos[:, None], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        logp = torch.log_softmax(out.logits[:, -1].float(), -1).cpu()
    return [[item for _, item in sorted(finished[r], reverse=True)[:ks[r]]] for r in range(B)]


def beam_lists(model, tok, chat_texts: Sequence[str], trie: TitleTrie, histories: Sequence[Sequence[int]],
               ks: Sequence[int], width: int = 10, batch_size: int = 4, length_penalty: float = 0.0,
               progress: bool = True) -> list[str]:
    """Numbered lists of the ``ks[i]`` best titles for each prompt (chat-formatted text).

    ``width`` beams are searched (at least ``ks[i]``); a row whose catalog runs out of
    titles gets a shorter list."""
    from tqdm.auto import tqdm

    newline = tok("\n", add_special_tokens=False)["input_ids"]
    if len(newline) != 1:
        raise ValueError("beam search needs a tokenizer that writes '\\n' as one token")
    end_id = newline[0]
    depth = max(len(p) for p in trie.paths[1:]) if len(trie.paths) > 1 else 1
    side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        starts = range(0, len(chat_texts), batch_size)
        for s in tqdm(starts, desc="beam search", disable=not progress or len(starts) < 2, mininterval=2.0):
            texts = [t + "1." for t in chat_texts[s:s + batch_size]]
            k = [int(x) for x in ks[s:s + batch_size]]
            proc = TitleBeamProcessor(trie, histories[s:s + batch_size], end_id)
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            for items in _search(model, enc, proc, k, max(width, max(k)), depth, length_penalty):
                out.append("\n".join(f"{j}. {trie.titles[it - 1]}" for j, it in enumerate(items, 1)))
    finally:
        tok.padding_side = side
    return out
