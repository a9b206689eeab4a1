"""recalign: instruction data and alignment harness for LLM recommenders.

Imports of the stages stay inside the handlers so that ``recalign --help`` starts instantly.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


class _Formatter(argparse.HelpFormatter):
    def _format_action_invocation(self, action):
        # the underscore twins are not listed: one spelling per flag keeps --help readable
        if action.option_strings and len(action.option_strings) > 1:
            shown = [s for s in action.option_strings if s in ("--output_dir", "--out") or
                     ("_" not in s and s != "--output-dir")]
            action = argparse.Action(shown or action.option_strings[:1], action.dest, nargs=action.nargs,
                                     metavar=action.metavar, choices=action.choices)
        return super()._format_action_invocation(action)


class _Parser(argparse.ArgumentParser):
    """One flag dialect for every command: each long flag answers to both spellings,
    ``--max-users`` and ``--max_users`` (the trainers' TRL flags take both too), and an output
    directory is ``--output_dir`` everywhere (``--out`` stays as its short form)."""

    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Formatter)
        super().__init__(*a, **kw)

    def add_argument(self, *names, **kw):
        spelled = ["--output_dir", *names, "--output-dir"] if "--out" in names else list(names)
        for n in names:
            if n.startswith("--") and "-" in n[2:]:
                spelled.append("--" + n[2:].replace("-", "_"))
        if "--out" in names:
            kw.setdefault("dest", "out")
        return super().add_argument(*dict.fromkeys(spelled), **kw)


def _add_dataclass_args(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One ``--flag`` per dataclass field, typed from its default, help from metadata."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        # argparse %-formats help: a literal % (a Jinja default template has them) must be doubled
        help_ = (f.metadata.get("help", "") + f" (default: {default})").replace("%", "%%")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            typ = type(default) if default is not None else (float if "float" in str(f.type) else int)
            p.add_argument(flag, type=typ, default=None, help=help_)


def _dataclass_from(cls, args: argparse.Namespace, config: str | None = None, **fixed):
    values = {}
    if config:
        import yaml

        loaded = yaml.safe_load(Path(config).read_text()) or {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(loaded) - names)
        if unknown:
            from recalign.data.util import DataError, suggest

            raise DataError(f"{config}: unknown key {unknown[0]!r}{suggest(unknown[0], names)}")
        values.update(loaded)
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    values.update(fixed)
    try:
        return cls(**values)
    except ValueError as e:      # the config's own checks: one line, not a traceback
        from recalign.data.util import DataError

        raise DataError(f"{config + ': ' if config else ''}{e}") from None


# ----------------------------------------------------------------------------- handlers


def cmd_assets(args) -> int:
    from recalign.data import assets

    if args.action == "list":
        for name, a in assets.ASSETS.items():
            print(f"{name:24s} {a.pin:22s} {a.licence[:40]:40s} {assets.status(name)}")
        return 0
    if not args.name:
        raise SystemExit("recalign assets fetch: name one asset: " + ", ".join(assets.ASSETS))
    for name in args.name:
        print(assets.asset_path(name))
    return 0


def cmd_data_prepare(args) -> int:
    from recalign.data.prepare import PrepareOptions, prepare_dataset

    opts = PrepareOptions(dataset=args.dataset, min_rating=args.min_rating, user_core=args.user_core,
                          item_core=args.item_core, category_depth=args.category_depth,
                          require_categories=args.require_categories, columns=args.columns,
                          item_columns=args.item_columns, category_sep=args.category_sep)
    files = {k: getattr(args, k) for k in ("interactions", "items", "users") if getattr(args, k)}
    out = prepare_dataset(args.out, opts, input_dir=args.input, overwrite=args.overwrite, **files)
    card = json.loads((out / "card.json").read_text())
    c = card["counts"]
    print(f"wrote {out}: {c['users']} users, {c['items']} items, {c['interactions']} interactions, "
          f"{c['categories']} categories (sequence length {c['min_sequence']}-{c['max_sequence']}, "
          f"mean {c['mean_sequence']})")
    return 0


def cmd_data_build(args) -> int:
    from recalign.tasks.builder import BuildConfig, build_dataset

    cfg = BuildConfig(epochs=args.epochs, seed=args.seed, sharegpt=args.sharegpt, chat_ratio=args.chat_ratio,
                      reference=args.reference, max_users=args.max_users, templates=args.templates,
                      rl_split=args.rl_split, protocol=args.protocol)
    out = build_dataset(args.data, args.teacher, args.tasks, args.out, cfg, task_dir=args.task_dir,
                        overwrite=args.overwrite)
    card = json.loads((out / "card.json").read_text())
    for split, counts in card["counts"].items():
        if counts:
            print(f"{split:5s} " + ", ".join(f"{t}: {n}" for t, n in counts.items()))
    print(f"wrote {out} ({card['rows_total']} rows, {card['rows_per_second']:.0f} rows/s)")
    for note in card["notes"]:
        print(f"note: {note}")
    return 0


def cmd_tasks_list(args) -> int:
    from recalign.tasks.spec import load_specs

    specs = load_specs(args.task_dir)
    print("| task | version | builder | rule | reward | splits | metrics | file |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sorted(specs):
        sp = specs[name]
        print(f"| {name} | {sp.version} | {sp.builder} | {sp.rule or '-'} | {sp.reward} | {','.join(sp.splits)} | "
              f"{', '.join(sp.metrics) or '-'} | {Path(sp.path).name} |")
    return 0


def cmd_tasks_validate(args) -> int:
    """Every task file in DIR parses, names known rules, templates that exist and, with
    --data, sampling ranges the catalog can meet."""
    from recalign.data.util import DataError
    from recalign.tasks.spec import BUILTIN, parse_spec, validate_templates

    folder = Path(args.dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory of task YAMLs")
    files = [f for f in sorted(folder.glob("*.yaml")) if not f.name.startswith("_")]
    if not files:
        raise DataError(f"{folder}: no task files (*.yaml; files starting with _ are bases)")
    catalog = None
    if args.data:
        from recalign.data import RecDataset

        catalog = RecDataset.load(args.data).catalog
    for f in files:
        spec = parse_spec(f)
        validate_templates(spec, args.templates)
        if catalog is not None:
            n_items = len(catalog.titles) - 1
            hi = max(spec.item_count_train[1], spec.item_count_eval)
            if hi > n_items:
                raise DataError(f"{f}: key 'item_count_train'/'item_count_eval': {hi} items asked, the catalog of "
                                f"{args.data} has {n_items}")
            if spec.builder in ("category_control", "proportion_control"):
                sizes = [int(catalog.category_mask(c).sum()) for c in catalog.categories]
                if not any(sz >= spec.min_category_size for sz in sizes):
                    raise DataError(f"{f}: key 'min_category_size': {spec.min_category_size}, but the largest "
                                    f"category of {args.data} has {max(sizes, default=0)} items")
        print(f"ok  {f.name}: {spec.task} (rule {spec.rule or '-'}, builder {spec.builder})"
              + (" [overrides a built-in task]" if (Path(BUILTIN) / f.name).exists() else ""))
    return 0


def cmd_data_show(args) -> int:
    from recalign.tasks.spec import load_specs, resolve_tasks

    wanted = {s.task for s in resolve_tasks(args.task, load_specs(args.task_dir))}
    path = Path(args.data) / f"{args.split}.jsonl"
    if not path.is_file():
        from recalign.data.util import DataError

        raise DataError(f"{path}: not found; build instruction data with `recalign data build --out {args.data}`")
    tok = None
    if args.model:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model)
    shown = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["task"] not in wanted:
                continue
            print(f"===== {row['task']} (user {row['user_id']}, target {row['target']}, "
                  f"category {row['category']}, n {row['n']}) =====")
            if tok is not None:
                print(tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=False))
            else:
                for m in row["prompt"] + row["completion"]:
                    print(f"[{m['role']}]\n{m['content']}")
            shown += 1
            if shown >= args.n:
                break
    if not shown:
        print(f"no {args.split} rows for {', '.join(sorted(wanted))} in {path}")
    return 0


def cmd_teacher_train(args) -> int:
    from recalign.data import RecDataset
    from recalign.data.util import check_out
    from recalign.teacher.config import TeacherTrainConfig
    from recalign.teacher.train import save_teacher, summary_table, train_teacher

    cfg = _dataclass_from(TeacherTrainConfig, args, args.config)
    ds = RecDataset.load(args.data)
    check_out(args.out, args.overwrite, [args.data])     # before minutes of training
    print(f"training the {cfg.item_repr} teacher on {args.data}: {ds.n_users} users, {ds.n_items} items",
          file=sys.stderr)
    model, metrics = train_teacher(ds, cfg, log=lambda s: print(s, file=sys.stderr))
    save_teacher(args.out, model, metrics, cfg, ds, overwrite=args.overwrite)
    print(f"wrote {args.out} (best epoch {metrics['best_epoch']}, {metrics['train_time_s']} s)")
    print(summary_table(metrics))
    return 0


def cmd_teacher_coldstart(args) -> int:
    from recalign.data import DataError, RecDataset
    from recalign.data.util import check_out
    from recalign.teacher.coldstart import report_md, run_coldstart, write_coldstart
    from recalign.teacher.config import ITEM_REPRS, TeacherTrainConfig

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in ITEM_REPRS]
    if bad or not variants:
        raise DataError(f"--variants {args.variants}: choose from {', '.join(ITEM_REPRS)} (comma-separated)")
    cfg = _dataclass_from(TeacherTrainConfig, args, args.config)
    ds = RecDataset.load(args.data)
    check_out(args.out, args.overwrite, [args.data])
    res = run_coldstart(ds, cfg, variants, frac=args.new_items, max_rows=args.max_rows,
                        log=lambda s: print(s, file=sys.stderr), loss=args.loss or "auto")
    write_coldstart(args.out, res, cfg, ds, overwrite=args.overwrite)
    print(report_md(res))
    print(f"wrote {args.out} (report.md, metrics.json, buckets.png)")
    return 0


def cmd_teacher_eval(args) -> int:
    from recalign.data import RecDataset
    from recalign.teacher import Teacher
    from recalign.teacher.train import evaluate

    ds = RecDataset.load(args.data)
    t = Teacher.load(args.teacher, data=ds)
    res = {conv: evaluate(t.model, ds, args.split, conv == "masked", window=args.window)
           for conv in ("masked", "unmasked")}
    print(json.dumps({"split": args.split, "window": args.window, **res}, indent=2))
    return 0


def cmd_eval(args) -> int:
    from recalign.eval.run import EvalConfig, run_eval

    cfg = EvalConfig(data=args.data, out=args.out, model=args.model, adapter=args.adapter, tasks=args.tasks,
                     split=args.split, limit=args.limit, grounded=args.grounded or args.grounded_loose,
                     grounded_strict=not args.grounded_loose, backend=args.backend,
                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, teacher=args.teacher,
                     mmlu=args.mmlu, gsm8k=args.gsm8k, retention_limit=args.retention_limit, seed=args.seed,
                     name=args.name, beam=args.beam, beam_length_penalty=args.beam_length_penalty,
                     protocol=args.protocol, parser=args.parser,
                     rescore=args.rescore, dtype=args.dtype, gpu_memory_utilization=args.gpu_memory_utilization,
                     tensor_parallel_size=args.tensor_parallel_size)
    out = run_eval(cfg, overwrite=args.overwrite)
    m = json.loads((out / "metrics.json").read_text())
    for task, v in m["exact"].items():
        if task != "all":
            print(f"{task:6s} n={v['n_samples']:5d} HR@10={v.get('HR', float('nan')):.4f} "
                  f"NDCG@10={v.get('NDCG', float('nan')):.4f} NonExist={v.get('NonExist_rate', 0):.3f}")
    print(f"wrote {out}/report.md")
    return 0


def cmd_pipeline(args) -> int:
    from recalign.pipeline import main_pipeline

    overrides = _sets(args.set, "model=tiny-random", nested=True)
    report = main_pipeline(args.recipe, args.profile, overrides)
    print(f"wrote {report / 'report.md'}")
    return 0


def _sets(items, example: str, nested: bool = False) -> dict:
    """``--set KEY=VALUE`` overrides (values parsed as YAML); with ``nested`` a dotted key
    ``a.b=1`` becomes ``{"a": {"b": 1}}``."""
    import yaml

    from recalign.data.util import DataError

    out: dict = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise DataError(f"--set {item!r}: expected KEY=VALUE, e.g. --set {example}")
        node, parts = out, (key.split(".") if nested else [key])
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


# method -> (module under recalign.trainers, extra leading flags)
TRAINERS = {"sft": ("sft", []), "ppo": ("ppo", []), "grpo": ("grpo", ["--method", "grpo"]),
            "rloo": ("grpo", ["--method", "rloo"]), "asft": ("asft", []), "dpo-loop": ("rlrf4rec", [])}


def cmd_train(args) -> int:
    """``recalign train sft --data ... --output_dir ...`` = ``python -m recalign.trainers.sft ...``."""
    import importlib

    module, lead = TRAINERS[args.method]
    rest = list(args.args)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    main = importlib.import_module(f"recalign.trainers.{module}").main
    sys.argv = [f"recalign train {args.method}", *lead, *rest]     # TrlParser's usage line and --help
    return main([*lead, *rest])


def cmd_rlrf4rec(args) -> int:
    import yaml

    from recalign.data.util import DataError, suggest
    from recalign.trainers.rlrf4rec import RLRF4RecConfig, run

    path = Path(args.recipe)
    if not path.is_file():
        raise DataError(f"--recipe {path}: file not found (recipes live in recipes/)")
    values = {**(yaml.safe_load(path.read_text()) or {}), **_sets(args.set, "rounds=1")}
    names = {f.name for f in dataclasses.fields(RLRF4RecConfig)}
    for k in values:
        if k not in names:
            raise DataError(f"{path}: unknown key {k!r}{suggest(k, names)}")
    try:
        cfg = RLRF4RecConfig(**values)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None
    print(f"wrote {run(cfg)}")
    return 0


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="recalign", description=__doc__.split("\n")[0]
                + ". Flags take either spelling (--max-users or --max_users).")
    p.add_argument("--version", action="version", version="recalign 0.1.0")
    p.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assets", help="list or fetch the embedded default assets")
    a.add_argument("action", choices=["list", "fetch"])
    a.add_argument("name", nargs="*", help="asset name(s) for fetch: ml-100k, smollm2-135m-instruct")
    a.set_defaults(func=cmd_assets)

    d = sub.add_parser("data", help="prepare interaction logs, build and show instruction datasets")
    dsub = d.add_subparsers(dest="data_command", required=True)
    dp = dsub.add_parser("prepare", help="read a dataset, filter, split and write a dataset directory")
    dp.add_argument("--dataset", default="ml-100k",
                    help="ml-100k (default; the embedded asset when --input is not given), ml-1m, "
                         "amazon (2014/2018), amazon2023, steam, movielens (CSV releases), generic")
    dp.add_argument("--input", help="directory with the dataset's files")
    dp.add_argument("--interactions", help="interactions/reviews file (overrides discovery)")
    dp.add_argument("--items", help="items/meta file (overrides discovery)")
    dp.add_argument("--users", help="users file (optional)")
    dp.add_argument("--columns", help="generic: the interaction file's column names, e.g. "
                                      "user=userId,item=movieId,time=timestamp,rating=rating")
    dp.add_argument("--item-columns", help="generic: the item file's column names, e.g. "
                                           "item=movieId,title=title,categories=genres")
    dp.add_argument("--category-sep", default="|",
                    help="generic: separator in a category string ('|' = one path A|B|C; another = tags)")
    dp.add_argument("--out", required=True, help="dataset directory to write")
    dp.add_argument("--min-rating", type=float, help="keep interactions with rating >= this")
    dp.add_argument("--user-core", type=int, default=0, help="iterative k-core: min items per user")
    dp.add_argument("--item-core", type=int, default=0, help="iterative k-core: min users per item")
    dp.add_argument("--category-depth", type=int, help="keep at most this many category levels")
    dp.add_argument("--require-categories", action=argparse.BooleanOptionalAction, default=None,
                    help="drop items without a category (default: yes for amazon/steam, no otherwise)")
    dp.add_argument("--overwrite", action="store_true")
    dp.set_defaults(func=cmd_data_prepare)
    db = dsub.add_parser("build", help="render teacher-labelled instruction datasets (I0-I4)")
    db.add_argument("--data", required=True, help="dataset directory from `recalign data prepare`")
    db.add_argument("--teacher", required=True, help="teacher directory from `recalign teacher train`")
    db.add_argument("--tasks", default="I0,I1,I2,I3,I4",
                    help="comma-separated tasks or groups: I0, I1 (= I1+,I1-), I2 (= I2<=,I2>=,I2~), "
                         "I3 (= I3,I3-QA), I4")
    db.add_argument("--out", required=True)
    db.add_argument("--sharegpt", help="ShareGPT JSON/JSONL for I4 (I4 is skipped without it)")
    db.add_argument("--chat-ratio", type=float, help="I4 rows per recommendation row (spec default 0.1)")
    db.add_argument("--epochs", type=int, default=1, help="train rows are re-drawn per epoch")
    db.add_argument("--seed", type=int, default=42)
    db.add_argument("--reference", help="JSONL {user_id, items} of the model's own I0 top-10, for the "
                                        "test-time category rules (default: the teacher's top-10)")
    db.add_argument("--max-users", type=int, help="only the first N users (quick runs)")
    db.add_argument("--templates", help="a folder of your own .jinja templates (rendered sandboxed)")
    db.add_argument("--rl-split", action="store_true",
                    help="also write an `rl` split of RL prompts drawn by the tasks' rl_* rules (the official "
                         "RecLM-gen sampling: item_count U{6..10}, ...); PPO/GRPO/RLOO then train on it")
    db.add_argument("--task-dir", help="a folder of your own task YAMLs (added to the built-in ones)")
    db.add_argument("--protocol", default="recalign", choices=["recalign", "reclm-gen"],
                    help="apply the task files' settings for this protocol (reclm-gen: the official test "
                         "proportions, e.g. I2>= at 30%%)")
    db.add_argument("--overwrite", action="store_true")
    db.set_defaults(func=cmd_data_build)
    ds_ = dsub.add_parser("show", help="print rendered examples of a built instruction dataset")
    ds_.add_argument("--data", required=True, help="directory from `recalign data build`")
    ds_.add_argument("--task", default="I0", help="task or group, e.g. I1")
    ds_.add_argument("-n", type=int, default=3, help="how many rows")
    ds_.add_argument("--split", default="train", choices=["train", "valid", "test"])
    ds_.add_argument("--model", help="apply this model's chat template (local HF dir or hub id)")
    ds_.add_argument("--task-dir")
    ds_.set_defaults(func=cmd_data_show)

    tk = sub.add_parser("tasks", help="list task files, or validate a folder of your own")
    tksub = tk.add_subparsers(dest="tasks_command", required=True)
    tl = tksub.add_parser("list", help="the built-in tasks (and --task-dir's) with their rules")
    tl.add_argument("--task-dir", help="a folder of your own task YAMLs")
    tl.set_defaults(func=cmd_tasks_list)
    tv = tksub.add_parser("validate", help="check a folder of task YAMLs before building with them")
    tv.add_argument("dir")
    tv.add_argument("--data", help="a prepared dataset: also check the sampling ranges against its catalog")
    tv.add_argument("--templates", help="your template folder (if the tasks use templates of their own)")
    tv.set_defaults(func=cmd_tasks_validate)

    t = sub.add_parser("teacher", help="train / evaluate the SASRec teacher")
    tsub = t.add_subparsers(dest="teacher_command", required=True)
    tt = tsub.add_parser("train", help="train SASRec with early stopping on validation NDCG@10")
    tt.add_argument("--data", required=True, help="dataset directory from `recalign data prepare`")
    tt.add_argument("--out", required=True, help="teacher directory to write")
    tt.add_argument("--config", help="YAML file with TeacherTrainConfig fields (flags override it)")
    tt.add_argument("--overwrite", action="store_true")
    from recalign.teacher.config import TeacherTrainConfig

    _add_dataclass_args(tt, TeacherTrainConfig)
    tt.set_defaults(func=cmd_teacher_train)
    tc = tsub.add_parser("coldstart", help="id vs content vs hybrid teachers on popularity buckets and "
                                           "a new-item split (held-out items never seen in training)")
    tc.add_argument("--data", required=True, help="dataset directory from `recalign data prepare`")
    tc.add_argument("--out", required=True, help="directory for report.md, metrics.json, buckets.png")
    tc.add_argument("--variants", default="id,content,hybrid", help="item representations to compare")
    tc.add_argument("--new-items", type=float, default=0.1, help="share of items held out of training")
    tc.add_argument("--max-rows", type=int, default=5000, help="cap on new-item rows (a seeded sample)")
    tc.add_argument("--config", help="YAML file with TeacherTrainConfig fields (flags override it)")
    tc.add_argument("--overwrite", action="store_true")
    _add_dataclass_args(tc, TeacherTrainConfig, skip=("item_repr",))
    tc.set_defaults(func=cmd_teacher_coldstart)
    te = tsub.add_parser("eval", help="full-ranking HR/NDCG/MRR of a trained teacher")
    te.add_argument("--teacher", required=True)
    te.add_argument("--data", required=True)
    te.add_argument("--split", default="test", choices=["valid", "test"])
    te.add_argument("--window", type=int, help="only the last N history items as input (labels use 10)")
    te.set_defaults(func=cmd_teacher_eval)
    e = sub.add_parser("eval", help="generate, score and report on instruction test rows")
    e.add_argument("--data", required=True, help="directory from `recalign data build`")
    e.add_argument("--out", required=True)
    e.add_argument("--model", default="smollm2-135m-instruct", help="preset, .gguf, local dir or hub id")
    e.add_argument("--adapter", help="LoRA adapter directory (from a recalign trainer)")
    e.add_argument("--tasks", default="I0,I1,I2")
    e.add_argument("--split", default="test", choices=["valid", "test"])
    e.add_argument("--limit", type=int, help="rows per task")
    e.add_argument("--grounded", action="store_true",
                   help="the answer is a numbered list of real catalog titles, none repeated or from the history")
    e.add_argument("--grounded-loose", action="store_true",
                   help="grounding only after list markers the model writes itself (free text elsewhere)")
    e.add_argument("--beam", type=int, default=0, metavar="N",
                   help="with --grounded: rank titles by a grounded beam search of width N (D3 scoring; "
                        "Hugging Face generate) instead of greedy decoding through the title trie")
    e.add_argument("--beam-length-penalty", type=float, default=0.0,
                   help="beam score / length**P (D3: 0, no normalisation; transformers' default is 1)")
    e.add_argument("--protocol", default="recalign", choices=["recalign", "reclm-gen"],
                   help="scoring rules: ours, or the official RecLM-gen code's (README, 'Protocols')")
    e.add_argument("--parser", choices=["lenient", "strict"], help="override the protocol's answer parser")
    e.add_argument("--rescore", metavar="EVAL_DIR",
                   help="score an earlier eval's answers again (same rows; e.g. under --protocol reclm-gen)")
    e.add_argument("--backend", default="auto", choices=["hf", "vllm", "auto"],
                   help="generation engine (default auto: vLLM when it works here, else HF with a note)")
    e.add_argument("--max-new-tokens", type=int, default=256)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype (auto: float32 on CPU, bfloat16 on GPU; models/device.py)")
    e.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="vLLM on GPU: share of GPU memory for weights and KV cache")
    e.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM on GPU: GPUs one engine spans")
    e.add_argument("--teacher", help="teacher directory for the reference row (default: from the data card)")
    e.add_argument("--mmlu", help="MMLU folder for retention (lm-eval's mmlu template, 5-shot)")
    e.add_argument("--gsm8k", help="GSM8K test.jsonl for retention (lm-eval's gsm8k_cot, 8-shot)")
    e.add_argument("--retention-limit", type=int, default=100,
                   help="questions per check (MMLU: spread over the subjects)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--name", help="label of this run in reports")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_eval)

    pl = sub.add_parser("pipeline", help="prepare -> teacher -> build -> eval base -> SFT -> eval -> report")
    pl.add_argument("--recipe", default="recipes/ml100k-smollm2.yaml")
    pl.add_argument("--profile", help="a profile of the recipe, e.g. quick")
    pl.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a recipe value, e.g. --set model=tiny-random --set sft.max_steps=5")
    pl.set_defaults(func=cmd_pipeline)
    tr = sub.add_parser("train", help="train one method: sft, ppo, grpo, rloo, asft, dpo-loop (TRL-style flags)",
                        description="The trainer modules behind one command; each also runs as "
                                    "`accelerate launch -m recalign.trainers.<module>`. Flags are the "
                                    "method's config fields (`recalign train sft --help`), with --config "
                                    "YAML as in TRL.")
    tr.add_argument("method", choices=sorted(TRAINERS))
    tr.add_argument("args", nargs=argparse.REMAINDER, help="the method's flags, e.g. --data runs/inst --output_dir runs/sft")
    tr.set_defaults(func=cmd_train)
    rr = sub.add_parser("rlrf4rec", help="RLRF4Rec: LLM knowledge -> KAR reranker feedback -> DPO, for R rounds")
    rr.add_argument("--recipe", required=True, help="flat YAML of RLRF4RecConfig fields (recipes/<model>/dpo-loop/config_*.yaml)")
    rr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe value, e.g. --set rounds=1")
    rr.set_defaults(func=cmd_rlrf4rec)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from recalign.errors import run_guarded

    return run_guarded(lambda: args.func(args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
