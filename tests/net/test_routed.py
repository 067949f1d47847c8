"""Replies across a real multicast router: client -- router -- responder, IPv4 and IPv6.

Three namespaces on two subnets (tests/hosts.py `routed()`); smcrouted in the router
namespace forwards the group both ways with static `mroute` lines and the kernel forwards
unicast. A datagram crosses the router only with a TTL / hop limit of 2 or more and arrives
with one less, so the TTL a reply arrives with shows the hops it made.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.hosts import (
    PORT,
    Daemons,
    Host,
    Routed,
    answered_within,
    enable_ttl,
    replies,
    routed,
    run,
    upstream_hear,
)
from tests.netns import Daemon

pytestmark = pytest.mark.net

GROUP4, GROUP6 = "239.0.0.9", "ff05::9"
GROUPS = [pytest.param(GROUP4, id="ipv4"), pytest.param(GROUP6, id="ipv6")]
COUNT = 10


class Site(NamedTuple):
    net: Routed
    daemons: Daemons


@pytest.fixture
def site() -> Iterator[Site]:
    with routed((GROUP4, GROUP6)) as net:
        daemons = Daemons()
        try:
            yield Site(net, daemons)
        finally:
            daemons.close()


def family_of(group: str) -> int:
    return socket.AF_INET6 if ":" in group else socket.AF_INET


def default_ttl(host: Host, group: str) -> int:
    """The hop limit the host gives a unicast datagram when the socket sets none."""
    key = "net.ipv6.conf.eth0.hop_limit" if ":" in group else "net.ipv4.ip_default_ttl"
    return int(run(host, ["sysctl", "-n", key]).stdout)


def ask(client: socket.socket, group: str) -> list[tuple[bytes, str, int | None]]:
    """Send COUNT numbered datagrams to the group; the replies that come back (text, sender,
    received TTL)."""
    enable_ttl(client)
    for n in range(COUNT):
        client.sendto(b"routed %d" % n, (group, PORT))
    return replies(client)


def address(host: Host, group: str) -> str | None:
    """The host's address of the group's family."""
    return host.v6 if ":" in group else host.v4


def answered(site: Site, daemon: Daemon, group: str) -> object:
    """The daemon's `answered` counter for the group, from `mcastd status --json`."""
    return site.daemons.status(daemon)[(group, PORT)]["answered"]


@pytest.mark.parametrize("group", GROUPS)
def test_a_client_behind_a_router_gets_every_reply(site: Site, group: str) -> None:
    net = site.net
    daemon = site.daemons.start(net.responder, f"groups: ['{group}']\n")  # only the group
    client = net.client.client(family_of(group), ttl=2)
    got = ask(client, group)
    texts = sorted(data for data, _, _ in got)
    assert texts == sorted(
        f"HEAR [ ROUTED {n} SAID ('{client.getsockname()[0]}', {client.getsockname()[1]}) ] "
        f"from {group}".encode()
        for n in range(COUNT)
    )
    # Unicast replies leave with the system default and lose one per router on the way.
    assert {(sender, ttl) for _, sender, ttl in got} == {
        (address(net.responder, group), default_ttl(net.responder, group) - 1)
    }
    assert answered(site, daemon, group) == COUNT


@pytest.mark.parametrize("group", GROUPS)
def test_a_query_with_ttl_1_does_not_reach_a_responder_behind_the_router(
    site: Site, group: str
) -> None:
    daemon = site.daemons.start(site.net.responder, f"groups: ['{group}']\n")
    client = site.net.client.client(family_of(group), ttl=1)
    assert ask(client, group) == []
    assert answered(site, daemon, group) == 0


@pytest.mark.parametrize("group", GROUPS)
def test_unicast_ttl_bounds_unicast_replies(site: Site, group: str) -> None:
    net = site.net
    near = site.daemons.start(net.responder, f"unicast_ttl: 1\ngroups: ['{group}']\n")
    second = net.add_responder()
    far = site.daemons.start(second, f"unicast_ttl: 5\ngroups: ['{group}']\n")
    got = ask(net.client.client(family_of(group), ttl=2), group)
    # unicast_ttl 1 expires at the router; 5 arrives with 4.
    assert [(sender, ttl) for _, sender, ttl in got] == [(address(second, group), 4)] * COUNT
    assert answered(site, near, group) == answered(site, far, group) == COUNT


@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize(("ttl", "crossing"), [(1, 0), (2, COUNT), (3, COUNT)])
def test_ttl_bounds_group_replies(site: Site, group: str, ttl: int, crossing: int) -> None:
    net = site.net
    daemon = site.daemons.start(
        net.responder, f"groups:\n  - group: '{group}'\n    reply: group\n    ttl: {ttl}\n"
    )
    member = net.client.member(group)  # the client's side joins; the router forwards back
    enable_ttl(member)
    client = net.client.client(family_of(group), ttl=2)
    for n in range(COUNT):
        client.sendto(b"to all %d" % n, (group, PORT))
    # Not the client's own queries, looped back to its member socket.
    heard = [(sender, hops) for data, sender, hops in replies(member) if data.startswith(b"HEAR")]
    assert heard == [(address(net.responder, group), ttl - 1)] * crossing
    # The responder answered every query: a group reply with ttl 1 stopped at the router.
    assert answered(site, daemon, group) == COUNT


def test_upstream_hear_replies_cross_the_router_with_the_same_ttl(site: Site) -> None:
    """Upstream multicast 2.1.1 sets only the multicast TTL, so its unicast replies cross."""
    net = site.net
    upstream = upstream_hear(net.responder, GROUP4)
    try:
        client = net.client.client(ttl=2)
        assert answered_within(client, GROUP4, 10.0), "upstream HEAR never answered"
        enable_ttl(client)
        # One at a time: upstream re-opens its socket after each datagram and loses the next.
        got = []
        for n in range(COUNT):
            client.sendto(b"upstream %d" % n, (GROUP4, PORT))
            got += replies(client, quiet=0.3)
        assert got, "no reply from upstream HEAR"
        assert {(sender, ttl) for _, sender, ttl in got} == {
            (address(net.responder, GROUP4), default_ttl(net.responder, GROUP4) - 1)
        }
    finally:
        upstream.kill()
        upstream.wait()
