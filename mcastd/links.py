"""Network interfaces as the daemon follows them: lookup by name or address, and link state.

`link_state` asks the kernel (ioctl, /proc); `transition` is pure and says what a change of
state means for the groups joined on that interface.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import socket
import struct
from typing import NamedTuple

from mcastd.addresses import as_address, is_ipv6
from mcastd.config import Endpoint
from mcastd.errors import SocketSetupError

# linux/sockios.h, linux/if.h
SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
IFF_UP = 0x1
IFF_RUNNING = 0x40

IF_INET6 = "/proc/net/if_inet6"


class LinkState(NamedTuple):
    """What the poll sees of a configured interface: its index (0: absent) and whether up."""

    ifindex: int
    up: bool


ABSENT = LinkState(0, False)


class Gone(NamedTuple):
    """The interface no longer exists (the kernel dropped its memberships)."""


class Down(NamedTuple):
    """The interface exists but is down or not running."""


class Up(NamedTuple):
    """The interface is (again) up, as index `ifindex`: join on it."""

    ifindex: int


LinkChange = Gone | Down | Up


def transition(before: LinkState, after: LinkState) -> LinkChange | None:
    """What changed between two polls of one interface; None when nothing did.

    An index that changed while up means the interface was re-created between two polls:
    that is an Up too, since the old memberships went with the old interface.
    """
    if after == before:
        return None
    if after.ifindex == 0:
        return Gone()
    if not after.up:
        return Down()
    return Up(after.ifindex)


def interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError as e:
        raise SocketSetupError(f"interface {name}", errno.ENODEV, "does not exist") from e


def _ifreq(sock: socket.socket, request: int, name: str) -> bytes:
    # struct ifreq: a 16-byte name, then a 24-byte union (flags, or a sockaddr)
    return fcntl.ioctl(sock.fileno(), request, struct.pack("16s24x", name.encode()[:15]))


def ipv4_interface_address(name: str) -> str:
    """The (first) IPv4 address of interface `name`, as the kernel's SIOCGIFADDR gives it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = _ifreq(sock, SIOCGIFADDR, name)
        except OSError as e:
            code = e.errno or errno.ENODEV
            if code == errno.ENODEV:
                raise SocketSetupError(f"interface {name}", code, "does not exist") from e
            raise SocketSetupError(f"interface {name}", code, "has no IPv4 address") from e
    return socket.inet_ntoa(answer[20:24])


def ipv6_interface(address: str, table: str = IF_INET6) -> tuple[int, str]:
    """(index, name) of the interface that has this IPv6 address (from /proc/net/if_inet6)."""
    wanted = ipaddress.IPv6Address(address).packed.hex()
    try:
        with open(table, encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[0] == wanted:
                    return int(fields[1], 16), fields[5]
    except OSError:
        pass  # no IPv6 on this host: said below
    raise SocketSetupError(
        f"interface {address}", errno.EADDRNOTAVAIL, "no interface has this address"
    )


def ipv4_interface_of(address: str) -> str | None:
    """The name of the interface with this IPv4 address, if any."""
    for _, name in socket.if_nameindex():
        with contextlib.suppress(SocketSetupError):
            if ipv4_interface_address(name) == address:
                return name
    return None


def interface_name(endpoint: Endpoint) -> str | None:
    """The name of the endpoint's interface now (an address is looked up), None if absent."""
    iface = endpoint.interface
    if iface is None or as_address(iface) is None:
        return iface
    if is_ipv6(iface):
        with contextlib.suppress(SocketSetupError):
            return ipv6_interface(iface)[1]
        return None
    return ipv4_interface_of(iface)


def link_state(endpoint: Endpoint) -> LinkState:
    """Index and up/running state of the endpoint's configured interface (ABSENT if none)."""
    name = interface_name(endpoint)
    if name is None:
        return ABSENT
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            index = socket.if_nametoindex(name)
            flags = struct.unpack_from("H", _ifreq(sock, SIOCGIFFLAGS, name), 16)[0]
        except OSError:
            return ABSENT
    return LinkState(index, bool(flags & IFF_UP and flags & IFF_RUNNING))


def must_wait(endpoint: Endpoint) -> bool:
    """`wait_for_interface` is set and the configured interface is not there (yet).

    Without an interface there is nothing to wait for: such a group is opened, and retried
    while it fails (`retry`)."""
    return (
        endpoint.settings.wait_for_interface
        and endpoint.interface is not None
        and link_state(endpoint).ifindex == 0
    )
