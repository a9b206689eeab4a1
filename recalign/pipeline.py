"""``recalign pipeline --recipe R [--profile quick]``: every stage in order, resumable.

prepare -> teacher -> build -> eval base -> sft -> eval sft -> [rl method -> eval it]... -> report.
RL methods (``rl:`` in the recipe, in order): ppo, grpo, rloo (each starts from the SFT adapter)
and asft (A-SFT on logged ratings, also from the SFT adapter). Each stage writes
its own directory under the recipe's ``out`` atomically, plus ``<dir>.stage.json`` with a
hash of the settings that made it: a stage whose output exists with the same hash is
skipped, so an interrupted run continues where it stopped (SFT also resumes from its last
checkpoint) and a changed setting redoes that stage and everything after it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from recalign.data.util import DataError, atomic_write, suggest

KEYS = {"out", "seed", "dataset", "prepare", "teacher", "build", "model", "sft", "eval", "profiles",
        "input", "rl", "extends", "protocol"}
RL_METHODS = ("ppo", "grpo", "rloo", "asft")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _yaml_mapping(path: Path, what: str) -> dict:
    """A YAML file that must hold a mapping; ``what`` completes "a ... is a mapping of ..."."""
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: {what}")
    return loaded


def _read(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise DataError(f"--recipe {path}: file not found (recipes live in recipes/)")
    recipe = _yaml_mapping(path, "a recipe is a mapping of keys (out, model, sft, ...)")
    unknown = sorted(set(recipe) - KEYS)
    if unknown:
        raise DataError(f"{path}: unknown key {unknown[0]!r}{suggest(unknown[0], KEYS)}")
    bad = sorted(set(recipe.get("rl") or {}) - set(RL_METHODS))
    if bad:
        raise DataError(f"{path}: rl method {bad[0]!r} unknown{suggest(bad[0], RL_METHODS)}; "
                        f"methods: {', '.join(RL_METHODS)}")
    _resolve_configs(recipe, path)
    parent = recipe.pop("extends", None)
    if parent:
        # a recipe may build on another in the same folder; its keys override the parent's,
        # and its rl: replaces the parent's (a GRPO recipe runs GRPO, not PPO as well)
        ppath = path.parent / parent
        if ppath.resolve() in seen:
            raise DataError(f"{path}: extends {parent} makes a cycle")
        base = _read(ppath, seen + (path.resolve(),))
        if "rl" in recipe:
            base.pop("rl", None)
        recipe = _merge(base, recipe)
    return recipe


# Keys of a trainer config (recipes/<model>/<method>/config_<dataset>.yaml) that wire a standalone
# run to its inputs and outputs; inside a pipeline the stage sets them itself.
WIRING = {"model", "data", "adapter", "output_dir", "seed", "resume"}


def _resolve_configs(recipe: dict, path: Path) -> None:
    """A pipeline section ``sft:`` or ``rl.<method>:`` may start from a trainer config,
    ``{config: smollm2-135m/ppo/config_ml100k.yaml, steps: 20}``: the file's values (path
    relative to this recipe, run wiring dropped), then the section's own keys on top. One
    file holds a method's settings for a model, whether it runs alone or in a pipeline."""
    sections = [("sft", recipe.get("sft"))] + [(f"rl.{m}", v) for m, v in (recipe.get("rl") or {}).items()]
    for where, sec in sections:
        if not isinstance(sec, dict) or "config" not in sec:
            continue
        ref = path.parent / str(sec["config"])
        if not ref.is_file():
            raise DataError(f"{path}: {where}.config: {sec['config']} not found (relative to {path.parent}; "
                            f"trainer configs live in recipes/<model>/<method>/)")
        base = _yaml_mapping(ref, "a trainer config is a mapping of config fields")
        merged = {k: v for k, v in base.items() if k not in WIRING}
        merged.update({k: v for k, v in sec.items() if k != "config"})
        if where == "sft":
            recipe["sft"] = merged
        else:
            recipe["rl"][where[3:]] = merged


def load_recipe(path: str | Path, profile: str | None = None, overrides: dict | None = None) -> dict:
    path = Path(path)
    recipe = _read(path)
    profiles = recipe.pop("profiles", {}) or {}
    if profile:
        if profile not in profiles:
            raise DataError(f"{path}: no profile {profile!r}{suggest(profile, profiles)}; "
                            f"profiles: {', '.join(profiles) or 'none'}")
        prof = copy.deepcopy(profiles[profile])
        # a profile tunes the RL methods the recipe runs; it does not add others
        if "rl" in prof:
            prof["rl"] = {m: v for m, v in (prof["rl"] or {}).items() if m in (recipe.get("rl") or {})}
        recipe = _merge(recipe, prof)
    recipe = _merge(recipe, overrides or {})
    recipe.setdefault("seed", 42)
    recipe.setdefault("out", f"runs/{path.stem}" + (f"-{profile}" if profile else ""))
    return recipe


