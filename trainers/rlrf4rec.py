"""RLRF4Rec: the LLM writes user-preference knowledge, a knowledge-augmented reranker scores
it, DPO on the best and worst texts aligns the LLM (REFERENCE.md §2), for R rounds.

Round 0: the starting LLM writes one (greedy) knowledge text per user; a frozen encoder
(mean-pooled last hidden states, ``models/encoder.py``) turns knowledge and item facts into
vectors; KAR-style rerankers (hybrid-expert adapter + DLCM or PRM backbone,
``rerank/kar.py``) are trained on lists of 10 items per user three ways: item ids only,
item facts with zero user knowledge (item vectors help on their own, so this is the
baseline that isolates the user knowledge), and item facts + user knowledge; each is
measured on the users' held-out test lists (NDCG@K with gain 2^rel − 1, MAP@K).

Round r ≥ 1: the current LLM samples ``samples`` texts per user; each is scored by the
reranker trained on round r − 1's knowledge (the first backbone) as that user's NDCG@K on
their validation list with the text in place of the user's knowledge; the best text is
"chosen" and the worst "rejected" (users whose texts all score the same give no pair and
are counted); TRL's ``DPOTrainer`` (LoRA on the round r − 1 policy, whose adapters-disabled
state is the reference; β 0.01, sigmoid or IPO loss) trains on the pairs; the new LLM writes
fresh greedy knowledge, the rerankers are retrained on it and measured on the test lists.

Each round is one directory (``round-<r>``: knowledge.jsonl, pairs.jsonl, adapter/ (SFT
chain stacked into one adapter), metrics.json), written atomically; a finished round is
skipped on re-run, so an interrupted loop resumes at the next round. ``report.md`` compares
no knowledge / base-LLM knowledge / rounds 1..R per backbone, with plots.

    recalign rlrf4rec --recipe recipes/smollm2-135m/dpo-loop/config_ml100k.yaml
    python -m recalign.trainers.rlrf4rec --config recipes/smollm2-135m/dpo-loop/config_ml100k.yaml --rounds 1
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from recalign.eval.report import write_rlrf4rec_report
from recalign.tasks.knowledge import item_metadata_texts, item_prompts, user_prompts

from .common import LoRAFields


@dataclass
class RLRF4RecConfig(LoRAFields):
    _LORA = (8, 16, 0.05)          # each round's DPO adapter

    # model and data
    model: str = field(default="smollm2-135m-instruct", metadata={"help": "the LLM that writes knowledge"})
    adapter: str | None = field(default=None, metadata={"help": "adapter to start from (e.g. an SFT output)"})
    data: str | None = field(default=None, metadata={"help": "dataset directory from `recalign data prepare`"})
    output_dir: str = field(default="runs/rlrf4rec", metadata={"help": "rounds, report.md"})
    max_users: int | None = field(default=100, metadata={"help": "the first N users with enough ratings"})
    history_len: int = field(default=20, metadata={"help": "rated items shown in the user prompt"})
    seed: int = field(default=42, metadata={"help": "seed for lists, sampling and training"})
    # knowledge generation
    rounds: int = field(default=2, metadata={"help": "DPO rounds (paper: gains saturate after 2)"})
    samples: int = field(default=4, metadata={"help": "N knowledge texts sampled per user and round"})
    temperature: float = field(default=0.9, metadata={"help": "sampling temperature of the N texts"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling of the N texts"})
    max_new_tokens: int = field(default=160, metadata={"help": "knowledge text length cap"})
    gen_batch_size: int = field(default=16, metadata={"help": "prompts per generate call"})
    item_knowledge: str = field(default="metadata", metadata={
        "help": "'metadata' (title, year, genres as the item facts) or 'generate' (the LLM writes item facts)"})
    encoder: str | None = field(default=None, metadata={"help": "frozen encoder model (default: --model)"})
    # reranker (rerank/config.py KARConfig) and the score of a text
    backbones: str = field(default="dlcm,prm", metadata={"help": "reranking backbones; the first one scores texts"})
    score_metric: str = field(default="NDCG@5", metadata={"help": "per-user score of a text: NDCG@K or MAP@K"})
    list_len: int = field(default=10, metadata={"help": "items per reranking list"})
    n_pos: int = field(default=5, metadata={"help": "interacted items per list (the rest: random negatives)"})
    max_train_lists: int = field(default=4, metadata={"help": "training lists per user"})
    kar_epochs: int = field(default=40, metadata={"help": "reranker epochs (early stopping on valid NDCG@5)"})
    kar_patience: int = field(default=8, metadata={"help": "reranker early-stopping patience (PRM starts slowly)"})
    # DPO (TRL DPOTrainer + LoRA)
    beta: float = field(default=0.01, metadata={"help": "DPO beta (RLRF4Rec: 0.01)"})
    loss_type: str = field(default="sigmoid", metadata={"help": "DPO loss: sigmoid or ipo"})
    learning_rate: float = field(default=5e-5, metadata={"help": "DPO learning rate (RLRF4Rec: 5e-5)"})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "DPO batch (RLRF4Rec: 2)"})
    gradient_accumulation_steps: int = field(default=8, metadata={"help": "RLRF4Rec: 8"})
    num_train_epochs: float = field(default=3.0, metadata={"help": "DPO epochs per round (RLRF4Rec: 3)"})
    max_steps: int = field(default=-1, metadata={"help": "cap DPO steps per round (-1: epochs decide)"})
    max_length: int = field(default=1024, metadata={"help": "DPO prompt + answer tokens"})

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.loss_type not in ("sigmoid", "ipo"):
            problems.append(f"loss_type must be 'sigmoid' or 'ipo', got {self.loss_type!r}")
        if self.item_knowledge not in ("metadata", "generate"):
            problems.append(f"item_knowledge must be 'metadata' or 'generate', got {self.item_knowledge!r}")
        if self.samples < 2:
            problems.append(f"samples must be >= 2 (a best and a worst text), got {self.samples}")
        kind, _, k = self.score_metric.partition("@")
        if kind not in ("NDCG", "MAP") or not k.isdigit():
            problems.append(f"score_metric must look like NDCG@5 or MAP@5, got {self.score_metric!r}")
        if self.rounds < 0 or self.beta <= 0:
            problems.append("rounds must be >= 0 and beta > 0")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def k(self) -> int:
        return int(self.score_metric.split("@")[1])


# --------------------------------------------------------------------------- selection
def select_pairs(scores: Sequence[Sequence[float]], tiebreak: Sequence[Sequence[float]] | None = None
                 ) -> list[tuple[int, int] | None]:
    """Per user, (best, worst) sample indices by score, ties broken by ``tiebreak`` (our
    choice: NDCG@5 on a 10-item list takes few values, so texts often tie); among exact
    ties the first is best and the last worst. None when every sample ties on both (no
    preference to learn). NaN counts as worst.

    >>> select_pairs([[0.2, 0.9, 0.1], [0.5, 0.5], [0.3, float("nan"), 0.3]])
    [(1, 2), None, (0, 1)]
    >>> select_pairs([[0.5, 0.5, 0.5]], tiebreak=[[0.1, 0.3, 0.2]])
    [(1, 0)]
    """
    out = []
    for i, s in enumerate(scores):
        v = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=-np.inf)
        t = np.zeros_like(v) if tiebreak is None else np.nan_to_num(np.asarray(tiebreak[i], dtype=np.float64),
                                                                    nan=-np.inf)
        order = sorted(range(len(v)), key=lambda j: (-v[j], -t[j], j))   # best first; worst last, latest
        best, worst = order[0], order[-1]
        out.append(None if (v[best], t[best]) == (v[worst], t[worst]) else (best, worst))
    return out


# --------------------------------------------------------------------------- the loop
class RLRF4RecLoop:
    def __init__(self, cfg: RLRF4RecConfig, log=None):
        from recalign.data import RecDataset
        from recalign.data.util import DataError
        from recalign.rerank.kar import build_rerank_lists

        if cfg.data is None:
            raise DataError("--data is required: a dataset directory from `recalign data prepare`")
        self.cfg = cfg
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.out = Path(cfg.output_dir)
        self.ds = RecDataset.load(cfg.data)
        if self.ds.ratings is None:
            raise DataError(f"{cfg.data}: RLRF4Rec needs ratings (labels are rating >= 4)")
        self.train_l, self.valid_l, self.test_l, self.info = build_rerank_lists(
            self.ds, users=None, list_len=cfg.list_len, n_pos=cfg.n_pos, max_train_lists=cfg.max_train_lists,
            seed=cfg.seed)
        users = sorted(set(int(u) for u in self.test_l.users))
        if cfg.max_users:
            keep = set(users[:cfg.max_users])
            self.train_l, self.valid_l, self.test_l = (self._subset(x, keep) for x in
                                                       (self.train_l, self.valid_l, self.test_l))
            users = sorted(keep)
        self.users = users
        self.pos = {u: i for i, u in enumerate(users)}
        self.prompts = user_prompts(self.ds, users, self.info["knowledge_cut"], cfg.history_len)
        self._encoder = None

    @staticmethod
    def _subset(lists, keep: set):
        return lists.subset(np.array([int(u) in keep for u in lists.users], dtype=bool))

    @property
    def encoder(self):
        if self._encoder is None:
            from recalign.models.encoder import KnowledgeEncoder

            self._encoder = KnowledgeEncoder(self.cfg.encoder or self.cfg.model,
                                             cache_file=self.out / "encoder_cache.npz")
        return self._encoder

    # ----- generation
    def _generate(self, adapter: str | None, prompts, n: int, greedy: bool, seed: int) -> list[list[str]]:
        from recalign.eval.backends import HFBackend, Sampling

        be = HFBackend(self.cfg.model, adapter, batch_size=self.cfg.gen_batch_size)
        s = Sampling(self.cfg.max_new_tokens, seed=seed) if greedy else \
            Sampling(self.cfg.max_new_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p, seed=seed)
        flat = be.generate([p for p in prompts for _ in range(n)], s)
        return [flat[i * n:(i + 1) * n] for i in range(len(prompts))]

    def item_vectors(self) -> np.ndarray:
        path = self.out / "item_knowledge.jsonl"
        if path.is_file():
            texts = [json.loads(x)["text"] for x in path.read_text().splitlines()]
        else:
            if self.cfg.item_knowledge == "metadata":
                texts = item_metadata_texts(self.ds)
            else:
                texts = [""] + [g[0] for g in self._generate(self.cfg.adapter, item_prompts(self.ds), 1, True,
                                                              self.cfg.seed)]
            from recalign.data.util import atomic_write

            atomic_write(path, "".join(json.dumps({"item_idx": i, "text": t}) + "\n" for i, t in enumerate(texts)))
        return self.encoder.encode(texts)

    # ----- reranker
    def _kar_cfg(self, backbone: str):
        from recalign.rerank.config import KARConfig

        return KARConfig(backbone=backbone, epochs=self.cfg.kar_epochs, patience=self.cfg.kar_patience,
                         seed=self.cfg.seed)

    def _per_list(self, lists, user_vecs: np.ndarray | None) -> np.ndarray | None:
        return None if user_vecs is None else user_vecs[[self.pos[int(u)] for u in lists.users]]

    def train_eval(self, backbone: str, user_vecs, item_vecs) -> tuple[object, dict]:
        """A reranker trained with (or without: ``user_vecs=None``) knowledge, and its test metrics."""
        from recalign.rerank.kar import score_lists, train_reranker
        from recalign.rerank.metrics import rerank_metrics

        iv = item_vecs if user_vecs is not None else None
        model, _ = train_reranker(self.train_l, self.valid_l, self._kar_cfg(backbone),
                                  user_vecs=self._per_list(self.train_l, user_vecs), item_vecs=iv,
                                  valid_user_vecs=self._per_list(self.valid_l, user_vecs))
        scores = score_lists(model, self.test_l, user_vecs=self._per_list(self.test_l, user_vecs), item_vecs=iv)
        return model, rerank_metrics(scores, self.test_l.labels)

    def score_texts(self, scorer, cand_vecs: np.ndarray, item_vecs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[n_users, N] score_metric of each candidate on its user's validation list, and the
        tie-break: the softmax mass the reranker puts on the list's positives."""
        from recalign.rerank.kar import score_lists
        from recalign.rerank.metrics import rerank_metrics

        n_users, n = cand_vecs.shape[:2]
        vl = {int(u): i for i, u in enumerate(self.valid_l.users)}
        rep = self.valid_l.subset([vl[u] for u in self.users for _ in range(n)])
        scores = score_lists(scorer, rep, user_vecs=cand_vecs.reshape(n_users * n, -1), item_vecs=item_vecs)
        per = rerank_metrics(scores, rep.labels, ks=(self.cfg.k,), per_list=True)
        z = np.exp(scores - scores.max(1, keepdims=True))
        mass = (z * (rep.labels > 0)).sum(1) / z.sum(1)
        return np.asarray(per[self.cfg.score_metric]).reshape(n_users, n), mass.reshape(n_users, n)

    # ----- DPO
    def dpo(self, prev_adapter: str | None, rows: list[dict], work: Path) -> tuple[Path, list[dict]]:
        """(this round's whole adapter in ``work/adapter``, the DPO log history)."""
        import datasets
        from trl import DPOConfig, DPOTrainer

        from recalign.models.adapters import load_policy, stack_adapters
        from recalign.models.device import trainer_precision
        from recalign.trainers.common import lora_config

        from recalign.models.device import tune_cpu_training

        cfg = self.cfg
        tune_cpu_training()
        model, tok = load_policy(cfg.model, prev_adapter)
        tok.padding_side = "right"
        args = DPOConfig(output_dir=str(work / "dpo"), beta=cfg.beta, loss_type=[cfg.loss_type],
                         learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.per_device_train_batch_size,
                         gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                         num_train_epochs=cfg.num_train_epochs, max_steps=cfg.max_steps, max_length=cfg.max_length,
                         logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed,
                         gradient_checkpointing=False, disable_tqdm=False, **trainer_precision())
        trainer = DPOTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tok, peft_config=lora_config(cfg, model))
        trainer.train()
        new = work / "dpo_adapter"
        trainer.save_model(str(new))
        if prev_adapter:
            return stack_adapters(prev_adapter, new, work / "adapter"), trainer.state.log_history
        import shutil

        # dpo_adapter/ stays: this round's LoRA alone
        return Path(shutil.copytree(new, work / "adapter")), trainer.state.log_history

    # ----- rounds
    def run(self) -> Path:
        from recalign.data.util import atomic_dir, provenance, write_json

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        backbones = [b.strip() for b in cfg.backbones.split(",") if b.strip()]
        item_vecs = self.item_vectors()
        results: list[dict] = []
        adapter = cfg.adapter
        for r in range(cfg.rounds + 1):
            rdir = self.out / f"round-{r}"
            if (rdir / "metrics.json").is_file():
                res = json.loads((rdir / "metrics.json").read_text())
                diff = sorted(k for k, v in self._settings().items() if res.get("settings", {}).get(k) != v)
                if diff:
                    from recalign.data.util import DataError

                    raise DataError(f"{rdir} was made with other settings ({', '.join(diff)}); use another "
                                    "--output_dir or delete it to start over")
                self.log(f"[round {r}] done before, skipped")
                results.append(res)
                adapter = res.get("adapter") or adapter
                continue
            t0 = time.perf_counter()
            with atomic_dir(rdir, overwrite=True) as tmp:
                res = {"round": r, "users": len(self.users), "skipped_users": self.info.get("skipped_users", 0),
                       "settings": self._settings()}
                if r > 0:
                    prev_vecs = self._knowledge_vecs(self.out / f"round-{r - 1}")
                    scorer, _ = self.train_eval(backbones[0], prev_vecs, item_vecs)
                    self.log(f"[round {r}] sampling {cfg.samples} texts for {len(self.users)} users")
                    cands = self._generate(adapter, self.prompts, cfg.samples, False, cfg.seed + r)
                    cand_vecs = self.encoder.encode([t for c in cands for t in c]).reshape(len(self.users), cfg.samples, -1)
                    scores, mass = self.score_texts(scorer, cand_vecs, item_vecs)
                    pairs = select_pairs(scores, mass)
                    rows = [{"prompt": p, "chosen": [{"role": "assistant", "content": c[b]}],
                             "rejected": [{"role": "assistant", "content": c[w]}]}
                            for p, c, bw in zip(self.prompts, cands, pairs) if bw for b, w in [bw]]
                    with open(tmp / "pairs.jsonl", "w", encoding="utf-8") as f:
                        for u, c, s, tb, bw in zip(self.users, cands, scores, mass, pairs):
                            f.write(json.dumps({"user_idx": u, "texts": c, "scores": s.tolist(), "tiebreak": tb.tolist(),
                                                "chosen": bw[0] if bw else None,
                                                "rejected": bw[1] if bw else None}) + "\n")
                    res.update(pairs=len(rows), tied_users=sum(bw is None for bw in pairs),
                               empty_texts=sum(not t.strip() for c in cands for t in c),
                               candidate_score_mean=float(np.mean(scores)),
                               chosen_minus_rejected=float(np.mean([s[b] - s[w] for s, bw in zip(scores, pairs)
                                                                    if bw for b, w in [bw]])) if rows else 0.0)
                    if not rows:
                        raise RuntimeError(f"round {r}: every user's {cfg.samples} texts scored the same; "
                                           "nothing to learn (raise --samples or --temperature)")
                    self.log(f"[round {r}] DPO on {len(rows)} pairs")
                    adapter_dir, res["dpo_log"] = self.dpo(adapter, rows, tmp)
                    final_adapter = rdir / "adapter"
                    res["adapter"] = str(final_adapter)
                    gen_adapter = str(adapter_dir)
                else:
                    gen_adapter = adapter
                    res["adapter"] = adapter
                texts = [c[0] for c in self._generate(gen_adapter, self.prompts, 1, True, cfg.seed)]
                with open(tmp / "knowledge.jsonl", "w", encoding="utf-8") as f:
                    for u, t in zip(self.users, texts):
                        f.write(json.dumps({"user_idx": u, "text": t}) + "\n")
                vecs = self.encoder.encode(texts)
                res["metrics"] = {}
                for b in backbones:
                    if r == 0:
                        # item facts help on their own (extra item features): the "items only" row
                        # (zero user knowledge) is the baseline that isolates the user knowledge
                        res.setdefault("no_knowledge", {})[b] = self.train_eval(b, None, item_vecs)[1]
                        res.setdefault("items_only", {})[b] = self.train_eval(
                            b, np.zeros_like(vecs), item_vecs)[1]
                    res["metrics"][b] = self.train_eval(b, vecs, item_vecs)[1]
                res["empty_knowledge"] = sum(not t.strip() for t in texts)
                res["seconds"] = round(time.perf_counter() - t0, 1)
                write_json(tmp / "metrics.json", res)
            self.encoder.save()
            self.log(f"[round {r}] " + ", ".join(f"{b} NDCG@5 {m['NDCG@5']:.4f}" for b, m in res["metrics"].items()))
            results.append(res)
            adapter = res.get("adapter") or adapter
        report = write_rlrf4rec_report(self.out, results, backbones)
        write_json(self.out / "card.json", provenance(
            "trainers.rlrf4rec", asdict(cfg), seed=cfg.seed, inputs={"sequences": self.ds.fingerprint()},
            users=len(self.users), rounds=[{k: v for k, v in r_.items() if k != "dpo_log"} for r_ in results]))
        return report

    def _settings(self) -> dict:
        """What a finished round depends on (all but the round count and where it is written)."""
        return {k: v for k, v in asdict(self.cfg).items() if k not in ("rounds", "output_dir")}

    def _knowledge_vecs(self, rdir: Path) -> np.ndarray:
        rows = [json.loads(x) for x in (rdir / "knowledge.jsonl").read_text().splitlines()]
        by_user = {int(x["user_idx"]): x["text"] for x in rows}
        return self.encoder.encode([by_user.get(u, "") for u in self.users])


def run(cfg: RLRF4RecConfig) -> Path:
    return RLRF4RecLoop(cfg).run()


def main(argv: list[str] | None = None) -> int:
    from . import cli_main

    return cli_main(RLRF4RecConfig, run, argv, what="the RLRF4Rec rounds")


if __name__ == "__main__":
    from recalign.errors import run_guarded

    sys.exit(run_guarded(main, prog="recalign.trainers.rlrf4rec"))
