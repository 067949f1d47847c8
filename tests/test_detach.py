"""detach: a live pidfile holder refuses a second copy before anything is opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcastd.detach import alive, detach


def test_alive():
    assert alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not alive(child.pid)


def test_a_running_copy_holds_the_pidfile(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pidfile = tmp_path / "mcastd.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    opened: list[bool] = []

    def open_sockets() -> None:
        opened.append(True)

    code = detach(str(pidfile), open_sockets, lambda: 0)
    assert code == 69
    assert opened == []  # refused before any socket was opened
    assert capsys.readouterr().err == (
        f"mcastd: already running as pid {os.getpid()} (pidfile {pidfile})\n"
    )


def test_failing_to_open_the_sockets_does_not_fork(tmp_path: Path):
    pidfile = tmp_path / "mcastd.pid"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    pidfile.write_text(f"{child.pid}\n")  # left behind by a copy that was killed
    assert detach(str(pidfile), lambda: None, lambda: 0) == 69
    assert not pidfile.exists()  # the stale lock was broken; nothing took it
