"""control: the read-only status socket, a real AF_UNIX socket in a temp dir."""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mcastd.control import (
    CLIENT_SECONDS,
    MAX_REQUEST,
    SOCKET_MODE,
    ControlServer,
    Snapshot,
    answer,
    default_path,
    find_sockets,
    listening,
    query,
)
from mcastd.errors import SocketSetupError
from tests.logs import recording

DOCUMENT = {"schema": 1, "instance": "mcastd", "endpoints": []}


def snapshot() -> dict[str, object]:
    return dict(DOCUMENT)


@pytest.mark.parametrize(
    ("request_line", "reply"),
    [
        (b"status", DOCUMENT),
        (b"  status  ", DOCUMENT),
        (b"stop", {"error": "unknown request 'stop'; the only request is 'status'"}),
        (b"", {"error": "unknown request ''; the only request is 'status'"}),
        (b"\xff", {"error": "unknown request '\ufffd'; the only request is 'status'"}),
    ],
)
def test_answer_table(request_line: bytes, reply: dict[str, object]):
    data = answer(request_line, snapshot)
    assert data.endswith(b"\n")
    assert json.loads(data) == reply


class Served:
    """A ControlServer with its own selector loop in a thread, until `close`."""

    def __init__(self, path: Path, answers: Snapshot = snapshot) -> None:
        self.server = ControlServer(str(path), answers)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.server.sock, selectors.EVENT_READ, self.server)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop)
        self.thread.start()

    def loop(self) -> None:
        while not self.done.is_set():
            for key, events in self.selector.select(0.05):
                key.data.handle(self.selector, events, 0.0)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.server.close(self.selector)
        self.selector.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "control.sock")
    try:
        yield s
    finally:
        s.close()


def test_query_gets_the_snapshot(served: Served, tmp_path: Path):
    path = tmp_path / "control.sock"
    assert path.stat().st_mode & 0o777 == SOCKET_MODE
    assert query(path) == DOCUMENT
    assert query(str(path)) == DOCUMENT  # again: one connection per request


def test_a_long_request_gets_an_error_not_a_hang(served: Served, tmp_path: Path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        client.connect(str(tmp_path / "control.sock"))
        client.sendall(b"x" * (MAX_REQUEST + 10))
        reply = client.makefile("rb").read()
    assert json.loads(reply) == {"error": f"request longer than {MAX_REQUEST} bytes"}


def test_query_raises_value_error_on_an_error_reply(tmp_path: Path):
    path = tmp_path / "fake.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fake:
        fake.bind(str(path))
        fake.listen(1)

        def reply() -> None:
            conn, _ = fake.accept()
            with conn:
                conn.recv(100)
                conn.sendall(b'{"error": "no"}\n')

        thread = threading.Thread(target=reply)
        thread.start()
        with pytest.raises(ValueError, match="no"):
            query(path)
        thread.join()


def test_a_client_that_says_nothing_is_cut_off(tmp_path: Path):
    server = ControlServer(str(tmp_path / "c.sock"), snapshot)
    selector = selectors.DefaultSelector()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(tmp_path / "c.sock"))
            server.handle(selector, selectors.EVENT_READ, 100.0)  # accepts it
            assert len(server.clients) == 1
            server.expire(selector, 100.0 + CLIENT_SECONDS - 0.1)
            assert len(server.clients) == 1
            server.expire(selector, 100.0 + CLIENT_SECONDS)
            assert server.clients == set()
            client.settimeout(5)
            assert client.recv(10) == b""  # closed by the daemon
    finally:
        server.close(selector)
        selector.close()
    assert not (tmp_path / "c.sock").exists()


def test_a_stale_socket_file_is_replaced_and_a_live_one_is_not(tmp_path: Path):
    path = tmp_path / "c.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: a daemon that died
    first = ControlServer(str(path), snapshot)
    try:
        with pytest.raises(SocketSetupError) as caught:
            ControlServer(str(path), snapshot)
        assert str(caught.value) == f"control socket {path}: another mcastd serves it"
    finally:
        first.close(None)


def test_listening_tells_live_stale_and_missing_sockets_apart(tmp_path: Path):
    path = tmp_path / "c.sock"
    assert listening(str(path)) is None  # no file
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    assert listening(str(path)) is False  # a file nobody listens on
    path.unlink()
    live = ControlServer(str(path), snapshot)
    try:
        assert listening(str(path)) is True
    finally:
        live.close(None)


def test_default_path_is_under_the_runtime_directory():
    assert default_path({"RUNTIME_DIRECTORY": "/run/mcastd/x:/run/other"}) == (
        "/run/mcastd/x/control.sock"
    )
    assert default_path({}) is None


def test_find_sockets_under_the_runtime_root(tmp_path: Path):
    (tmp_path / "mcastd").mkdir()
    (tmp_path / "mcastd" / "control.sock").touch()
    (tmp_path / "mcastd@239.0.0.9").mkdir()
    (tmp_path / "mcastd@239.0.0.9" / "control.sock").touch()
    (tmp_path / "foreground.sock").touch()
    (tmp_path / "other").mkdir()
    found, denied = find_sockets(str(tmp_path))
    assert found == [
        tmp_path / "foreground.sock",
        tmp_path / "mcastd" / "control.sock",
        tmp_path / "mcastd@239.0.0.9" / "control.sock",
    ]
    assert denied == []
    assert find_sockets(str(tmp_path / "missing")) == ([], [])


def test_a_failing_snapshot_costs_the_client_its_answer_not_the_daemon(tmp_path: Path):
    def broken() -> dict[str, object]:
        return {"uptime": 1 / 0}

    with recording(logging.DEBUG) as records:
        served = Served(tmp_path / "c.sock", broken)
        try:
            replies = []
            for _ in range(2):  # before: the ZeroDivisionError ended the loop at the first
                with pytest.raises(ValueError, match="status failed") as failed:
                    query(tmp_path / "c.sock", timeout=5)
                replies.append(str(failed.value))
        finally:
            served.close()
    assert replies == ["status failed inside mcastd: ZeroDivisionError: division by zero"] * 2
    errors = [r for r in records.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "control socket: status failed (a bug: please report it): "
        "ZeroDivisionError: division by zero"
    ]  # once, however often it is asked
    tracebacks = [r for r in records.records if r.levelno == logging.DEBUG and r.exc_info]
    assert len(tracebacks) == 1
