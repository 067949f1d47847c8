"""Build finished multicast sockets, one per (group, port); leave the group when closing them.

Set-up is plain synchronous code: every failure becomes a SocketSetupError with a message
chosen by errno, and whatever was opened before the failure is closed again.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable
from typing import NamedTuple

from mcastd.config import Endpoint
from mcastd.errors import SocketSetupError, strerror

# Linux values the socket module of Python 3.11 does not name (linux/in.h, linux/in6.h).
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
# Ask for this much receive buffer; the kernel caps it at net.core.rmem_max without complaint.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024

IF_INET6 = "/proc/net/if_inet6"


class Membership(NamedTuple):
    """What was joined, so that exactly this can be left again."""

    level: int
    leave_option: int
    request: bytes


class Listener(NamedTuple):
    """A bound, joined socket and the membership it holds."""

    sock: socket.socket
    membership: Membership


def interface_index(name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError as e:
        raise SocketSetupError(f"interface {name}", errno.ENODEV, "does not exist") from e


def ipv6_interface_index(address: str, table: str = IF_INET6) -> int:
    """The index of the interface that has this IPv6 address (from /proc/net/if_inet6)."""
    wanted = ipaddress.IPv6Address(address).packed.hex()
    try:
        with open(table, encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and fields[0] == wanted:
                    return int(fields[1], 16)
    except OSError:
        pass  # no IPv6 on this host: said below
    raise SocketSetupError(
        f"interface {address}", errno.EADDRNOTAVAIL, "no interface has this address"
    )


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def membership_request(endpoint: Endpoint) -> Membership:
    """The join request for the endpoint's group on its interface (kernel struct layouts)."""
    iface = endpoint.interface
    if endpoint.family == socket.AF_INET:
        # struct ip_mreqn { in_addr multiaddr; in_addr address; int ifindex; }: 12 bytes
        local = iface if iface and _is_address(iface) else "0.0.0.0"  # noqa: S104 (an address field, not a bind)
        index = interface_index(iface) if iface and not _is_address(iface) else 0
        request = (
            socket.inet_aton(endpoint.group) + socket.inet_aton(local) + struct.pack("@i", index)
        )
        return Membership(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, request)
    # struct ipv6_mreq { in6_addr multiaddr; unsigned int ifindex; }: 20 bytes
    if iface is None:
        index = 0
    elif _is_address(iface):
        index = ipv6_interface_index(iface)
    else:
        index = interface_index(iface)
    request = socket.inet_pton(socket.AF_INET6, endpoint.group) + struct.pack("@I", index)
    return Membership(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, request)


def _explain(stage: str, code: int, endpoint: Endpoint) -> str:
    """A message an operator can act on, chosen by where we were and what the kernel said."""
    if code == errno.EADDRINUSE:
        return "address already in use (another mcastd, or another program, serves this port)"
    if code == errno.EACCES and stage == "bind":
        return f"permission denied: port {endpoint.port} < 1024 needs CAP_NET_BIND_SERVICE"
    if code == errno.ENOBUFS and stage == "join":
        return (
            "too many group memberships "
            "(raise net.ipv4.igmp_max_memberships or net.ipv6.mld_max_msf)"
        )
    if code == errno.ENODEV and stage == "join":
        if endpoint.interface:
            return f"cannot join on interface {endpoint.interface}: it is down or has no address"
        return "no route for multicast: add one (ip route add 224.0.0.0/4 dev IF) or set interface:"
    if code == errno.EADDRNOTAVAIL and stage == "join" and endpoint.interface:
        return f"cannot join on interface {endpoint.interface}: no such local address"
    if code == errno.EAFNOSUPPORT:
        return "IPv6 is not available on this host"
    if code == errno.EADDRNOTAVAIL and stage == "bind":
        return "cannot bind to this group address (a link-local group needs its interface named)"
    return f"{stage} failed: {strerror(code)}"


def open_listener(endpoint: Endpoint) -> Listener:
    """A non-blocking socket bound to (group, port), joined, with reply TTL set."""
    stage = "socket"
    sock: socket.socket | None = None
    try:
        sock = socket.socket(endpoint.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        stage = "set options"
        v6 = endpoint.family == socket.AF_INET6
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Only datagrams for groups this socket joined, not every group the host joined.
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        membership = membership_request(endpoint)
        stage = "bind"
        if v6:
            scope = struct.unpack("@I", membership.request[16:])[0]
            sock.bind((endpoint.group, endpoint.port, 0, scope))
        else:
            sock.bind((endpoint.group, endpoint.port))
        stage = "join"
        join = socket.IPV6_JOIN_GROUP if v6 else socket.IP_ADD_MEMBERSHIP
        sock.setsockopt(membership.level, join, membership.request)
        stage = "set TTL"
        apply_ttl(sock, endpoint)
        apply_interface(sock, endpoint, membership)
    except SocketSetupError as e:
        if sock is not None:
            sock.close()
        raise SocketSetupError(f"{endpoint}: {e.where}", e.errno, e.message) from e
    except OSError as e:
        if sock is not None:
            sock.close()
        code = e.errno or errno.EINVAL
        raise SocketSetupError(str(endpoint), code, _explain(stage, code, endpoint)) from e
    return Listener(sock, membership)


def apply_ttl(sock: socket.socket, endpoint: Endpoint) -> None:
    """The hop limit of replies: the configured TTL for group replies, at least 1 for unicast."""
    unicast_ttl = max(endpoint.ttl, 1)  # the kernel refuses a unicast TTL of 0
    if endpoint.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, endpoint.ttl)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, unicast_ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, endpoint.ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, unicast_ttl)


def apply_interface(sock: socket.socket, endpoint: Endpoint, membership: Membership) -> None:
    """Send group replies out of the interface we joined on (the kernel's choice if none)."""
    if endpoint.family == socket.AF_INET6:
        index = struct.unpack("@I", membership.request[16:])[0]
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    else:
        # ip_mreqn without the group: local address + ifindex
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, membership.request[4:])


def change_interface(listener: Listener, new: Endpoint) -> Listener:
    """Move the membership of an open socket to the new endpoint's interface (for reload)."""
    membership = membership_request(new)
    join = socket.IPV6_JOIN_GROUP if new.family == socket.AF_INET6 else socket.IP_ADD_MEMBERSHIP
    try:
        listener.sock.setsockopt(membership.level, join, membership.request)
    except OSError as e:
        code = e.errno or errno.EINVAL
        raise SocketSetupError(str(new), code, _explain("join", code, new)) from e
    leave(listener)
    apply_interface(listener.sock, new, membership)
    return Listener(listener.sock, membership)


def leave(listener: Listener) -> None:
    """Drop the membership; closing would too, but leaving first sends the report at once."""
    m = listener.membership
    # If the interface went away, the kernel has already dropped the membership.
    with contextlib.suppress(OSError):
        listener.sock.setsockopt(m.level, m.leave_option, m.request)


def close_listener(listener: Listener) -> None:
    leave(listener)
    listener.sock.close()


def open_all(
    endpoints: Iterable[Endpoint], opener: Callable[[Endpoint], Listener] = open_listener
) -> dict[tuple[str, int], Listener]:
    """Open every endpoint, or none: on the first failure the ones already open are closed."""
    opened: dict[tuple[str, int], Listener] = {}
    try:
        for endpoint in endpoints:
            opened[endpoint.key] = opener(endpoint)
    except BaseException:
        for listener in opened.values():
            close_listener(listener)
        raise
    return opened
