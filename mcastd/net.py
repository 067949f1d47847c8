"""Build finished multicast sockets, one per (group, port); leave the group when closing them.

Set-up is plain synchronous code: every failure becomes a SocketSetupError with a message
chosen by errno, and whatever was opened before the failure is closed again.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import resource
import socket
import struct
from collections.abc import Iterable
from typing import NamedTuple

from mcastd.addresses import as_address
from mcastd.config import Endpoint
from mcastd.errors import SocketSetupError, strerror
from mcastd.links import interface_index, ipv4_interface_address, ipv6_interface

# Linux values the socket module of Python 3.11 does not name (linux/in.h, linux/in6.h).
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
IP_ADD_SOURCE_MEMBERSHIP = 39
IP_DROP_SOURCE_MEMBERSHIP = 40
MCAST_JOIN_SOURCE_GROUP = 46
MCAST_LEAVE_SOURCE_GROUP = 47
# Ask for this much receive buffer; the kernel caps it at net.core.rmem_max without complaint.
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
SOCKADDR_STORAGE = 128
# The interface field of an IPv4 membership or IP_MULTICAST_IF request: the kernel's choice.
ANY_INTERFACE = "0.0.0.0"  # noqa: S104 (not a bind address)


class Membership(NamedTuple):
    """One thing joined, so that exactly this can be left again."""

    level: int
    leave_option: int
    request: bytes


class GroupSocket(NamedTuple):
    """A bound, joined socket, its memberships and the interface index they are on."""

    sock: socket.socket
    memberships: tuple[Membership, ...]
    ifindex: int


def _sockaddr(family: int, address: str) -> bytes:
    """A struct sockaddr_storage holding `address` (for struct group_source_req)."""
    if family == socket.AF_INET6:
        raw = struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, socket.inet_pton(family, address), 0)
    else:
        raw = struct.pack("=HH4s", socket.AF_INET, 0, socket.inet_aton(address))
    return raw.ljust(SOCKADDR_STORAGE, b"\0")


def memberships(endpoint: Endpoint) -> tuple[tuple[Membership, ...], int]:
    """The join requests for the endpoint (kernel struct layouts) and the interface index."""
    iface = endpoint.interface
    v6 = endpoint.family == socket.AF_INET6
    if iface is None:
        index = 0
    elif as_address(iface) is not None:
        index = ipv6_interface(iface)[0] if v6 else 0
    else:
        index = interface_index(iface)
    group = endpoint.group
    if v6 and endpoint.sources:
        # struct group_source_req { u32 interface; (pad) sockaddr_storage group, source; }
        # sockaddr_storage is aligned like a pointer: 4 bytes of padding on 64-bit systems.
        head = struct.pack("@I", index) + b"\0" * (struct.calcsize("@P") - 4)
        requests = tuple(
            head + _sockaddr(socket.AF_INET6, group) + _sockaddr(socket.AF_INET6, source)
            for source in endpoint.sources
        )
        return tuple(
            Membership(socket.IPPROTO_IPV6, MCAST_LEAVE_SOURCE_GROUP, r) for r in requests
        ), index
    if v6:
        # struct ipv6_mreq { in6_addr multiaddr; unsigned int ifindex; }: 20 bytes
        request = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", index)
        return (Membership(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, request),), index
    if iface is None:
        local = ANY_INTERFACE
    elif as_address(iface) is not None:
        local = iface
    else:
        local = ipv4_interface_address(iface) if endpoint.sources else ANY_INTERFACE
    if endpoint.sources:
        # struct ip_mreq_source { in_addr multiaddr, interface, sourceaddr; } (Linux order)
        return tuple(
            Membership(
                socket.IPPROTO_IP,
                IP_DROP_SOURCE_MEMBERSHIP,
                socket.inet_aton(group) + socket.inet_aton(local) + socket.inet_aton(source),
            )
            for source in endpoint.sources
        ), index
    # struct ip_mreqn { in_addr multiaddr; in_addr address; int ifindex; }: 12 bytes
    request = socket.inet_aton(group) + socket.inet_aton(local) + struct.pack("@i", index)
    return (Membership(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, request),), index


JOIN_OPTION = {
    socket.IP_DROP_MEMBERSHIP: socket.IP_ADD_MEMBERSHIP,
    IP_DROP_SOURCE_MEMBERSHIP: IP_ADD_SOURCE_MEMBERSHIP,
    socket.IPV6_LEAVE_GROUP: socket.IPV6_JOIN_GROUP,
    MCAST_LEAVE_SOURCE_GROUP: MCAST_JOIN_SOURCE_GROUP,
}


def _explain(stage: str, code: int, endpoint: Endpoint) -> str:
    """A message an operator can act on, chosen by where we were and what the kernel said."""
    if code == errno.EADDRINUSE:
        return "address already in use (another mcastd, or another program, serves this port)"
    if code == errno.EACCES and stage == "bind":
        return f"permission denied: port {endpoint.port} < 1024 needs CAP_NET_BIND_SERVICE"
    if code == errno.ENOBUFS and stage == "join":
        return (
            "too many group memberships or sources "
            "(net.ipv4.igmp_max_memberships / igmp_max_msf, net.ipv6.mld_max_msf)"
        )
    if code == errno.ENODEV and stage == "join":
        if endpoint.interface:
            return f"cannot join on interface {endpoint.interface}: it is down or has no address"
        # The kernel picks the interface of a join without one by routing the group: IPv4
        # looks in the main table, IPv6 in any (each multicast-capable interface that is up
        # adds ff00::/8 to table local; with none, e.g. only lo, there is no route).
        if endpoint.family == socket.AF_INET6:
            route = "ip -6 route add ff00::/8 dev IF"
        else:
            route = "ip route add 224.0.0.0/4 dev IF"
        return f"no route for multicast: add one ({route}) or set interface:"
    if code == errno.EADDRNOTAVAIL and stage == "join" and endpoint.interface:
        return f"cannot join on interface {endpoint.interface}: no such local address"
    if code == errno.EAFNOSUPPORT:
        return "IPv6 is not available on this host"
    if code in (errno.EMFILE, errno.ENFILE):
        return TOO_MANY_FILES
    if code == errno.EADDRNOTAVAIL and stage == "bind":
        return "cannot bind to this group address (a link-local group needs its interface named)"
    return f"{stage} failed: {strerror(code)}"


# Descriptors the daemon needs besides one socket per group: the signal wake-up pipe, epoll,
# the control socket and its clients, sd_notify's per-message socket, the journal.
DESCRIPTOR_HEADROOM = 16
TOO_MANY_FILES = "too many open files: raise LimitNOFILE= (or ulimit -n) for this many groups"


def check_descriptors(groups: int, fd_dir: str = "/proc/self/fd") -> None:
    """Fail before opening anything if `groups` sockets would not fit under RLIMIT_NOFILE.

    Running out half-way would leave no descriptor for READY=1 or the event loop itself.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        in_use = len(os.listdir(fd_dir))
    except OSError:
        in_use = 3  # stdin, stdout, stderr
    needed = in_use + groups + DESCRIPTOR_HEADROOM
    if needed > soft:
        raise SocketSetupError(
            "open files",
            errno.EMFILE,
            f"{TOO_MANY_FILES}: {groups} groups need about {needed}, the limit is {soft}",
        )


