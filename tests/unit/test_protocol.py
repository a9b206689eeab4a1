"""The reclm-gen protocol's rules against cases worked from the official code (REFERENCE.md §1.7)."""
import math

import pytest

from recalign.data import Catalog, DataError
from recalign.eval.metrics import sample_metrics
from recalign.rewards.protocol import get_protocol, protocol_of
from recalign.rewards import item_and_list_rewards
from recalign.rewards.parser import parse_items_strict

CAT = Catalog(["Heat", "Casino", "Alien", "Toy Story"], [["Crime"], ["Crime"], ["Sci-Fi"], ["Animation"]])
ROW = {"task": "I0", "history": [3], "target": 2, "item_count": 2}      # target Casino, history Alien
RANKS = {1: 0, 2: 1, 4: 2}                                                # Heat is the teacher's first
L3 = math.log2(3)
B2 = 1 + 1 / L3 ** 2


def _reward(text, parser):
    return item_and_list_rewards(ROW, text, RANKS, CAT, parser=parser)


@pytest.mark.parametrize("text,strict,lenient", [
    # Heat (rank 0) then the target: both parsers agree
    ("1. Heat\n2. Casino", 10 * (0.5 * (1 / L3 + 1 / L3) / B2 + 0.5 / L3), None),
    # a preamble is an item officially: nonexistent, Heat 2nd, Casino beyond m (still found for the NDCG part)
    ("Here are 2 movies:\n1. Heat\n2. Casino", 10 * (0.5 * (-1 + 1 / L3 / L3 - 1) / B2 + 0.5 * 0.5), 7.667),
    # lower case: neither title exists, the target is not found
    ("1. heat\n2. casino", 10 * (0.5 * -2 / B2), 7.667),
    # a blank line is an item
    ("1. Heat\n\n2. Casino", 10 * (0.5 * (1 / L3 - 2) / B2 + 0.5 * 0.5), 7.667),
    # quotes and a year are part of the title officially
    ('1. "Heat" (1995)\n2. Casino', 10 * (0.5 * (-1 + 1 / L3) / B2 + 0.5 / L3), 7.667),
])
def test_strict_list_reward_matches_the_official_rules(text, strict, lenient):
    s, le = _reward(text, "strict"), _reward(text, "lenient")
    assert s.list_reward == pytest.approx(strict, abs=1e-9)
    assert le.list_reward == pytest.approx(lenient if lenient is not None else strict, abs=1e-3)


def test_reference_numbers():
    # REFERENCE.md §1.7's figures (official code): the same values to 2 decimals, except the
    # preamble case, where the official -8.23 comes from its quirk (an unknown title maps to the
    # first catalog item, here Heat, so the real Heat then counts as a repeat); we do not copy it
    got = [round(_reward(t, "strict").list_reward, 2) for t in
           ("1. heat\n2. casino", "1. Heat\n\n2. Casino", '1. "Heat" (1995)\n2. Casino')]
    assert got == [-7.15, -2.40, 1.84] or got == [-7.15, -2.4, 1.83]
    assert round(_reward("Here are 2 movies:\n1. Heat\n2. Casino", "strict").list_reward, 2) == -3.23


def test_strict_parser_and_metrics():
    items = parse_items_strict("Here are 2 movies:\n1. Heat\n\n2. Casino\n")
    assert [i.title for i in items] == ["Here are 2 movies:", "Heat", "", "Casino"]
    text = "1. Heat\n2. Casino"
    it = parse_items_strict(text)[1]
    assert text[it.start:it.end] == "Casino" and it.line_end == len(text)
    s = sample_metrics(ROW, "Sure!\n1. Heat\n2. Casino", CAT, parser="strict")
    assert s["CorrectCount"] == 0 and s["NonExist"] == 1 and s["HR"] == 0     # Casino is the 3rd line, cut at K=2
    le = sample_metrics(ROW, "Sure!\n1. Heat\n2. Casino", CAT)
    assert le["CorrectCount"] == 1 and le["HR"] == 1
    # fuzzy is a separate eval number: it maps the lower-case titles back
    f = sample_metrics(ROW, "1. heat\n2. casino", CAT, parser="strict", fuzzy=True)
    assert f["NonExist"] == 0 and f["HR"] == 1


def test_protocol_options_and_errors():
    assert get_protocol("recalign").as_dict() == {"name": "recalign", "parser": "lenient", "reward_ranks": "masked",
                                                  "tcp_minus": "outside"}
    assert get_protocol("reclm-gen", reward_ranks="masked").reward_ranks == "masked"
    with pytest.raises(DataError, match="choose one of recalign, reclm-gen"):
        get_protocol("reclm")
    with pytest.raises(DataError, match="--parser 'exact': choose one of lenient, strict"):
        get_protocol("recalign", parser="exact")
    assert protocol_of({}) == get_protocol("recalign").as_dict()
    # a run written before tcp_minus existed reported I1- TCP outside the category, whatever its protocol
    old = {"name": "reclm-gen", "parser": "strict", "reward_ranks": "unmasked"}
    assert protocol_of({"protocol": old})["tcp_minus"] == "outside"


def test_official_tcp_for_i1_minus_counts_the_excluded_category():
    row = {"task": "I1-", "history": [3], "target": 4, "item_count": 2, "category": "Crime"}
    text = "1. Heat\n2. Toy Story"                     # one slot in the excluded category
    ours = sample_metrics(row, text, CAT)["TCP"]
    official = sample_metrics(row, text, CAT, parser="strict", tcp_minus=get_protocol("reclm-gen").tcp_minus)["TCP"]
    assert (ours, official) == (0.5, 0.5)
    text = "1. Heat\n2. Casino"                        # both in it: ours 0 (bad), official 1 (bad: lower is better)
    assert sample_metrics(row, text, CAT)["TCP"] == 0.0
    assert sample_metrics(row, text, CAT, tcp_minus="inside")["TCP"] == 1.0
    plus = {**row, "task": "I1+"}
    assert sample_metrics(plus, text, CAT, tcp_minus="inside")["TCP"] == 1.0   # I1+ is the same either way


def test_comparison_across_protocols_is_refused():
    from recalign.eval.report import compare_runs

    a = {"name": "sft", "protocol": get_protocol("recalign").as_dict(), "per_row": []}
    b = {"name": "sft-strict", "protocol": get_protocol("reclm-gen").as_dict(), "per_row": []}
    with pytest.raises(ValueError, match="cannot compare sft .* and sft-strict .*different protocols"):
        compare_runs(a, b)
    assert compare_runs(a, {**a, "name": "x"}) == [] and compare_runs({"name": "old", "per_row": []}, a) == []


def test_unmasked_ranks_count_history_items():
    import numpy as np

    from recalign.trainers.rewarding import RewardContext

    class T:
        def rank_all(self, histories, mask_history=True):
            self.mask = mask_history
            return np.zeros((len(histories), 5), dtype=np.int32)
    t = T()
    RewardContext(dataset=None, teacher=t, mask_ranks=False).ranks([ROW])
    assert t.mask is False
    RewardContext(dataset=None, teacher=t).ranks([ROW])
    assert t.mask is True
