"""Grounded beam search over titles (eval/beam.py) against an exhaustive ranking."""
import pytest
import torch

from recalign.data import RecDataset
from recalign.eval.beam import beam_lists
from recalign.eval.grounded import TitleTrie
from recalign.models import load_model
from recalign.models.resolve import build_tiny_random
from recalign.rewards import parse_items


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_model(str(build_tiny_random(tmp_path_factory.mktemp("models") / "tiny")))


@pytest.fixture(scope="module")
def titles(ml100k_dir):
    return RecDataset.load(ml100k_dir).catalog.titles[1:25]      # a small catalog: 24 titles


def _exhaustive(model, tok, text, titles, skip, length_penalty=0.0):
    """Every title's D3 score: sum of log P(token) over ' title' + newline, after '1.'."""
    prompt = tok(text + "1.", add_special_tokens=False)["input_ids"]
    scores = {}
    for item, title in enumerate(titles, 1):
        if item in skip:
            continue
        ids = tok(" " + title, add_special_tokens=False)["input_ids"] + tok("\n", add_special_tokens=False)["input_ids"]
        x = torch.tensor([prompt + ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(x).logits[0, len(prompt) - 1:-1].float(), -1)
        total = float(lp[torch.arange(len(ids)), torch.tensor(ids)].sum())
        scores[item] = total / (len(ids) ** length_penalty)
    return sorted(scores, key=lambda i: -scores[i])


def test_beam_as_wide_as_the_catalog_is_the_exhaustive_ranking(tiny, titles):
    model, tok = tiny
    trie = TitleTrie(tok, titles)
    texts = [tok.apply_chat_template([{"role": "user", "content": c}], add_generation_prompt=True, tokenize=False)
             for c in ("recommend five movies", "what should I watch next?")]
    histories = [[1, 2, 3], [7]]
    lists = beam_lists(model, tok, texts, trie, histories, ks=[5, 5], width=len(titles), batch_size=2,
                       progress=False)
    for text, hist, answer in zip(texts, histories, lists):
        want = _exhaustive(model, tok, text, titles, set(hist))[:5]
        got = [titles.index(p.title) + 1 for p in parse_items(answer)]
        assert got == want, answer                           # best first, same order
        assert answer.startswith("1. ") and len(answer.splitlines()) == 5
        assert not set(got) & set(hist) and len(set(got)) == 5


def test_narrow_beam_lists_distinct_real_titles_outside_history(tiny, titles):
    model, tok = tiny
    trie = TitleTrie(tok, titles)
    text = tok.apply_chat_template([{"role": "user", "content": "movies"}], add_generation_prompt=True, tokenize=False)
    hist = list(range(1, 15))                                 # 14 of 24 titles are in the history
    (answer,) = beam_lists(model, tok, [text], trie, [hist], ks=[10], width=10, progress=False)
    got = [titles.index(p.title) + 1 for p in parse_items(answer)]
    assert len(got) == 10 and len(set(got)) == 10 and not set(got) & set(hist)
    assert sorted(got) == list(range(15, 25))                 # only ten titles are left: all of them
