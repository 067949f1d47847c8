"""Where mcastd spends its time under load: py-spy samples, folded into a per-function table.

py-spy (in the bench venv) samples the daemon from outside, without stopping it
(--nonblocking), while the generator floods it. Each sample is a stack; a function's
"self" share counts the samples where it was the innermost frame, its "total" share the
samples where it was anywhere on the stack.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.loadgen import pin

SECONDS = 3
SAMPLE_RATE = 250
TOP = 18


def py_spy() -> str | None:
    found = Path(sys.executable).parent / "py-spy"
    return str(found) if found.exists() else shutil.which("py-spy")


def frame_name(frame: str) -> str:
    """'serve (mcastd/server.py:243)' -> 'serve (mcastd/server.py)': lines merged."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("/mcastd/", "/python3.11/", "/lib/python3/"):
        if marker in path:
            path = marker.strip("/").split("/")[0] + "/" + path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def fold(raw: str) -> dict[str, Any]:
    """Self and total sample shares per function from py-spy's raw (folded) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    rows = [
        {"function": name, "self": own[name] / samples, "total": total[name] / samples}
        for name, _ in (own + Counter()).most_common(TOP)
    ]
    callers = [{"function": name, "total": n / samples} for name, n in total.most_common(TOP)]
    return {"samples": samples, "self": rows, "total": callers}


def record(pid: int, out: Path, cpu: int | None) -> subprocess.Popen[bytes] | None:
    tool = py_spy()
    if tool is None:
        return None
    return subprocess.Popen(
        [
            tool,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(SECONDS),
            "--rate",
            str(SAMPLE_RATE),
            "--format",
            "raw",
            "--nonblocking",
            "--idle",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin(cpu),
    )
