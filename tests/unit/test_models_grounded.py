
import pytest
import torch

from recalign.data import DataError, RecDataset
from recalign.eval.grounded import GroundedLogitsProcessor, TitleTrie
from recalign.models import load_model, resolve_model
from recalign.models.resolve import build_tiny_random
from recalign.rewards import parse_items


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = build_tiny_random(tmp_path_factory.mktemp("models") / "tiny")
    return load_model(str(out))


@pytest.fixture(scope="module")
def catalog(ml100k_dir):
    return RecDataset.load(ml100k_dir).catalog


def test_tiny_random_is_deterministic_and_chat_ready(tmp_path, tiny):
    a = build_tiny_random(tmp_path / "a")
    b = build_tiny_random(tmp_path / "b")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    model, tok = tiny
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "1. Heat"}],
                                   tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n1. Heat<|im_end|>\n"
    assert "{% generation %}" in tok.chat_template
    assert tok.decode(tok("2001: A Space Odyssey (1968)")["input_ids"]) == "2001: A Space Odyssey (1968)"
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_model_resolution_errors(tmp_path):
    with pytest.raises(DataError, match="did you mean 'tiny-random'") as e:
        resolve_model("tiny-randon")
    assert "smollm2-135m-instruct" in str(e.value)
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(DataError, match="no config.json"):
        resolve_model(str(tmp_path / "notamodel"))
    with pytest.raises(DataError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "x.gguf"))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def _generate(model, tok, prompts, proc, max_new_tokens=120, bias=None):
    x = tok.apply_chat_template(prompts, add_generation_prompt=True, return_tensors="pt", return_dict=True,
                                padding=True)
    procs = [proc]
    if bias is not None:
        procs.insert(0, bias)
    out = model.generate(**x, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=procs)
    return [tok.decode(o[x["input_ids"].shape[1]:], skip_special_tokens=True) for o in out]


def test_strict_grounded_untrained_model_writes_only_real_new_titles(tiny, catalog):
    model, tok = tiny
    trie = TitleTrie(tok, catalog.titles[1:])
    histories = [[1, 2, 3, 50], [100, 181]]
    proc = GroundedLogitsProcessor(trie, tok, histories, strict=True, max_items=5)
    prompts = [[{"role": "user", "content": "recommend"}], [{"role": "user", "content": "some movies please"}]]
    texts = _generate(model, tok, prompts, proc, max_new_tokens=200)
    for text, hist, items in zip(texts, histories, proc.items()):
        parsed = parse_items(text)
        matched = [catalog.match(p.title) for p in parsed]
        assert len(parsed) == 5 and None not in matched, text        # NonExist = 0
        assert len(set(matched)) == 5                                 # RepeatItem = 0
        assert not set(matched) & set(hist)                           # InHistory = 0
        assert matched == items
        assert text.startswith("1. ") and "\n5. " in text


class _Bias:
    """Pushes the model towards one token sequence, as a model that 'wants' a title would."""

    def __init__(self, ids, strength=1e4):
        self.ids, self.strength, self.start = ids, strength, None

    def __call__(self, input_ids, scores):
        if self.start is None:
            self.start = input_ids.shape[1]
        step = input_ids.shape[1] - self.start
        if step < len(self.ids):
            scores = scores.clone()
            scores[:, self.ids[step]] += self.strength
        return scores


def test_grounded_refuses_history_title_the_model_prefers(tiny, catalog):
    model, tok = tiny
    trie = TitleTrie(tok, catalog.titles[1:])
    want = tok(" " + catalog.titles[1], add_special_tokens=False)["input_ids"]      # "Toy Story", in history
    prompts = [[{"role": "user", "content": "recommend"}]]
    free = GroundedLogitsProcessor(trie, tok, [[]], response_prefix="1.")
    assert catalog.titles[1] in _generate(model, tok, prompts, free, 20, _Bias(want))[0]
    grounded = GroundedLogitsProcessor(trie, tok, [[1]], response_prefix="1.")
    text = _generate(model, tok, prompts, grounded, 40, _Bias(want))[0]
    first = text.split("\n")[0].strip()
    assert catalog.match(first) not in (None, 1), text


def test_free_text_is_not_constrained(tiny, catalog):
    model, tok = tiny
    trie = TitleTrie(tok, catalog.titles[1:50])
    proc = GroundedLogitsProcessor(trie, tok, [[]])
    ids = torch.tensor([tok("Sure, here are some")["input_ids"]])
    scores = torch.randn(1, len(tok))
    assert torch.equal(proc(ids, scores), scores)
    ids2 = torch.cat([ids, torch.tensor([tok("\n1.", add_special_tokens=False)["input_ids"]])], dim=1)
    for k in range(1, ids2.shape[1] - ids.shape[1] + 1):
        out = proc(ids2[:, :ids.shape[1] + k], scores)
    allowed = torch.isfinite(out[0]).nonzero().flatten().tolist()
    firsts = {tok(" " + t, add_special_tokens=False)["input_ids"][0] for t in catalog.titles[1:50]}
    assert set(allowed) == firsts


def test_gguf_conversion_waits_for_another_process_and_does_not_redo_it(tmp_path):
    """Ranks of one launch resolve the GGUF at once: one converts under the lock; another
    process waits on it and then uses the finished directory instead of converting again
    (without the lock it would try to convert this unreadable file and fail)."""
    import subprocess
    import sys
    import time

    from recalign.models.resolve import file_lock

    gguf, out = tmp_path / "m.gguf", tmp_path / "cache" / "gguf-m"
    gguf.write_bytes(b"not a gguf")
    code = ("import sys, time; from pathlib import Path; from recalign.models.resolve import gguf_to_dir; "
            "print('ready', flush=True); "
            f"gguf_to_dir(Path({str(gguf)!r}), Path({str(out)!r})); print(time.time())")
    with file_lock(out.parent / f".{out.name}.lock"):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)                                 # it is now waiting on the lock
        assert proc.poll() is None
        out.mkdir(parents=True)                         # "the other rank" finishes the directory
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")
        released = time.time()
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert float(stdout.strip().splitlines()[-1]) >= released and "converting" not in stdout
