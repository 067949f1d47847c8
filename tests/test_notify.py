"""sd_notify through systemd-python against a real AF_UNIX socket, as systemd would bind it."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastd.notify import Notifier, socket_notify, systemd_sender, watchdog_interval


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


def test_own_sender_sends_what_systemd_python_sends(notify_socket: socket.socket):
    # socket_notify stands in for systemd-python in a plain `pip install`: same datagrams.
    import systemd.daemon

    for state in ("READY=1\nSTATUS=1 group", "WATCHDOG=1", "STATUS=ünïcode"):
        assert systemd.daemon.notify(state) is True
        expected = notify_socket.recv(4096)
        assert socket_notify(state) is True
        assert notify_socket.recv(4096) == expected


def test_own_sender_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch):
    name = f"mcastd-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert socket_notify("READY=1") is True
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/path"])
def test_own_sender_without_a_usable_notify_socket_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, value: str | None
):
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert socket_notify("READY=1") is False
