"""sd_notify: tell systemd when we are ready, reloading, stopping, and that the loop is alive."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

Sender = Callable[[str], bool]


def socket_notify(state: str) -> bool:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path or @abstract)."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path.startswith(("/", "@")):
        return False  # unset, or a kind (vsock:) that only a VM's systemd hands out
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode(), address)
    return True


def systemd_sender() -> Sender:
    """systemd-python's notify, else socket_notify; False (nothing sent) without NOTIFY_SOCKET."""
    # Imported here so that `import mcastd.notify` loads no C module.
    try:
        from systemd.daemon import notify
    except ImportError:
        notify = socket_notify  # a plain `pip install` (systemd-python is the extra [systemd])

    def send(state: str) -> bool:
        try:
            return bool(notify(state))
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
