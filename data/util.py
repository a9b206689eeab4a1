"""Ground-floor helpers every stage shares: errors, atomic outputs, hashing, provenance.

Everything that writes a result goes through :func:`atomic_dir` or :func:`atomic_write`
so a crash never leaves a half-written output behind, and every output directory gets a
``card.json`` from :func:`provenance`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator


class DataError(ValueError):
    """Bad user input. The message names the file, the line or field, and the fix."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


OUTPUT_MARKERS = ("card.json", "metrics.json")     # what every recalign output folder holds


def check_out(final: str | os.PathLike, overwrite: bool = False, inputs=()) -> None:
    """Refuse an ``--out`` that would destroy what the user owns, before any work is done.

    With ``overwrite``, an existing folder is replaced only when it is a recalign output (it
    holds a card.json or metrics.json) and is not the working directory or one above it, nor
    one of this command's inputs, inside one, or holding one. Without it, an existing
    ``--out`` is an error.
    """
    final = Path(final)
    if not final.exists():
        return
    if not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite or choose another --out")
    f = final.resolve()
    cwd = Path.cwd().resolve()
    if f == cwd or f in cwd.parents or f == Path.home().resolve() or f == Path(f.anchor):
        raise DataError(f"--out {final}: refusing to replace the current folder or one above it; "
                        "choose a new folder for the output")
    for inp in inputs:
        if inp is None:
            continue
        i = Path(inp).resolve()
        if f == i or f in i.parents or i in f.parents:
            raise DataError(f"--out {final}: it is, holds or lies inside this command's input {inp}; "
                            "--overwrite would delete the input: choose another --out")
    if not final.is_dir() or not any((final / m).is_file() for m in OUTPUT_MARKERS):
        raise DataError(f"--out {final}: exists and is not a recalign output (no {' or '.join(OUTPUT_MARKERS)}); "
                        "--overwrite only replaces recalign's own folders: move it away or choose another --out")


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False, inputs=None) -> Iterator[Path]:
    """Yield a temporary sibling directory; rename it to ``final`` only on success.

    ``inputs`` (a user-facing command's input paths): the ownership rules of
    :func:`check_out` apply before an existing ``final`` is replaced.

    >>> with atomic_dir("/tmp/out") as tmp:   # doctest: +SKIP
    ...     (tmp / "a.txt").write_text("done")
    """
    final = Path(final)
    if inputs is not None:
        check_out(final, overwrite, inputs)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite or choose another --out")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    except OSError as e:
        raise DataError(f"--out {final}: cannot write there ({e.strerror or e}); choose a folder you can "
                        "write to") from None
    os.chmod(tmp, 0o777 & ~_umask())          # mkdtemp's 0700 would hide results from the group
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: str | os.PathLike, text: str | bytes) -> None:
    """Write ``text`` (str as UTF-8, or bytes) to a temp file beside ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())      # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def git_commit() -> str | None:
    """The commit of the recalign checkout this code runs from (None for an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("recalign", "torch", "numpy", "pandas", *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(stage: str, config: dict[str, Any], seed: int | None = None,
               inputs: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``card.json`` content every output directory carries."""
    return {
        "stage": stage,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(sys.argv),
        "git_commit": git_commit(),
        "versions": versions(),
        "seed": seed,
        "config": config,
        "inputs": inputs or {},
        **extra,
    }


def card_relative(path: str | Path | None, card_dir: str | Path) -> str | None:
    """``path`` as a card in ``card_dir`` stores it: relative to that directory, so that a
    whole run folder can be moved, or used from another working directory.

    >>> card_relative("runs/x/data", "runs/x/inst")
    '../data'
    """
    if path is None:
        return None
    return os.path.relpath(Path(path).resolve(), Path(card_dir).resolve())


def card_path(value: str | None, card_dir: str | Path, where_made: str | None = None) -> Path | None:
    """A path a card stores, resolved: relative to the card's directory (absolute paths as they
    are). When that does not exist: ``where_made`` (the absolute path recorded beside it, for a
    card copied without its neighbours), then the working directory (cards written before
    paths travelled)."""
    if not value:
        return None
    p = Path(value)
    if p.is_absolute():
        return p
    cand = Path(os.path.normpath(Path(card_dir) / p))
    if cand.exists():
        return cand
    for other in (Path(where_made) if where_made else None, p):
        if other is not None and other.exists():
            return other
    return cand


def suggest(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for a mistyped name, or an empty string."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# Settings a resumed run may change: how long it trains (continuing a finished run for more
# steps is what resume is for), where it writes, how it logs and checkpoints; never what or
# how it learns.
RESUME_FREE = frozenset({"resume", "output_dir", "logging_dir", "logging_steps", "report_to", "disable_tqdm",
                         "save_total_limit", "save_steps", "save_strategy", "dataloader_num_workers", "run_name",
                         "max_steps", "num_train_epochs", "steps"})


def check_resume(out: str | os.PathLike, cfg: Any, resuming: bool) -> None:
    """Refuse to resume a checkpoint made with other settings, then record this run's.

    A resumed run that silently kept the checkpoint's weights while its card recorded new
    settings is a wrong result with rc 0. ``resuming``: a checkpoint is about to be loaded.
    """
    import dataclasses

    out = Path(out)
    now = json.loads(json.dumps({f.name: getattr(cfg, f.name, None) for f in dataclasses.fields(cfg)},
                                default=str))
    stamp = out / "resume_settings.json"
    if resuming and stamp.is_file():
        try:
            before = json.loads(stamp.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict):
            diff = [k for k in sorted(set(before) | set(now))
                    if k not in RESUME_FREE and before.get(k) != now.get(k)]
            if diff:
                shown = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
                raise DataError(f"{out}: --resume with settings that differ from its checkpoint's ({shown}"
                                f"{'; ...' if len(diff) > 8 else ''}); resume with the same settings, or "
                                "start fresh without --resume (into another --output_dir to keep this one)")
    write_json(stamp, now)