def setup_error(where: str, error: OSError) -> SocketSetupError:
    """An OSError from setting up something other than a group socket, explained."""
    code = error.errno or errno.EINVAL
    message = TOO_MANY_FILES if code in (errno.EMFILE, errno.ENFILE) else strerror(code)
    return SocketSetupError(where, code, message)


def _join(sock: socket.socket, joined: Iterable[Membership]) -> None:
    for m in joined:
        sock.setsockopt(m.level, JOIN_OPTION[m.leave_option], m.request)


def open_group_socket(endpoint: Endpoint) -> GroupSocket:
    """A non-blocking socket bound to (group, port), joined, with the reply hop limits set."""
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
        joined, index = memberships(endpoint)
        stage = "bind"
        if v6:
            sock.bind((endpoint.group, endpoint.port, 0, index))
        else:
            sock.bind((endpoint.group, endpoint.port))
        stage = "join"
        _join(sock, joined)
        stage = "set TTL"
        apply_ttl(sock, endpoint)
        apply_interface(sock, endpoint, index)
    except SocketSetupError as e:
        if sock is not None:
            sock.close()
        raise SocketSetupError(f"{endpoint}: {e.where}", e.errno, e.message) from e
    except OSError as e:
        if sock is not None:
            sock.close()  # closing also drops whatever was joined before the failure
        code = e.errno or errno.EINVAL
        raise SocketSetupError(str(endpoint), code, _explain(stage, code, endpoint)) from e
    return GroupSocket(sock, joined, index)


