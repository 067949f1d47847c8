"""What /proc tells about a responder: CPU seconds, memory, and its socket's drop counter."""

from __future__ import annotations

import os
import re
import subprocess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        text = f.read()
    # the command name is in parentheses and may contain spaces: fields start after ')'
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


def udp_drops(port: int) -> int:
    """Sum of the kernel's drop counters of IPv4 UDP sockets bound to `port` in this namespace.

    A datagram dropped here found the socket's receive buffer full: the responder was too
    slow. The counter belongs to the socket, so it restarts with every new socket.
    """
    total = 0
    with open("/proc/net/udp", encoding="ascii") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port:
                total += int(fields[-1])
    return total


def receive_buffers(port: int) -> list[int]:
    """Receive buffer sizes (bytes, as the kernel doubled them) of UDP sockets on `port`."""
    out = subprocess.run(["ss", "-uamnH", f"sport = :{port}"], capture_output=True, text=True)
    return [int(m) for m in re.findall(r"\brb(\d+)", out.stdout)]


def cpu_busy(cpu: int | None) -> dict[str, float]:
    """Seconds one CPU (or all, for None) spent on tasks (user, nice, system, irq) and stolen.

    softirq is left out: on loopback much of it is the responder's own datagrams.
    """
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            fields = line.split()
            if fields[0] == name:
                user, nice, system, _idle, _iowait, irq, _softirq, steal = map(int, fields[1:9])
                return {
                    "task": (user + nice + system + irq) / CLOCK_TICKS,
                    "steal": steal / CLOCK_TICKS,
                }
    raise ValueError(f"no {name} in /proc/stat")
