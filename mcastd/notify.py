"""sd_notify: tell systemd when we are ready, reloading, stopping, and that the loop is alive."""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable, Mapping

Sender = Callable[[str], bool]

# How long a state change systemd acts on (READY=1, RELOADING=1, STOPPING=1) may wait for
# room in a full notify queue. The kernel queues only net.unix.max_dgram_qlen (10) datagrams
# on an AF_UNIX datagram socket; a blocking send then waits until the reader reads, for ever
# if nobody does (a wrapper that sets NOTIFY_SOCKET and never reads it, a stalled manager),
# and the daemon with it. Losing READY=1 fails the start after TimeoutStartSec=, so it gets
# a short wait; STATUS= and WATCHDOG=1 are sent again within a second or half the watchdog
# interval, so they are dropped at once.
STATE_WAIT_SECONDS = 1.0
STATE_CHANGES = ("READY=1", "RELOADING=1", "STOPPING=1")


def notify_address(environ: Mapping[str, str] | None = None) -> str | None:
    """$NOTIFY_SOCKET as a socket address (a path, or "\\0name" for @name); None if unusable."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path.startswith(("/", "@")):
        return None  # unset, or a kind (vsock:) that only a VM's systemd hands out
    return "\0" + path[1:] if path.startswith("@") else path


def socket_notify(state: str, wait: float = 0.0) -> bool:
    """sd_notify(3) that never blocks for long: one datagram to $NOTIFY_SOCKET, sent without
    waiting, or after waiting at most `wait` seconds for room in a full queue. True if sent.

    Raises OSError when the socket cannot be reached (gone, refused, no descriptor left).
    """
    address = notify_address()
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        # Connected, so that poll() reports POLLOUT by the reader's queue (for an unconnected
        # datagram socket it looks only at our own send buffer, which is never full).
        sock.connect(address)
        data = state.encode()
        try:
            sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if wait <= 0:
                return False
            poller = select.poll()
            poller.register(sock, select.POLLOUT)
            if not poller.poll(wait * 1000):
                return False
            try:
                sock.send(data, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False  # another sender took the room first
    return True


def systemd_sender() -> Sender:
    """The daemon's sender: socket_notify, never blocking for long, never raising.

    Not systemd-python's notify: its sd_notify sends with a blocking send, which waits as
    long as the queue stays full.
    """

    def send(state: str) -> bool:
        wait = STATE_WAIT_SECONDS if state.startswith(STATE_CHANGES) else 0.0
        try:
            return socket_notify(state, wait)
        except OSError:
            # At the open-files limit, or with the notify socket gone, the message is lost;
            # the daemon must not be.
            return False

    return send


class Notifier:
    """The daemon's side of sd_notify; `send` is injectable so tests can use a real socket.

    Each method returns whether the message was sent (False without NOTIFY_SOCKET, or when
    the queue was full)."""

    def __init__(self, send: Sender | None = None) -> None:
        self.send = send if send is not None else systemd_sender()

    def ready(self, status: str) -> bool:
        return self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 to tell reloads apart.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self, status: str) -> bool:
        return self.send(f"STOPPING=1\nSTATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")


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