# Keys a section may carry that the pipeline itself consumes (not the stage's dataclass).
_PIPELINE_KEYS = {"build": {"tasks", "task_dir"}, "eval": {"grounded", "beam", "grounded_tasks"}}
_BASIC = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
          "NoneType": (type(None),), "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}


def _type_text(annotation: Any) -> str:
    """A field annotation as written (``int | None``), whether a string or resolved."""
    text = annotation if isinstance(annotation, str) else \
        annotation.__name__ if isinstance(annotation, type) else str(annotation)
    return text.replace("typing.", "")


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a field annotation of simple types (``int | None``, ``str``,
    ``list[str]`` ...); annotations it cannot read (Literal, unions of classes) accept anything."""
    text = _type_text(annotation).replace("Optional[", "None | ").replace("Union[", "")
    allowed: tuple = ()
    for part in text.replace(",", "|").split("|"):
        base = part.strip().rstrip("]").split("[")[0].strip()
        if base not in _BASIC:
            return True
        allowed += _BASIC[base]
    if isinstance(value, bool) and bool not in allowed:
        return False                       # YAML true is not an int here
    return isinstance(value, allowed)


def _check_section(cls, values: Any, where: str, skip: set = frozenset()) -> None:
    import dataclasses

    if values is None:
        return
    if not isinstance(values, dict):
        raise DataError(f"recipe {where}: expected a mapping of {cls.__name__} fields, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    types = _declared_types(cls)
    for key, value in values.items():
        if key in skip:
            continue
        if key not in fields:
            raise DataError(f"recipe {where}.{key}: unknown key{suggest(key, fields)}; {where} takes "
                            f"{cls.__name__} fields")
        declared = types.get(key, fields[key].type)
        if value is not None and not _type_ok(value, declared):
            raise DataError(f"recipe {where}.{key}: {value!r} does not fit {_type_text(declared)}")


def _declared_types(cls) -> dict:
    """Field annotations as the classes declare them. ``field.type`` is not reliable:
    transformers' HfArgumentParser rewrites it in place (``int | str | None`` becomes ``str``)
    once any parser has been built over the class in this process."""
    out: dict = {}
    for klass in reversed(cls.__mro__):
        out.update(klass.__dict__.get("__annotations__", {}))
    return out


def validate_recipe(r: dict) -> None:
    """Check every section against its stage's dataclass (names, types, and the torch-free
    configs' own rules) before any stage runs: a typo fails in a second, not after the
    teacher has trained."""
    from recalign.data.prepare import PrepareOptions
    from recalign.eval.run import EvalConfig
    from recalign.tasks.builder import BuildConfig
    from recalign.teacher.config import TeacherTrainConfig

    unknown = sorted(set(r) - KEYS)
    if unknown:
        raise DataError(f"recipe: unknown key {unknown[0]!r}{suggest(unknown[0], KEYS)}")
    for name, cls in (("prepare", PrepareOptions), ("teacher", TeacherTrainConfig), ("build", BuildConfig),
                      ("eval", EvalConfig)):
        _check_section(cls, r.get(name), name, _PIPELINE_KEYS.get(name, set()))
    try:
        TeacherTrainConfig(**{"seed": r.get("seed", 42), **(r.get("teacher") or {})})
    except ValueError as e:
        raise DataError(f"recipe teacher: {e}") from None
    ev = r.get("eval") or {}
    grounded = ev.get("grounded", [False])
    bad = [g for g in (grounded if isinstance(grounded, list) else [grounded]) if g not in (False, True, "beam")]
    if bad:
        raise DataError(f"recipe eval.grounded: {bad[0]!r} is not one of false, true, beam")
    if "tasks" in (r.get("build") or {}) and not str(r["build"]["tasks"]).strip():
        raise DataError("recipe build.tasks: empty; name at least one task, e.g. I0,I1,I2,I3")
    rl = r.get("rl") or {}
    bad = sorted(set(rl) - set(RL_METHODS))
    if bad:
        raise DataError(f"recipe rl: method {bad[0]!r} unknown{suggest(bad[0], RL_METHODS)}; "
                        f"methods: {', '.join(RL_METHODS)}")
    if r.get("sft") is not None or rl:
        from recalign.trainers.sft import RecSFTConfig

        _check_section(RecSFTConfig, r.get("sft"), "sft")
    bf16 = [w for w, sec in [("sft", r.get("sft"))] + [(f"rl.{m}", s) for m, s in rl.items()]
            if (sec or {}).get("cpu_bf16")]
    if bf16:
        import torch

        if not (torch.cuda.is_available() or torch.cpu._is_avx512_bf16_supported()
                or torch.cpu._is_amx_tile_supported()):
            raise DataError(f"recipe {bf16[0]}.cpu_bf16: this CPU has neither AVX512-BF16 nor AMX, so bf16 "
                            f"would be emulated (slower than fp32); add --set {bf16[0]}.cpu_bf16=false")
    for method, settings in rl.items():
        if method == "ppo":
            from recalign.trainers.ppo import RecPPOConfig as cls
        elif method in ("grpo", "rloo"):
            from recalign.trainers.grpo import CONFIGS

            cls = CONFIGS[method]
        else:
            from recalign.trainers.asft import RecASFTConfig as cls
        _check_section(cls, settings, f"rl.{method}")


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Pipeline:
    def __init__(self, recipe: dict, log: Callable[[str], None] = print):
        self.r, self.log = recipe, log
        self.out = Path(recipe["out"])
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self._upstream = ""

    def stage(self, name: str, settings: dict, fn: Callable[[Path], Any]) -> Path:
        """Run ``fn(out_dir)`` unless its output exists with the same settings (and upstream)."""
        target = self.out / name
        marker = self.out / f"{name}.stage.json"
        key = _hash({"settings": settings, "upstream": self._upstream})
        if target.is_dir() and marker.is_file() and json.loads(marker.read_text()).get("key") == key:
            self.log(f"[{name}] up to date, skipped")
            self.skipped.append(name)
        else:
            t0 = time.perf_counter()
            self.log(f"[{name}] running")
            fn(target)
            from recalign.models.device import release_cpu_memory

            release_cpu_memory()        # a training stage's heap would otherwise stay held by evals
            atomic_write(marker, json.dumps({"key": key, "settings": settings,
                                             "seconds": round(time.perf_counter() - t0, 1)}, default=str))
            self.ran.append(name)
            self.log(f"[{name}] done in {time.perf_counter() - t0:.0f} s")
        self._upstream = key
        return target

    def run(self) -> Path:
        from recalign.data import RecDataset
        from recalign.data.prepare import PrepareOptions, prepare_dataset
        from recalign.eval.report import write_report
        from recalign.eval.run import EvalConfig, run_eval
        from recalign.tasks.builder import BuildConfig, build_dataset
        from recalign.teacher.config import TeacherTrainConfig
        from recalign.teacher.train import save_teacher, train_teacher

        r, seed = self.r, self.r["seed"]
        validate_recipe(r)
        if r.get("protocol"):
            from recalign.rewards.protocol import get_protocol

            get_protocol(r["protocol"])     # an unknown name fails here, before any stage runs
        prep = {"dataset": r.get("dataset", "ml-100k"), **(r.get("prepare") or {})}
        data = self.stage("data", prep, lambda out: prepare_dataset(
            out, PrepareOptions(**prep), input_dir=r.get("input"), overwrite=True))

        tcfg = TeacherTrainConfig(**{"seed": seed, **(r.get("teacher") or {})})

        def teacher_fn(out):
            ds = RecDataset.load(data)
            model, metrics = train_teacher(ds, tcfg, log=lambda s: None)
            save_teacher(out, model, metrics, tcfg, ds, overwrite=True)
        teacher = self.stage("teacher", tcfg.__dict__, teacher_fn)

        protocol = r.get("protocol")        # recipe-wide rules (rewards/protocol.py, the task files' protocols:)
        b = {"tasks": "I0,I1,I2,I3", **(r.get("build") or {})}
        tasks = b.pop("tasks")
        task_dir = b.pop("task_dir", None)      # a folder of the user's own task YAMLs
        if protocol and protocol != "recalign":  # the task files' protocol settings (I2>= at 30 %, ...)
            b.setdefault("protocol", protocol)
        settings = {"tasks": tasks, **b, "seed": seed}
        if task_dir:                            # their content, so that an edited task rebuilds
            settings["task_dir"] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16]
                                    for f in sorted(Path(task_dir).glob("*.yaml"))}
        inst = self.stage("inst", settings, lambda out: build_dataset(
            data, teacher, tasks, out, BuildConfig(seed=seed, **b), task_dir=task_dir, overwrite=True))
        inst_key = self._upstream

        ev = {"tasks": "I0,I1,I2", "limit": 100, "max_new_tokens": 256, "batch_size": 16, "backend": "auto",
              **(r.get("eval") or {})}
        if protocol:
            ev["protocol"] = protocol
        grounded = ev.pop("grounded", [False])
        grounded = grounded if isinstance(grounded, list) else [grounded]     # checked by validate_recipe
        beam_width = ev.pop("beam", 10)
        grounded_tasks = ev.pop("grounded_tasks", None)     # e.g. only I0 with grounding, to save time
        model = r.get("model", "smollm2-135m-instruct")
        runs = []

        def evaluate(name: str, adapter: str | None, g):
            mode = "beam" if g == "beam" else "grounded" if g else "free"
            label = name + ("" if mode == "free" else f"-{mode}")
            settings = {**ev, "model": model, "adapter": adapter, "grounded": bool(g)}
            if g != grounded[0]:     # retention measures the model, not the decoding: once per model
                for k in ("mmlu", "gsm8k", "retention_limit"):
                    settings.pop(k, None)
            if g:
                settings["grounded_strict"] = ev.get("grounded_strict", True)
                if grounded_tasks:
                    settings["tasks"] = grounded_tasks
            if mode == "beam":
                settings["beam"] = beam_width
            cfg = {k: v for k, v in settings.items() if k not in ("model", "adapter", "grounded")}
            out = self.stage(f"eval-{label}", settings,
                             lambda out: run_eval(EvalConfig(data=str(inst), out=str(out), model=model,
                                                             adapter=adapter, grounded=bool(g), seed=seed,
                                                             name=name, **cfg), overwrite=True))
            runs.append(json.loads((out / "metrics.json").read_text()))

        for g in grounded:
            self._upstream = inst_key
            evaluate("base", None, g)

        sft_cfg = {"model": model, "seed": seed, **(r.get("sft") or {})}
        self._upstream = inst_key

        def sft_train(work: Path):
            from recalign.trainers.sft import RecSFTConfig, train

            train(RecSFTConfig(data=str(inst), output_dir=str(work), resume=True, **sft_cfg))
        sft = self.stage("sft", sft_cfg, lambda out: _resumable(out, sft_cfg, sft_train))
        sft_key = self._upstream
        curves, validation = {}, {}
        if (sft / "card.json").is_file():        # the SFT loss curve (and valid loss with eval_samples)
            curves["sft"] = json.loads((sft / "card.json").read_text()).get("log_history", [])
        for g in grounded:
            self._upstream = sft_key
            evaluate("sft", str(sft), g)

        for method, settings in (r.get("rl") or {}).items():
            cfg = {"model": model, "seed": seed, "adapter": str(sft), "data": str(inst), **(settings or {})}
            if protocol and method in ("ppo", "grpo", "rloo"):
                cfg.setdefault("protocol", protocol)
            self._upstream = sft_key
            out = self.stage(method, cfg, lambda out, m=method, c=cfg: _resumable(
                out, c, lambda work: _train_rl(m, c, work)))
            rl_key = self._upstream
            card = out / "card.json"
            if card.is_file():
                card_json = json.loads(card.read_text())
                curves[method] = card_json.get("log_history", [])
                validation[method] = card_json.get("validation")
            for g in grounded:
                self._upstream = rl_key
                evaluate(method, str(out), g)

        report_dir = self.out / "report"
        report_dir.mkdir(parents=True, exist_ok=True)
        write_report(report_dir, runs, curves=curves, validation=validation)
        atomic_write(self.out / "pipeline.json", json.dumps(
            {"recipe": r, "ran": self.ran, "skipped": self.skipped}, indent=2, default=str))
        self.log(f"report: {report_dir / 'report.md'}")
        return report_dir


def _resumable(out: Path, settings: dict, train: Callable[[Path], Any]) -> None:
    """Train into ``<out>.work`` (checkpoints there survive an interruption and are resumed,
    but only when they were made with the same settings), then rename it to ``out``."""
    import shutil

    work = out.with_name(out.name + ".work")
    stamp = work / "recalign_settings.json"
    want = json.dumps(settings, sort_keys=True, default=str)
    if work.exists() and (not stamp.is_file() or stamp.read_text() != want):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(want)
    train(work)
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)


def _train_rl(method: str, cfg: dict, work: Path) -> None:
    if method == "ppo":
        from recalign.trainers.ppo import RecPPOConfig, train

        train(RecPPOConfig(output_dir=str(work), resume=True, **cfg))
    elif method in ("grpo", "rloo"):
        from recalign.trainers.grpo import CONFIGS, train

        train(CONFIGS[method](output_dir=str(work), resume=True, **cfg), method)
    else:
        from recalign.trainers.asft import RecASFTConfig, train

        train(RecASFTConfig(output_dir=str(work), resume=True, **cfg))


def main_pipeline(recipe: str, profile: str | None = None, overrides: dict | None = None) -> Path:
    r = load_recipe(recipe, profile, overrides)
    return Pipeline(r, log=lambda s: print(s, file=sys.stderr, flush=True)).run()
