"""The benchmark still works: its smoke run starts the floor and mcastd and both answer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.bench_smoke
def test_bench_smoke_run_gets_answers_from_floor_and_mcastd() -> None:
    if os.geteuid() != 0:
        pytest.fail("the bench makes its own network namespace and must run as root")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke: ok" in done.stdout
    assert "smoke: floor (bare CPython loop) answered" in done.stdout
    assert "smoke: mcastd (shipped config, reply_rate: 0) answered" in done.stdout
