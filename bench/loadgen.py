"""Build and run the C load generator (bench/loadgen.c)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "loadgen.c"
PAYLOAD_SIZE = 64


def build(workdir: Path) -> Path:
    """Compile loadgen.c with gcc into workdir; return the binary."""
    binary = workdir / "loadgen"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(SOURCE)],
        check=True,
    )
    return binary


def pin(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child to one CPU (None when there is no CPU to spare)."""
    if cpu is None:
        return None

    def run_on_cpu() -> None:
        os.sched_setaffinity(0, {cpu})

    return run_on_cpu


@dataclass(frozen=True)
class LoadResult:
    """What the generator saw for one step. rate 0 means unpaced."""

    rate: int
    sent: int
    answered: int
    duplicates: int
    foreign: int
    send_errors: int
    client_drops: int
    send_seconds: float
    span_seconds: float
    rtt_p50_us: float
    rtt_p99_us: float
    rtt_max_us: float

    @property
    def loss(self) -> float:
        return 1.0 - self.answered / self.sent if self.sent else 0.0

    @property
    def offered_rate(self) -> float:
        """The rate actually sent (for paced steps within a hair of `rate`)."""
        return self.sent / self.send_seconds if self.send_seconds > 0 else 0.0

    @property
    def answered_rate(self) -> float:
        """Replies per second, from the first datagram sent to the last reply received."""
        return self.answered / self.span_seconds if self.span_seconds > 0 else 0.0


@dataclass(frozen=True)
class Generator:
    binary: Path
    group: str
    port: int
    cpu: int | None

    def command(self, count: int, rate: int, sockets: int, idle_ms: int) -> list[str]:
        return [
            str(self.binary),
            self.group,
            str(self.port),
            str(count),
            str(rate),
            str(sockets),
            str(PAYLOAD_SIZE),
            str(idle_ms),
            "5000",
        ]

    def run(self, count: int, rate: int, sockets: int = 1, idle_ms: int = 300) -> LoadResult:
        out = subprocess.run(
            self.command(count, rate, sockets, idle_ms),
            check=True,
            capture_output=True,
            text=True,
            preexec_fn=pin(self.cpu),
        )
        return LoadResult(rate=rate, **json.loads(out.stdout))

    def start(self, count: int, rate: int, sockets: int = 1) -> subprocess.Popen[str]:
        """Run in the background (the SIGTERM test); `finish` collects the result."""
        return subprocess.Popen(
            self.command(count, rate, sockets, 300),
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pin(self.cpu),
        )

    @staticmethod
    def finish(proc: subprocess.Popen[str], rate: int) -> LoadResult:
        out, _ = proc.communicate(timeout=30)
        return LoadResult(rate=rate, **json.loads(out))
