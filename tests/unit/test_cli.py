import json
import subprocess
import sys

import pytest

from recalign.cli import main


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from recalign.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'transformers', 'trl', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prepare_and_errors(tmp_path, capsys):
    assert main(["data", "prepare", "--out", str(tmp_path / "d")]) == 0
    assert "943 users, 1682 items" in capsys.readouterr().out
    assert main(["data", "prepare", "--out", str(tmp_path / "d")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "prepare", "--dataset", "ml1m", "--out", str(tmp_path / "e")]) == 2
    assert "did you mean 'ml-1m'" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_teacher_train_and_eval_cli(tmp_path, capsys):
    from recalign.data import RecDataset
    from recalign.data.prepare import PrepareOptions, prepare_dataset

    data = prepare_dataset(tmp_path / "d", PrepareOptions("ml-100k", user_core=300))  # few users: fast
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text("hidden: 16\ninner: 32\nepochs: 1\nmax_len: 20\n")
    assert main(["teacher", "train", "--data", str(data), "--out", str(tmp_path / "t"),
                 "--config", str(cfg), "--layers", "1"]) == 0
    out = capsys.readouterr().out
    assert "SASRec (id) (masked)" in out and "Popularity (unmasked)" in out
    card = json.loads((tmp_path / "t" / "card.json").read_text())
    assert card["config"]["hidden"] == 16 and card["config"]["layers"] == 1 and card["seed"] == 42
    assert len(card["inputs"]["sequences"]) == 64
    assert main(["teacher", "eval", "--teacher", str(tmp_path / "t"), "--data", str(data)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res) == {"split", "window", "masked", "unmasked"} and 0 <= res["masked"]["HR@10"] <= 1
    # the teacher as labels use it: the last 10 history items (the card's test_window10)
    assert main(["teacher", "eval", "--teacher", str(tmp_path / "t"), "--data", str(data), "--window", "10"]) == 0
    w10 = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "t" / "metrics.json").read_text())["test_window10"]["masked"]
    assert w10["window"] == 10 and w10["masked"]["HR@10"] == pytest.approx(saved["HR@10"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("hiden: 3\n")
    assert main(["teacher", "train", "--data", str(data), "--out", str(tmp_path / "t2"), "--config", str(bad)]) == 2
    assert "did you mean 'hidden'" in capsys.readouterr().err
    assert RecDataset.load(data).n_users < 943
    for flags, message in ((["--epochs", "0"], "untrained teacher"),
                           (["--item-repr", "text"], "item_repr must be one of id, content, hybrid")):
        assert main(["teacher", "train", "--data", str(data), "--out", str(tmp_path / "t3"), *flags]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t3").exists()


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("deep inside a library\nmore lines")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("recalign.cli.cmd_assets", boom)
    assert main(["assets", "list"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == ("recalign: error: RuntimeError: deep inside a library "
                           "(run `recalign --debug ...` for the traceback)")
    with pytest.raises(RuntimeError):
        main(["--debug", "assets", "list"])
    monkeypatch.setattr("recalign.cli.cmd_assets", interrupted)
    assert main(["assets", "list"]) == 130 and "interrupted" in capsys.readouterr().err


def test_tasks_list_and_validate(tmp_path, capsys):
    from tests.conftest import FIXTURES

    assert main(["tasks", "list", "--task-dir", str(FIXTURES / "tasks")]) == 0
    out = capsys.readouterr().out
    assert "| I0 | 1 | sequential | I0 | rank |" in out and "| SeqShort | 1 | sequential | I0 | rank |" in out
    assert "| I3 | 1 | item_search | - | task |" in out
    assert main(["tasks", "validate", str(FIXTURES / "tasks")]) == 0
    assert "ok  seq_short.yaml: SeqShort (rule I0, builder sequential)" in capsys.readouterr().out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "t.yaml").write_text((FIXTURES / "tasks" / "seq_short.yaml").read_text().replace("template: i0_sequential",
                                                                                            "template: i0_sequentail"))
    assert main(["tasks", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "t.yaml: key 'template': template 'i0_sequentail.jinja' not found (did you mean 'i0_sequential.jinja'?)" in err


def test_content_teacher_and_coldstart_cli(tmp_path, capsys, monkeypatch):
    from recalign.data.prepare import PrepareOptions, prepare_dataset
    from recalign.models.resolve import build_tiny_random

    monkeypatch.setenv("RECALIGN_CACHE", str(tmp_path / "cache"))
    data = prepare_dataset(tmp_path / "d", PrepareOptions("ml-100k", user_core=300))
    tiny = build_tiny_random(tmp_path / "tiny")
    small = ["--hidden", "16", "--inner", "32", "--epochs", "1", "--max-len", "20", "--content-model", str(tiny)]
    assert main(["teacher", "train", "--data", str(data), "--out", str(tmp_path / "t"), "--item-repr", "content",
                 *small]) == 0
    out = capsys.readouterr().out
    assert "LEARN (content) (masked)" in out and "by the target's training interactions" in out
    metrics = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert metrics["item_repr"] == "content" and metrics["content"]["model"].startswith(str(tiny))
    assert main(["teacher", "coldstart", "--data", str(data), "--out", str(tmp_path / "c"), "--variants",
                 "id,hybrid", "--new-items", "0.2", *small]) == 0
    report = (tmp_path / "c" / "report.md").read_text()
    assert "SASRec id+content (hybrid)" in report and "new items" in report
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["protocol"]["held_out_in_training"] == 0
    assert main(["teacher", "coldstart", "--data", str(data), "--out", str(tmp_path / "c2"), "--variants",
                 "id,text"]) == 2
    assert "--variants id,text: choose from id, content, hybrid" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["sft", "ppo", "grpo", "asft", "rlrf4rec"])
def test_trainer_modules_print_one_line_errors(tmp_path, module):
    """`accelerate launch -m recalign.trainers.<m>` runs the module's __main__: a config error must
    read like the CLI's (one line, file/field named), with the traceback only on request."""
    import os
    import subprocess
    import sys

    args = ["--method", "rloo"] if module == "grpo" else []
    cmd = [sys.executable, "-m", f"recalign.trainers.{module}", *args, "--data", str(tmp_path / "missing"),
           "--output_dir", str(tmp_path / "out")]
    env = {**os.environ, "RECALIGN_DEBUG": ""}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and err[-1].startswith(f"recalign.trainers.{module}: error: ")
    assert "missing" in err[-1]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**env, "RECALIGN_DEBUG": "1"}, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr
    assert not (tmp_path / "out").exists()


def test_train_subcommand_runs_the_trainer_modules(tmp_path, capsys):
    """`recalign train <method>` is the trainer module with its TRL-style flags."""
    with pytest.raises(SystemExit) as e:
        main(["train", "sft", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "recalign train sft" in out and "--learning_rate" in out and "--lora_top_layers" in out
    for method in ("sft", "ppo", "grpo", "rloo", "asft"):
        assert main(["train", method, "--data", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert "missing" in err and len(err.strip().splitlines()) == 1, (method, err)
    with pytest.raises(SystemExit):
        main(["train", "dpo"])                                   # not a method: argparse lists the choices
    assert "dpo-loop" in capsys.readouterr().err


def test_one_flag_dialect_both_spellings_and_output_dir():
    """Every command's flags take the trainers' (TRL's) snake_case too, and --output_dir is
    the output flag everywhere; both parse to the same namespace as the kebab/--out forms."""
    from recalign.cli import build_parser

    p = build_parser()
    kebab = p.parse_args(["data", "build", "--data", "d", "--teacher", "t", "--out", "o", "--max-users", "3",
                          "--chat-ratio", "0.5", "--rl-split"])
    snake = p.parse_args(["data", "build", "--data", "d", "--teacher", "t", "--output_dir", "o", "--max_users", "3",
                          "--chat_ratio", "0.5", "--rl_split"])
    assert vars(kebab) == vars(snake) and snake.out == "o" and snake.max_users == 3
    ev = p.parse_args(["eval", "--data", "d", "--output-dir", "o", "--max_new_tokens", "7", "--gpu_memory_utilization",
                       "0.5"])
    assert (ev.out, ev.max_new_tokens, ev.gpu_memory_utilization) == ("o", 7, 0.5)
    # every command's help renders (teacher train's once failed on a % in a default) and shows
    # the canonical spelling once
    for name, sub in p._subparsers._group_actions[0].choices.items():
        subs = [sub] if sub._subparsers is None else list(sub._subparsers._group_actions[0].choices.values())
        for s in subs:
            text = s.format_help()
            assert "--max_new_tokens" not in text and "--max_users" not in text and "--output-dir" not in text
            if any("--out" in a.option_strings for a in s._actions):
                assert "--output_dir OUT, --out OUT" in text
