"""sd_notify through systemd-python against a real AF_UNIX socket, as systemd would bind it."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastd.notify import (
    STATE_WAIT_SECONDS,
    Notifier,
    socket_notify,
    systemd_sender,
    watchdog_interval,
)

# Far more than the kernel queues on one AF_UNIX datagram socket (net.unix.max_dgram_qlen,
# 10 by default): the loop that fills the queue ends long before.
QUEUE_BOUND = 10_000


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


def fill(notifier: Notifier) -> int:
    """Send STATUS= until the unread queue is full; how many went in."""
    for sent in range(QUEUE_BOUND):
        if not notifier.status(f"{sent} datagrams"):
            return sent
    raise AssertionError(f"{QUEUE_BOUND} messages queued on a socket nobody reads")


def test_a_notify_socket_nobody_reads_never_blocks_the_daemon(notify_socket: socket.socket):
    # Before: the 11th message blocked in unix_wait_for_peer for ever (pytest-timeout).
    notifier = Notifier()
    queued = fill(notifier)
    assert queued > 0
    assert notifier.status("still serving") is False  # dropped, not waited for
    assert notifier.watchdog() is False
    # State changes wait a bounded time for room, then are given up, never raised.
    assert notifier.ready("1 group") is False
    assert notifier.stopping("stopping: SIGTERM") is False
    received = [notify_socket.recv(4096) for _ in range(queued)]
    assert received == [f"STATUS={n} datagrams".encode() for n in range(queued)]


def test_a_state_change_gets_through_once_the_reader_catches_up(notify_socket: socket.socket):
    notifier = Notifier()
    queued = fill(notifier)
    assert notifier.status("dropped") is False

    def read_one_later() -> None:
        time.sleep(STATE_WAIT_SECONDS / 10)
        notify_socket.recv(4096)

    reader = threading.Thread(target=read_one_later)
    reader.start()
    try:
        assert notifier.ready("1 group") is True  # waited for the room the reader made
    finally:
        reader.join()
    received = [notify_socket.recv(4096) for _ in range(queued)]
    assert received[-1] == b"READY=1\nSTATUS=1 group"


def test_socket_notify_waits_at_most_as_told(notify_socket: socket.socket):
    fill(Notifier())
    assert socket_notify("STATUS=x") is False
    assert socket_notify("READY=1", wait=0.01) is False


def test_a_notify_socket_that_is_gone_is_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    with pytest.raises(FileNotFoundError):
        socket_notify("READY=1")
    assert Notifier().ready("1 group") is False
