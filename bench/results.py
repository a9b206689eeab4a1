"""bench/RESULTS.md holds one ``## `` section per benchmark; each script rewrites only its own."""
from __future__ import annotations

from pathlib import Path


def write_section(path: Path, section: str, text: str) -> None:
    """Replace (or append) the section whose heading line is ``section``; others stay as they are."""
    body = text.rstrip("\n") + "\n"
    if not path.exists():
        path.write_text("# Benchmark results\n\n" + body, encoding="utf-8")
        return
    cur = path.read_text(encoding="utf-8")
    start = cur.find(section + "\n")
    if start < 0:
        path.write_text(cur.rstrip("\n") + "\n\n" + body, encoding="utf-8")
        return
    nxt = cur.find("\n## ", start + len(section))
    end = len(cur) if nxt < 0 else nxt + 1
    tail = cur[end:]
    path.write_text(cur[:start] + body + ("\n" + tail if tail else ""), encoding="utf-8")
