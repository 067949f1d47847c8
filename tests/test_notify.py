"""sd_notify through systemd-python against a real AF_UNIX socket, as systemd would bind it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastd.notify import Notifier, systemd_sender, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    try:
        yield sock
    finally:
        sock.close()


def test_messages_reach_the_notify_socket(notify_socket: socket.socket):
    notifier = Notifier()
    notifier.ready("1 group")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=1 group"
    notifier.reloading()
    lines = notify_socket.recv(4096).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0
    notifier.stopping("stopping: SIGTERM")
    assert notify_socket.recv(4096) == b"STOPPING=1\nSTATUS=stopping: SIGTERM"
    notifier.watchdog()
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_it_is_a_no_op(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd_sender()("READY=1") is False


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None
