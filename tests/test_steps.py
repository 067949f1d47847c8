"""steps: reload plans and interface changes carried out on a real Server's parts, in a
network namespace of the test's own (real sockets, a real selector, real veth links)."""

from __future__ import annotations

import selectors
import socket

import pytest

from mcastd.config import Config, Endpoint, parse
from mcastd.errors import SocketSetupError
from mcastd.messages import MessageId
from mcastd.net import GroupSocket, open_group_socket
from mcastd.notify import Notifier
from mcastd.reload import Close, Open, Rejoin, Retune, Wait
from mcastd.server import Server
from mcastd.snapshot import EndpointState
from mcastd.steps import Opener, carry_out_plan, recover, reload_plan
from tests.logs import Records
from tests.netns import NetNS, netns_script

pytestmark = pytest.mark.net
PORT = 59259


def config(text: str) -> Config:
    return parse(text, "test.yaml")


def served(
    netns: NetNS, text: str, opener: Opener = open_group_socket
) -> tuple[Server, selectors.BaseSelector]:
    """A server that opened `text` in the namespace, its sockets in a selector (as `run`)."""
    server = Server(config(text), Notifier(lambda _: True), opener=opener)
    selector = selectors.DefaultSelector()
    with netns.entered():
        server.open()
    for channel in server.channels.values():
        selector.register(channel.group_socket.sock, selectors.EVENT_READ, channel)
    return server, selector


def registered(selector: selectors.BaseSelector) -> set[int]:
    return {key.fd for key in selector.get_map().values()}


def test_a_plan_is_carried_out_step_by_step_and_failures_are_named(netns: NetNS):
    server, selector = served(netns, "groups: [239.0.0.9, 239.0.0.10]\n")
    kept = server.channels[("239.0.0.9", PORT)].group_socket.sock
    dropped = server.channels[("239.0.0.10", PORT)].group_socket.sock
    new = config(
        "groups:\n  - group: 239.0.0.9\n    ttl: 3\n  - 239.0.0.11\n"
        "  - group: 239.0.0.12\n    interface: nope0\n"
    )
    try:
        with netns.entered():
            changes = reload_plan(server, new)
            assert [type(s) for s in changes] == [Close, Retune, Open, Open]
            server.config = new
            errors = carry_out_plan(server, changes, selector, 5.0)
        assert errors == [f"239.0.0.12:{PORT}: interface nope0: does not exist"]
        assert sorted(server.channels) == [("239.0.0.11", PORT), ("239.0.0.9", PORT)]
        assert server.channels[("239.0.0.9", PORT)].group_socket.sock is kept
        assert kept.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL) == 3
        assert dropped.fileno() == -1
        assert registered(selector) == {
            c.group_socket.sock.fileno() for c in server.channels.values()
        }
        (failing,) = server.backlog
        assert (failing.endpoint.key, failing.state) == (
            ("239.0.0.12", PORT),
            EndpointState.FAILING,
        )
        assert failing.tried == 5.0
    finally:
        server.close()
        selector.close()


def test_a_group_given_up_while_waiting_is_forgotten(netns: NetNS):
    text = "interface: mc9x\nwait_for_interface: true\ngroups: [239.0.0.9]\n"
    server, selector = served(netns, text)
    try:
        assert list(server.backlog.endpoints()) == [("239.0.0.9", PORT)]
        new = config(text.replace("239.0.0.9", "239.0.0.10"))
        with netns.entered():
            changes = reload_plan(server, new)
            assert [type(s) for s in changes] == [Close, Wait]
            server.config = new
            assert carry_out_plan(server, changes, selector, 0.0) == []
        assert list(server.backlog.endpoints()) == [("239.0.0.10", PORT)]
        assert server.channels == {}
    finally:
        server.close()
        selector.close()


def veth(netns: NetNS) -> None:
    netns_script("veth", netns.name, "mc9a", netns.name, "mc9b")


def test_a_rejoin_on_another_interface_keeps_the_socket(netns: NetNS):
    veth(netns)
    server, selector = served(netns, "groups: [239.0.0.9]\n")
    channel = server.channels[("239.0.0.9", PORT)]
    sock = channel.group_socket.sock
    new = config("interface: mc9a\ngroups: [239.0.0.9]\n")
    try:
        with netns.entered():
            changes = reload_plan(server, new)
            assert [type(s) for s in changes] == [Rejoin]
            server.config = new
            assert carry_out_plan(server, changes, selector, 0.0) == []
            index = socket.if_nametoindex("mc9a")
        assert channel.group_socket.sock is sock
        assert channel.group_socket.ifindex == index
        assert channel.link is not None
        assert channel.link.ifindex == index
    finally:
        server.close()
        selector.close()


def test_a_link_local_group_gets_a_new_socket_on_a_recreated_interface(
    netns: NetNS, journal: Records
):
    veth(netns)
    server, selector = served(netns, "interface: mc9a\ngroups: [ff02::9]\n")
    channel = server.channels[("ff02::9", PORT)]
    old = channel.group_socket.sock
    try:
        netns.ip("link", "del", "mc9a")
        with netns.entered():
            recover(server, selector, 0.0)  # gone: said, nothing else to do
        veth(netns)
        with netns.entered():
            recover(server, selector, 0.0)  # back with another index: a new socket
            index = socket.if_nametoindex("mc9a")
        assert old.fileno() == -1
        assert channel.group_socket.ifindex == index
        assert registered(selector) == {channel.group_socket.sock.fileno()}
    finally:
        server.close()
        selector.close()
    assert journal.with_id(MessageId.INTERFACE_LOST) == [
        f"[ff02::9]:{PORT}: interface mc9a went away"
    ]
    assert journal.with_id(MessageId.GROUP_JOINED)[-1].endswith("): re-joined")


def test_a_new_socket_that_cannot_be_opened_puts_the_group_back_to_waiting(
    netns: NetNS, journal: Records
):
    opened: list[GroupSocket] = []

    def opener(endpoint: Endpoint) -> GroupSocket:
        if opened:  # the replacement: the port is taken meanwhile, say
            raise SocketSetupError(str(endpoint), 98, "address already in use")
        opened.append(open_group_socket(endpoint))
        return opened[-1]

    veth(netns)
    server, selector = served(netns, "interface: mc9a\ngroups: [ff02::9]\n", opener)
    try:
        netns.ip("link", "del", "mc9a")
        veth(netns)  # re-created between two polls: an Up with another index
        with netns.entered():
            recover(server, selector, 0.0)
        assert server.channels == {}
        assert registered(selector) == set()
        (waiting,) = server.backlog
        assert (waiting.endpoint.key, waiting.state) == (("ff02::9", PORT), EndpointState.WAITING)
    finally:
        server.close()
        selector.close()
    assert f"[ff02::9]:{PORT}: re-joining failed: address already in use" in journal.messages
