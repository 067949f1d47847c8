"""Which set-up failures of a group are worth trying again, and when: decided purely.

A group that cannot be joined because something on the host is not there yet (an interface,
a route, an address) is served as soon as it is: the daemon keeps its other groups and tries
again every RETRY_SECONDS. What cannot clear by itself (a port another program holds, a
permission, a kernel limit) needs the operator: at start it is fatal (exit 69).
"""

from __future__ import annotations

import errno
from enum import Enum

# Often enough that a late interface or route is served within a few seconds; rarely enough
# that a group that never comes costs nothing (one socket and one join attempt).
RETRY_SECONDS = 2.0


class Verdict(Enum):
    RETRY = "retry"  # may clear by itself: serve the others, try again
    FATAL = "fatal"  # needs the operator: fail at start, report on reload


# What the kernel answers while the host is not ready for a group yet.
CLEARS_BY_ITSELF = frozenset(
    {
        errno.ENODEV,  # no such interface, or no route for multicast (IPv4 and IPv6 joins)
        errno.ENETUNREACH,  # no route
        errno.EHOSTUNREACH,
        errno.EADDRNOTAVAIL,  # the interface's address is not (yet) there
        errno.ENETDOWN,  # the interface is down
        errno.ENXIO,  # interface index gone between lookup and join
        # A kernel without IPv6 (ipv6.disable=1): the IPv4 groups of a mixed config are served
        # and the IPv6 ones shown as failing, not the whole service refused.
        errno.EAFNOSUPPORT,
    }
)


def verdict(code: int) -> Verdict:
    """RETRY for what can clear by itself; FATAL for the rest (EADDRINUSE, EACCES, EPERM,
    ENOBUFS, EMFILE, ENFILE, ENOMEM, EINVAL and anything unexpected)."""
    return Verdict.RETRY if code in CLEARS_BY_ITSELF else Verdict.FATAL


def due(now: float, last_attempt: float, interval: float = RETRY_SECONDS) -> bool:
    """Whether a failing group should be tried again at `now` (monotonic seconds)."""
    return now - last_attempt >= interval