# IP_TTL / IPV6_UNICAST_HOPS: -1 puts a socket back on the system default
# (net.ipv4.ip_default_ttl, the interface's IPv6 hop_limit), e.g. when a reload removes
# unicast_ttl; a new socket starts there anyway.
SYSTEM_DEFAULT_TTL = -1


def apply_ttl(sock: socket.socket, endpoint: Endpoint) -> None:
    """The hop limits of replies: `ttl` for group replies (as upstream's TTL), `unicast_ttl`
    for unicast ones, else the system default so that they cross routers (as upstream's do)."""
    unicast_ttl = SYSTEM_DEFAULT_TTL if endpoint.unicast_ttl is None else endpoint.unicast_ttl
    set_multicast_ttl(sock, endpoint.ttl)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, unicast_ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, unicast_ttl)


def set_multicast_ttl(sock: socket.socket, ttl: int) -> None:
    """The TTL / hop limit of what the socket sends to a group."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)


def apply_interface(sock: socket.socket, endpoint: Endpoint, index: int) -> None:
    """Send group replies out of the interface we joined on (the kernel's choice if none)."""
    if endpoint.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        return
    iface = endpoint.interface
    local = iface if iface is not None and as_address(iface) is not None else ANY_INTERFACE
    # A whole struct ip_mreqn (12 bytes; its group field is ignored): given only 8 bytes the
    # kernel reads a struct ip_mreq and would take the index for an address.
    request = bytes(4) + socket.inet_aton(local) + struct.pack("@i", index)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, request)


def bound_to_interface(endpoint: Endpoint) -> bool:
    """True for IPv6 groups of interface- or link-local scope (ff01::, ff02::, ff12:: ...).

    Their socket is bound with the interface index as scope id, so it serves that interface
    index only: another interface, or the same one re-created, needs a new socket.
    """
    if endpoint.family != socket.AF_INET6:
        return False
    return ipaddress.IPv6Address(endpoint.group).packed[1] & 0x0F in (1, 2)


def rejoin(group_socket: GroupSocket, endpoint: Endpoint) -> GroupSocket:
    """Join the endpoint's group(s) on its interface as it is now; leave the old ones first.

    For a changed interface on reload, and when an interface came back or was re-created.
    (Not for a group that is `bound_to_interface` on another index: that needs a new socket.)
    """
    joined, index = memberships(endpoint)
    leave(group_socket)
    try:
        _join(group_socket.sock, joined)
        apply_interface(group_socket.sock, endpoint, index)
    except OSError as e:
        code = e.errno or errno.EINVAL
        raise SocketSetupError(str(endpoint), code, _explain("join", code, endpoint)) from e
    return GroupSocket(group_socket.sock, joined, index)


def leave(group_socket: GroupSocket) -> None:
    """Drop the memberships; closing would too, but leaving first sends the report at once."""
    for m in group_socket.memberships:
        # If the interface went away, the kernel has already dropped the membership.
        with contextlib.suppress(OSError):
            group_socket.sock.setsockopt(m.level, m.leave_option, m.request)


def close_group_socket(group_socket: GroupSocket) -> None:
    leave(group_socket)
    group_socket.sock.close()
