"""One error path for every entry point: ``recalign ...`` and ``python -m recalign.trainers.*``
(also under ``accelerate launch``) print one line for an expected failure and exit non-zero.

A traceback from inside a library tells a user nothing about which file or flag to fix;
``--debug`` (CLI) or ``RECALIGN_DEBUG=1`` (trainer modules) shows it.
"""
from __future__ import annotations

import os
import sys
from typing import Callable


def run_guarded(fn: Callable[[], int | None], debug: bool | None = None, prog: str = "recalign") -> int:
    """Run ``fn`` and turn its failures into one stderr line and an exit code.

    DataError/FileExistsError (ours, already with file/field/fix) -> 2; Ctrl-C -> 130;
    anything else -> 1 with its type and first line.

    >>> run_guarded(lambda: 0)
    0
    """
    from recalign.data.util import DataError

    if debug is None:
        debug = os.environ.get("RECALIGN_DEBUG", "") not in ("", "0")
    try:
        return fn() or 0
    except (DataError, FileExistsError) as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # outputs are made in temporary folders that are renamed only when complete
        print(f"{prog}: interrupted; no partial output was left (SFT/RL stages resume from their last "
              "checkpoint with --resume)", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # one line, not a library's traceback
        if debug:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:500]
        hint = "run `recalign --debug ...`" if prog == "recalign" else "set RECALIGN_DEBUG=1"
        print(f"{prog}: error: {type(e).__name__}: {first} ({hint} for the traceback)", file=sys.stderr)
        return 1
