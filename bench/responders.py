"""Start a responder, know when it is ready, watch it, stop it and time the stop."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat
from bench.loadgen import pin

GROUP = "239.0.0.9"
PORT = 59259
# Variables that would make a child log to the journal or expect a watchdog ping.
SCRUBBED = (
    "JOURNAL_STREAM",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "NOTIFY_SOCKET",
    "MCASTD_CONFIG",
    "LISTEN_FDS",
    "LISTEN_PID",
)


@dataclass(frozen=True)
class Spec:
    """How to start one responder. `notify`: it sends READY=1 to $NOTIFY_SOCKET."""

    name: str
    label: str
    argv: tuple[str, ...]
    notify: bool
    env: dict[str, str] = field(default_factory=dict)
    # `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH: mcastd
    # runs from its own tree so that a candidate tree (--mcastd-root) is the one imported.
    cwd: Path | None = None


def floor_spec() -> Spec:
    return Spec(
        "floor",
        "floor (bare CPython loop)",
        (sys.executable, "-m", "bench.floor", GROUP, str(PORT)),
        notify=True,
    )


def mcastd_spec(name: str, label: str, repo: Path, config: Path, *extra: str) -> Spec:
    return Spec(
        name,
        label,
        (sys.executable, "-m", "mcastd", "run", "--config", str(config), *extra),
        notify=True,
        env={"PYTHONPATH": str(repo)},
        cwd=repo,
    )


def upstream_spec() -> Spec:
    return Spec(
        "upstream",
        "upstream multicast 2.1.1 HEAR",
        (
            sys.executable,
            "-m",
            "multicast",
            "--daemon",
            "HEAR",
            "--port",
            str(PORT),
            "--group",
            GROUP,
        ),
        notify=False,
    )


class StartFailed(Exception):
    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


def probe(timeout: float = 10.0, group: str = GROUP, port: int = PORT) -> float | None:
    """Send 'probe' to the group every 50 ms until any reply; seconds waited, or None."""
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        s.settimeout(0.05)
        while time.monotonic() - start < timeout:
            s.sendto(b"probe", (group, port))
            try:
                s.recvfrom(4096)
            except TimeoutError:
                continue
            return time.monotonic() - start
    return None


class Running:
    """A started responder process."""

    def __init__(self, spec: Spec, workdir: Path, cpu: int | None) -> None:
        self.spec = spec
        self.log_path = workdir / f"{spec.name}.log"
        notify_path = workdir / f"{spec.name}.notify"
        notify_path.unlink(missing_ok=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(spec.env)
        env["NOTIFY_SOCKET"] = str(notify_path)
        self.log = self.log_path.open("wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            spec.argv,
            env=env,
            cwd=spec.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=pin(cpu),
        )
        self.pid = self.proc.pid
        self.ready_seconds: float | None = None
        self.messages: list[str] = []
        self.closed = threading.Event()
        self.reader: threading.Thread | None = None

    def _read_notify(self) -> None:
        while not self.closed.is_set():
            try:
                ready, _, _ = select.select([self.notify], [], [], 0.1)
                if ready:
                    self.messages.append(self.notify.recv(4096).decode(errors="replace"))
            except (OSError, ValueError):
                return  # closed under us

    def log_tail(self, lines: int = 15) -> str:
        self.log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from start to READY=1 (or to the first probe reply); raises StartFailed."""
        if self.spec.notify:
            deadline = self.started + timeout
            while True:
                ready, _, _ = select.select([self.notify], [], [], 0.05)
                if ready:
                    message = self.notify.recv(4096).decode(errors="replace")
                    self.messages.append(message)
                    if "READY=1" in message.splitlines():
                        self.ready_seconds = time.monotonic() - self.started
                        break
                if self.proc.poll() is not None:
                    raise StartFailed(
                        self.spec.name,
                        f"exited {self.proc.returncode} before READY=1:\n{self.log_tail()}",
                    )
                if time.monotonic() > deadline:
                    raise StartFailed(self.spec.name, f"no READY=1 within {timeout} s")
        # Keep reading: a sd_notify sender blocks once the socket's queue (10 datagrams by
        # default, net.unix.max_dgram_qlen) is full, as it would if systemd stopped reading.
        self.reader = threading.Thread(target=self._read_notify, daemon=True)
        self.reader.start()
        waited = probe()
        if waited is None:
            raise StartFailed(self.spec.name, f"answers no probe:\n{self.log_tail()}")
        if self.ready_seconds is None:
            self.ready_seconds = time.monotonic() - self.started
        return self.ready_seconds

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        return procstat.cpu_seconds(self.pid)

    def memory_kib(self) -> dict[str, int]:
        return procstat.memory_kib(self.pid)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> tuple[float, int | None]:
        """Send `sig`; return (seconds until the process was gone, exit code).

        Waits on a pidfd, so the time is not rounded to a polling interval. After `timeout`
        it is killed and the time reported is the timeout.
        """
        if not self.alive():
            self._close()
            return 0.0, self.proc.returncode
        pidfd = os.pidfd_open(self.pid)
        try:
            sent = time.monotonic()
            os.kill(self.pid, sig)
            ready, _, _ = select.select([pidfd], [], [], timeout)
            took = time.monotonic() - sent
            if not ready:
                self.proc.kill()
                took = timeout
            self.proc.wait(timeout=10)
        finally:
            os.close(pidfd)
            self._close()
        return took, self.proc.returncode

    def _close(self) -> None:
        self.closed.set()
        if self.reader is not None:
            self.reader.join()
        self.notify.close()
        self.log.close()
