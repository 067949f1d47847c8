"""Interface churn on the daemon's host: down/up, address gone and back, interface deleted and
re-created, interface created after start. Each time the client is answered again within 2 s.

Two hosts on a bridge (tests/hosts.py); only the daemon host's interface changes, so what is
measured is the daemon following its interface, not the client's routes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.hosts import Daemons, Host, Segment, answered_within
from tests.netns import Daemon

pytestmark = pytest.mark.net

GROUPS = {socket.AF_INET: "239.77.0.1", socket.AF_INET6: "ff05::77"}
FAMILIES = pytest.mark.parametrize(
    "family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"]
)
# The behaviour asked for: after the interface is back, answered again within this.
AGAIN_WITHIN = 2.0


class Pair(NamedTuple):
    segment: Segment
    server: Host
    client: Host
    daemons: Daemons


@pytest.fixture
def pair() -> Iterator[Pair]:
    segment = Segment()
    daemons = Daemons()
    try:
        server = segment.add("server", 1)
        client = segment.add("client", 10)
        yield Pair(segment, server, client, daemons)
    finally:
        daemons.close()
        segment.delete()


def logged(daemon: Daemon, text: str, within: float = 5.0) -> bool:
    """Whether `text` appears in the daemon's log within `within` seconds (it polls once a
    second, so this is how long it may take to notice)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in daemon.stderr:
            return True
        time.sleep(0.05)
    return text in daemon.stderr


def start(pair: Pair, interface: str, extra: str = "") -> Daemon:
    groups = ", ".join(GROUPS.values())
    return pair.daemons.start(pair.server, f"interface: {interface}\n{extra}groups: [{groups}]\n")


def client(pair: Pair, family: int) -> socket.socket:
    return pair.client.client(family)


@FAMILIES
def test_link_down_and_up(pair: Pair, family: int):
    daemon = start(pair, "eth0")
    sock = client(pair, family)
    group = GROUPS[family]
    assert answered_within(sock, group, AGAIN_WITHIN)
    pair.server.ip("link", "set", "eth0", "down")
    assert logged(daemon, "interface eth0 is down")
    pair.server.ip("link", "set", "eth0", "up")
    assert answered_within(sock, group, AGAIN_WITHIN)
    assert logged(daemon, "interface eth0 is up")
    assert "re-joined" in daemon.stderr
    assert daemon.proc.poll() is None


@FAMILIES
def test_address_removed_and_added_again(pair: Pair, family: int):
    """The interface named by name: it stays, only its address goes."""
    daemon = start(pair, "eth0")
    sock = client(pair, family)
    group = GROUPS[family]
    assert answered_within(sock, group, AGAIN_WITHIN)
    v6 = family == socket.AF_INET6
    prefix = f"{pair.server.v6}/64" if v6 else f"{pair.server.v4}/24"
    pair.server.ip("addr", "del", prefix, "dev", "eth0")
    assert not answered_within(sock, group, 0.5)  # no address, no reply
    pair.server.ip("addr", "add", prefix, "dev", "eth0", *(["nodad"] if v6 else []))
    assert answered_within(sock, group, AGAIN_WITHIN)
    assert daemon.proc.poll() is None


@FAMILIES
def test_interface_named_by_its_address_loses_and_regains_it(pair: Pair, family: int):
    v6 = family == socket.AF_INET6
    address = str(pair.server.v6 if v6 else pair.server.v4)
    # One group per daemon: an interface address belongs to one family.
    daemon = pair.daemons.start(
        pair.server, f"interface: '{address}'\ngroups: [{GROUPS[family]}]\n"
    )
    sock = client(pair, family)
    group = GROUPS[family]
    assert answered_within(sock, group, AGAIN_WITHIN)
    prefix = f"{address}/64" if v6 else f"{address}/24"
    pair.server.ip("addr", "del", prefix, "dev", "eth0")
    assert logged(daemon, f"interface {address} went away")
    pair.server.ip("addr", "add", prefix, "dev", "eth0", *(["nodad"] if v6 else []))
    assert answered_within(sock, group, AGAIN_WITHIN)
    assert logged(daemon, "re-joined")
    assert daemon.proc.poll() is None


@pytest.mark.parametrize("group", ["239.77.0.1", "ff05::77", "ff02::1:77"])
def test_interface_deleted_and_created_again(pair: Pair, group: str):
    """ff02::1:77 is link-local in scope: its socket is bound to the interface's index."""
    daemon = pair.daemons.start(pair.server, f"interface: eth0\ngroups: ['{group}']\n")
    sock = client(pair, socket.AF_INET6 if ":" in group else socket.AF_INET)
    old_index = pair.server.index("eth0")
    assert answered_within(sock, group, AGAIN_WITHIN)
    pair.segment.unplug(pair.server)
    assert logged(daemon, "interface eth0 went away")
    pair.segment.plug(pair.server)  # a new eth0: same name, new index
    new_index = pair.server.index("eth0")
    assert new_index != old_index
    assert answered_within(sock, group, AGAIN_WITHIN)
    assert logged(daemon, f"interface eth0 is up (index {new_index}): re-joined")
    assert daemon.proc.poll() is None


@FAMILIES
def test_interface_created_after_start(family: int):
    segment = Segment()
    daemons = Daemons()
    try:
        server = segment.add("server", 1, plugged=False)  # no eth0 yet
        client = segment.add("client", 10)
        groups = ", ".join(GROUPS.values())
        config = f"interface: eth0\nwait_for_interface: true\ngroups: [{groups}]\n"
        daemon = daemons.start(server, config)
        assert "interface eth0 is not there: joining when it appears" in daemon.stderr
        sock = client.client(family)
        group = GROUPS[family]
        assert not answered_within(sock, group, 0.3)
        segment.plug(server)
        assert answered_within(sock, group, AGAIN_WITHIN)
        shown = f"[{group}]:59259" if family == socket.AF_INET6 else f"{group}:59259"
        assert logged(daemon, f"{shown} joined on eth0")
        assert daemon.proc.poll() is None
    finally:
        daemons.close()
        segment.delete()
