"""net: finished sockets from a real kernel in a namespace; errors explained by errno."""

from __future__ import annotations

import resource
import select
import socket
import struct
from pathlib import Path

import pytest

from mcastd import net
from mcastd.config import Endpoint, Settings
from mcastd.errors import SocketSetupError
from tests.netns import NetNS

pytestmark = pytest.mark.net
PORT = 59259


def endpoint(group: str, port: int = PORT, **settings: object) -> Endpoint:
    return Endpoint(group, port, Settings(**settings))  # type: ignore[arg-type]


def hears(netns: NetNS, group_socket: net.GroupSocket, group: str, family: int) -> bool:
    """Whether a datagram sent to the group in the namespace reaches the socket."""
    client = netns.socket(family)
    try:
        if family == socket.AF_INET6:
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, group_socket.ifindex)
        client.sendto(b"ping", (group, PORT))
        ready, _, _ = select.select([group_socket.sock], [], [], 2.0)
        return bool(ready) and group_socket.sock.recv(100) == b"ping"
    finally:
        client.close()


def test_memberships_have_the_kernel_struct_sizes():
    (v4,), index = net.memberships(endpoint("239.0.0.9"))
    assert (len(v4.request), index) == (12, 0)  # struct ip_mreqn
    (v6,), _ = net.memberships(endpoint("ff05::9"))
    assert len(v6.request) == 20  # struct ipv6_mreq
    ssm = Endpoint("232.1.1.1", PORT, Settings(), ("192.0.2.1", "192.0.2.2"))
    requests, _ = net.memberships(ssm)
    assert [len(m.request) for m in requests] == [12, 12]  # struct ip_mreq_source each
    ssm6 = Endpoint("ff3e::1", PORT, Settings(), ("2001:db8::1",))
    (request,), _ = net.memberships(ssm6)
    assert len(request.request) == struct.calcsize("@P") + 2 * net.SOCKADDR_STORAGE


@pytest.mark.parametrize(
    ("group", "bound"),
    [
        ("239.0.0.9", False),
        ("ff05::9", False),
        ("ff02::9", True),
        ("ff12::9", True),
        ("ff01::9", True),
    ],
)
def test_bound_to_interface_for_link_and_interface_local_ipv6(group: str, bound: bool):
    assert net.bound_to_interface(endpoint(group)) is bound


def test_ipv4_socket_is_joined_and_left(netns: NetNS):
    e = endpoint("239.0.0.9")
    with netns.entered():
        group_socket = net.open_group_socket(e)
    try:
        assert hears(netns, group_socket, "239.0.0.9", socket.AF_INET)
        assert group_socket.sock.getblocking() is False
        # IP_MULTICAST_ALL is off: a group joined by another socket on the same port is not ours
        assert group_socket.sock.getsockopt(socket.IPPROTO_IP, net.IP_MULTICAST_ALL) == 0
        with netns.entered():
            other = net.open_group_socket(endpoint("239.0.0.10"))
        assert not hears(netns, group_socket, "239.0.0.10", socket.AF_INET)
        net.close_group_socket(other)
        net.leave(group_socket)
        assert not hears(netns, group_socket, "239.0.0.9", socket.AF_INET)
        group_socket = net.rejoin(group_socket, e)
        assert hears(netns, group_socket, "239.0.0.9", socket.AF_INET)
    finally:
        net.close_group_socket(group_socket)
    assert group_socket.sock.fileno() == -1


def test_a_port_in_use_is_said_so(netns: NetNS):
    e = endpoint("239.0.0.9")
    with netns.entered():
        first = net.open_group_socket(e)
        try:
            with pytest.raises(SocketSetupError) as caught:
                net.open_group_socket(e)
        finally:
            net.close_group_socket(first)
    assert str(caught.value) == (
        "239.0.0.9:59259: address already in use "
        "(another mcastd, or another program, serves this port)"
    )


@pytest.mark.parametrize(
    ("group", "routes", "hint", "link"),
    [
        (
            "239.0.0.9",
            [("route", "del", "224.0.0.0/4", "dev", "lo")],
            "ip route add 224.0.0.0/4 dev IF",
            "lo",
        ),
        # Each multicast-capable interface that is up routes ff00::/8 in table local; without
        # those routes (as on a host with only lo) an IPv6 join that names no interface fails.
        (
            "ff05::9",
            [
                ("-6", "route", "del", "multicast", "ff00::/8", "dev", link, "table", "local")
                for link in ("v6a", "v6b")
            ],
            "ip -6 route add ff00::/8 dev IF",
            "v6a",
        ),
    ],
)
def test_no_route_for_multicast_and_the_fix_it_names(
    netns: NetNS, group: str, routes: list[tuple[str, ...]], hint: str, link: str
):
    for route in routes:
        netns.ip(*route)
    e = endpoint(group)
    with netns.entered(), pytest.raises(SocketSetupError) as caught:
        net.open_group_socket(e)
    assert str(caught.value) == f"{e}: no route for multicast: add one ({hint}) or set interface:"
    netns.exec(*hint.replace("IF", link).split())  # the fix, as the message gives it
    with netns.entered():
        group_socket = net.open_group_socket(e)
    try:
        assert hears(netns, group_socket, group, e.family)
    finally:
        net.close_group_socket(group_socket)


def test_an_interface_that_is_not_there(netns: NetNS):
    with netns.entered(), pytest.raises(SocketSetupError) as caught:
        net.open_group_socket(endpoint("239.0.0.9", interface="eth7"))
    assert str(caught.value) == "239.0.0.9:59259: interface eth7: does not exist"


def test_check_descriptors_counts_open_files_against_the_limit(tmp_path: Path):
    for i in range(10):
        (tmp_path / str(i)).touch()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        net.check_descriptors(64 - 10 - net.DESCRIPTOR_HEADROOM, fd_dir=str(tmp_path))
        with pytest.raises(SocketSetupError) as caught:
            net.check_descriptors(64 - 10 - net.DESCRIPTOR_HEADROOM + 1, fd_dir=str(tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert caught.value.errno == 24
    assert str(caught.value).endswith("39 groups need about 65, the limit is 64")


def test_setup_error_explains_running_out_of_files():
    error = net.setup_error("event loop", OSError(24, "Too many open files"))
    assert str(error) == f"event loop: {net.TOO_MANY_FILES}"
