"""sd_notify: tell systemd when we are ready, reloading, stopping, and that the loop is alive."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

Sender = Callable[[str], bool]


def systemd_sender() -> Sender:
    """systemd-python's notify: returns False (and does nothing) without NOTIFY_SOCKET."""
    # Imported here so that `import mcastd.notify` loads no C module.
    import systemd.daemon

    def send(state: str) -> bool:
        try:
            return bool(systemd.daemon.notify(state))
        except OSError:
            # sd_notify opens a socket per message: at the open-files limit, or with the
            # notify socket gone, the message is lost; the daemon must not be.
            return False

    return send


class Notifier:
    """The daemon's side of sd_notify; `send` is injectable so tests can use a real socket."""

    def __init__(self, send: Sender | None = None) -> None:
        self.send = send if send is not None else systemd_sender()

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 to tell reloads apart.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self, status: str) -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half of WATCHDOG_USEC), or None when it is not wanted."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (we were started by a wrapper)
    return int(usec) / 2_000_000
