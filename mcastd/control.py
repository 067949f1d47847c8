"""The read-only control socket: `status` in, one JSON document out.

The daemon side is served from the event loop without ever blocking it: connections are
non-blocking, requests are one short line, replies are written as the client reads them, and
a client that dawdles is cut off. Nothing a client can send changes the daemon's state.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import selectors
import socket
from collections.abc import Callable
from pathlib import Path

from mcastd.errors import SocketSetupError, strerror
from mcastd.journal import DAEMON_LOGGER

# The request is one line; anything longer than this is not a request of ours.
MAX_REQUEST = 256
# A client gets this long to send its request and read the answer.
CLIENT_SECONDS = 5.0
# Root and the socket's group may connect (the group is `mcastd` under the shipped units).
SOCKET_MODE = 0o660
MAX_CLIENTS = 16
MAX_DISCARD = 1 << 16
# How long to wait for a connection when asking whether a control socket is alive.
PROBE_SECONDS = 1.0
# Distinct failures of `status` remembered so that each is logged once, not per request.
MAX_FAILURES_LOGGED = 32
SOCKET_NAME = "control.sock"
RUNTIME_ROOT = "/run/mcastd"

Snapshot = Callable[[], dict[str, object]]


def error_reply(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


def answer(request: bytes, snapshot: Snapshot) -> bytes:
    """The reply to one request line (pure apart from calling `snapshot`)."""
    words = request.decode("utf-8", errors="replace").split()
    if words == ["status"]:
        return json.dumps(snapshot(), sort_keys=True).encode() + b"\n"
    shown = " ".join(words)[:40]
    return error_reply(f"unknown request {shown!r}; the only request is 'status'")


class Connection:
    """One client: collects its request line, then writes the reply."""

    __slots__ = ("deadline", "inbox", "outbox", "server", "sock")

    def __init__(self, server: ControlServer, sock: socket.socket, now: float) -> None:
        self.server = server
        self.sock = sock
        self.deadline = now + CLIENT_SECONDS
        self.inbox = b""
        self.outbox = b""

    def handle(self, selector: selectors.BaseSelector, events: int, now: float) -> None:
        try:
            if events & selectors.EVENT_READ and not self.outbox:
                self._read(selector)
            elif events & selectors.EVENT_WRITE:
                self._write(selector)
        except OSError:
            self.close(selector)  # the client went away: nothing more to do for it

    def _read(self, selector: selectors.BaseSelector) -> None:
        data = self.sock.recv(MAX_REQUEST + 1)
        if not data:
            self.close(selector)
            return
        self.inbox += data
        if b"\n" in self.inbox:
            self._reply(selector, self.server.answer(self.inbox.split(b"\n", 1)[0]))
        elif len(self.inbox) > MAX_REQUEST:
            self._reply(selector, error_reply(f"request longer than {MAX_REQUEST} bytes"))

    def _reply(self, selector: selectors.BaseSelector, data: bytes) -> None:
        self.outbox = data
        selector.modify(self.sock, selectors.EVENT_WRITE, self)
        self._write(selector)

    def _write(self, selector: selectors.BaseSelector) -> None:
        try:
            sent = self.sock.send(self.outbox)
        except BlockingIOError:
            return
        self.outbox = self.outbox[sent:]
        if not self.outbox:
            # Read what the client sent past its request: closing a Unix stream socket with
            # unread data resets the connection, and the client would lose our reply.
            with contextlib.suppress(OSError):
                self.sock.recv(MAX_DISCARD)
            self.close(selector)

    def close(self, selector: selectors.BaseSelector | None) -> None:
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.sock)
        self.sock.close()
        self.server.clients.discard(self)


class ControlServer:
    """The listening control socket at `path`; register it with the loop's selector."""

    def __init__(self, path: str, snapshot: Snapshot, log: logging.Logger | None = None) -> None:
        self.path = path
        self.snapshot = snapshot
        self.log = log if log is not None else logging.getLogger(DAEMON_LOGGER)
        self.failures: set[str] = set()
        self.clients: set[Connection] = set()
        self.sock = self._bind()

    def answer(self, request: bytes) -> bytes:
        """`answer`, with a failure of the snapshot contained: a bug in showing the status
        must cost that client its answer, not the daemon its groups."""
        try:
            return answer(request, self.snapshot)
        except Exception as e:  # any bug: the loop must go on
            failure = f"{type(e).__name__}: {e}"
            if failure not in self.failures and len(self.failures) < MAX_FAILURES_LOGGED:
                self.failures.add(failure)  # said once; the client is told every time
                self.log.error(
                    "control socket: status failed (a bug: please report it): %s", failure
                )
                self.log.debug("control socket: status failed", exc_info=True)
            return error_reply(f"status failed inside mcastd: {failure}")

    def _bind(self) -> socket.socket:
        sock: socket.socket | None = None
        try:
            _remove_stale(self.path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind(self.path)
            os.chmod(self.path, SOCKET_MODE)
            sock.listen(MAX_CLIENTS)
        except OSError as e:
            if sock is not None:
                sock.close()
            code = e.errno or errno.EINVAL
            raise SocketSetupError(f"control socket {self.path}", code, strerror(code)) from e
        return sock

    def handle(self, selector: selectors.BaseSelector, events: int, now: float) -> None:
        """Accept waiting clients (more than MAX_CLIENTS at once are turned away)."""
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, ConnectionAbortedError):
                return
            except OSError:
                return  # out of descriptors: the kernel keeps them queued until next time
            if len(self.clients) >= MAX_CLIENTS:
                sock.close()
                continue
            sock.setblocking(False)
            client = Connection(self, sock, now)
            self.clients.add(client)
            selector.register(sock, selectors.EVENT_READ, client)

    def expire(self, selector: selectors.BaseSelector, now: float) -> None:
        for client in [c for c in self.clients if c.deadline <= now]:
            client.close(selector)

    def close(self, selector: selectors.BaseSelector | None) -> None:
        for client in list(self.clients):
            client.close(selector)
        if selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self.sock)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def listening(path: str) -> bool | None:
    """Whether a daemon listens on the socket file at `path`: True (also when it is busy),
    False for a socket file nobody listens on (left by a daemon that died), None when there is
    no such file or it is not a socket this user can judge."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        # A listener with a full backlog makes connect() wait: it is alive, if busy.
        probe.settimeout(PROBE_SECONDS)
        try:
            probe.connect(path)
        except TimeoutError:
            return True
        except ConnectionRefusedError:
            return False
        except OSError:
            return None
    return True


def _remove_stale(path: str) -> None:
    """Remove a socket file left by a daemon that died; refuse to steal a live one."""
    alive = listening(path)
    if alive is False:
        os.unlink(path)
    elif alive:
        raise SocketSetupError(
            f"control socket {path}", errno.EADDRINUSE, "another mcastd serves it"
        )
    # None: no file, or not a socket: bind() will say what is wrong


def default_path(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """$RUNTIME_DIRECTORY/control.sock under systemd (RuntimeDirectory=), else None."""
    env = os.environ if environ is None else environ
    runtime = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return os.path.join(runtime, SOCKET_NAME) if runtime else None


def find_sockets(root: str = RUNTIME_ROOT) -> tuple[list[Path], list[Path]]:
    """Every instance's control socket (one runtime directory per unit under /run/mcastd),
    and the runtime directories this user may not enter."""
    base = Path(root)
    try:
        entries = list(base.iterdir())
    except OSError:
        return [], []
    denied = [d for d in entries if d.is_dir() and not os.access(d, os.X_OK)]
    found = {*base.glob(f"*/{SOCKET_NAME}"), *base.glob("*.sock")}
    return sorted(found), sorted(denied)


def query(path: str | Path, timeout: float = 2.0) -> dict[str, object]:
    """Ask one daemon for its status. Raises OSError, or ValueError for a bad answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"status\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    document = json.loads(b"".join(chunks))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if "error" in document:
        raise ValueError(str(document["error"]))
    return document
