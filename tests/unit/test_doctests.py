"""The `>>>` examples in docstrings are part of the documentation: keep them true."""
import doctest
import importlib

import pytest

MODULES = [
    "recalign.data.catalog", "recalign.data.prepare", "recalign.teacher.metrics",
    "recalign.templates.render", "recalign.tasks.spec",
    "recalign.rewards.parser", "recalign.rewards.reclm", "recalign.rewards.adapters", "recalign.rewards.asft",
    "recalign.eval.metrics", "recalign.eval.retention", "recalign.trainers.ppo",
    "recalign.trainers.rlrf4rec",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.failed == 0
    assert res.attempted > 0, f"{name} has no examples left to run"
