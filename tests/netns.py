"""Throw-away network namespaces for tests, and an mcastd process running inside one.

Every datagram a test sends stays inside a namespace made here: IPv4 multicast is routed to
`lo`; IPv6 multicast, which `lo` does not carry, goes over a veth pair inside the namespace.
The namespaces and links are made by `scripts/netns` (the one recipe that the demo, the
autopkgtest and the bench run too); `netns_script` runs it.
Client sockets are created inside the namespace from the test process itself (setns on the
calling thread, then back), so tests talk to the daemon with ordinary sockets.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

CLONE_NEWNET = 0x40000000
REPO = Path(__file__).resolve().parent.parent
NETNS_SCRIPT = REPO / "scripts" / "netns"
_libc = ctypes.CDLL(None, use_errno=True)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def netns_script(*argv: str) -> None:
    """Run `scripts/netns ARGV...` (see its header for the commands)."""
    sh(str(NETNS_SCRIPT), *argv)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


class NetNS:
    """A named network namespace with lo up, 224.0.0.0/4 on lo, and a veth pair for IPv6."""

    # False for a name given to another's namespace (a booted container's): `delete` then
    # removes only the name and leaves its processes alone.
    owned = True

    def __init__(self, prefix: str = "mcastd-t") -> None:
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        netns_script("add", self.name)
        try:
            netns_script("-n", self.name, "local", "v6a", "v6b")
        except BaseException:
            self.delete()
            raise

    def ip(self, *argv: str) -> None:
        sh("ip", "-n", self.name, *argv)

    def exec(self, *argv: str) -> None:
        sh("ip", "netns", "exec", self.name, *argv)

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    @contextmanager
    def entered(self) -> Iterator[None]:
        """Run the block with this thread inside the namespace (sockets made there stay there)."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(target)
            os.close(home)

    def socket(self, family: int = socket.AF_INET) -> socket.socket:
        with self.entered():
            return socket.socket(family, socket.SOCK_DGRAM)

    def delete(self) -> None:
        """Kill whatever a test left running in the namespace (a detached daemon whose test
        failed half-way, say), then remove it."""
        if self.owned:
            pids = subprocess.run(
                ["ip", "netns", "pids", self.name], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", self.name], check=False, capture_output=True)


def terminate(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int:
    """SIGTERM the process if it runs, SIGKILL it after `timeout` seconds; its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def mcastd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "mcastd", *args]


class Daemon:
    """`mcastd run` inside a namespace, with a real NOTIFY_SOCKET the test reads."""

    def __init__(
        self,
        netns: NetNS,
        config: str | None,
        args: Sequence[str] = (),
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        default_control_socket: bool = False,
    ) -> None:
        """`default_control_socket`: leave the control socket to mcastd's default for a
        daemon started by hand (under /run/mcastd as root: only for a private /run, see
        tests/net/test_foreground_status.py); otherwise it is in the daemon's directory,
        unless `args` name one."""
        self.netns = netns
        self.dir = Path(tempfile.mkdtemp(prefix="mcastd-test-", dir=workdir))
        self.config_path = self.dir / "mcastd.yaml"
        argv = ["run"]
        if config is not None:
            self.config_path.write_text(config)
            argv += ["--config", str(self.config_path)]
        # The control socket's path, for `mcastd status --socket` and the like (None: mcastd's
        # default, which depends on the config's name).
        self.control_socket: Path | None = None
        if "--control-socket" in args:
            given = list(args)
            self.control_socket = Path(given[given.index("--control-socket") + 1])
        elif not default_control_socket:
            self.control_socket = self.dir / "control.sock"
            argv += ["--control-socket", str(self.control_socket)]
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.dir / "notify"))
        self.messages: list[str] = []
        # Read in the background, as systemd does: mcastd sends STATUS= every second, and a
        # queue nobody reads (10 datagrams) would have it drop them.
        self.arrived = threading.Condition()
        self.closed = threading.Event()
        self.reader = threading.Thread(target=self._read_notify, daemon=True)
        self.reader.start()
        self.stderr_path = self.dir / "stderr"
        environment = dict(os.environ if env is None else env)
        environment["NOTIFY_SOCKET"] = str(self.dir / "notify")
        environment["PYTHONPATH"] = str(REPO)
        environment.pop("JOURNAL_STREAM", None)
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                netns.command(mcastd_argv(*argv, *args)),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=environment,
            )

    def wait_for(self, prefix: str, timeout: float = 10.0) -> str:
        """The next sd_notify message containing a line starting with `prefix`."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                exited = self.proc.poll() is not None
                if exited:
                    self.drain()
                for message in self.messages:
                    if any(line.startswith(prefix) for line in message.splitlines()):
                        self.messages.remove(message)
                        return message
                if exited:
                    raise AssertionError(
                        f"mcastd exited with {self.proc.returncode} before {prefix!r}:\n"
                        f"{self.stderr}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {prefix!r} from mcastd within {timeout} s:\n{self.stderr}"
                    )
                self.arrived.wait(min(left, 0.05))

    def _read_notify(self) -> None:
        while not self.closed.is_set():
            ready, _, _ = select.select([self.notify], [], [], 0.1)
            if ready:
                self.drain()

    def drain(self) -> None:
        """Take every message queued on the notify socket now (the reader does it too)."""
        with self.arrived:
            while True:
                try:
                    data = self.notify.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                self.messages.append(data.decode())
            self.arrived.notify_all()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int:
        return terminate(self.proc, timeout)

    def close(self) -> None:
        self.stop()
        self.closed.set()
        self.reader.join()
        self.notify.close()
        for path in self.dir.iterdir():
            path.unlink()
        self.dir.rmdir()


def ask(
    sock: socket.socket, payload: bytes, group: str, port: int, timeout: float = 2.0
) -> tuple[bytes, tuple[str, int]]:
    """Send one datagram to (group, port) and return the first reply and its sender."""
    sock.settimeout(timeout)
    sock.sendto(payload, (group, port))
    data, sender = sock.recvfrom(70_000)
    return data, (sender[0], sender[1])


def collect(sock: socket.socket, quiet: float) -> list[bytes]:
    """Every datagram that arrives until none has come for `quiet` seconds."""
    sock.settimeout(quiet)
    got: list[bytes] = []
    try:
        while True:
            got.append(sock.recv(70_000))
    except TimeoutError:
        return got
