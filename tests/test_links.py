"""links: what a change of link state means (pure), and link state read from a real kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.config import Endpoint, Settings
from mcastd.errors import SocketSetupError
from mcastd.links import (
    ABSENT,
    Down,
    Gone,
    LinkState,
    Up,
    interface_name,
    ipv4_interface_address,
    ipv6_interface,
    link_state,
    must_wait,
    transition,
)
from tests.netns import NetNS

UP3, UP5, DOWN3 = LinkState(3, True), LinkState(5, True), LinkState(3, False)


@pytest.mark.parametrize(
    ("before", "after", "change"),
    [
        (UP3, UP3, None),
        (ABSENT, ABSENT, None),
        (DOWN3, DOWN3, None),
        (UP3, ABSENT, Gone()),
        (DOWN3, ABSENT, Gone()),
        (UP3, DOWN3, Down()),
        (DOWN3, UP3, Up(3)),
        (ABSENT, UP3, Up(3)),
        (ABSENT, LinkState(7, False), Down()),
        (UP3, UP5, Up(5)),  # re-created between two polls: join on the new index
    ],
)
def test_transition_table(before: LinkState, after: LinkState, change: object):
    assert transition(before, after) == change


states = st.builds(LinkState, st.integers(0, 4), st.booleans())


@given(states, states)
def test_transition_is_none_exactly_when_nothing_changed(before: LinkState, after: LinkState):
    change = transition(before, after)
    assert (change is None) == (before == after)
    if type(change) is Up:
        assert change.ifindex == after.ifindex != 0
        assert after.up


def on(interface: str | None, **settings: object) -> Endpoint:
    return Endpoint("239.0.0.9", 59259, Settings(interface=interface, **settings))  # type: ignore[arg-type]


def test_ipv6_interface_reads_the_kernel_table_format(tmp_path: Path):
    table = tmp_path / "if_inet6"
    table.write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "fd000000000000000000000000000007 0b 40 00 80     eth7\n"
    )
    assert ipv6_interface("fd00::7", str(table)) == (11, "eth7")
    with pytest.raises(SocketSetupError, match="no interface has this address"):
        ipv6_interface("fd00::8", str(table))
    with pytest.raises(SocketSetupError, match="no interface has this address"):
        ipv6_interface("fd00::7", str(tmp_path / "missing"))


@pytest.mark.net
def test_link_state_follows_a_real_interface(netns: NetNS):
    netns.ip("link", "add", "mc2dummy", "type", "veth", "peer", "name", "mc2peer")
    netns.ip("addr", "add", "192.0.2.5/24", "dev", "mc2dummy")
    with netns.entered():
        by_name, by_address = on("mc2dummy"), on("192.0.2.5")
        down = link_state(by_name)
        assert down.ifindex > 0
        assert not down.up
        assert interface_name(by_address) == "mc2dummy"
        assert ipv4_interface_address("mc2dummy") == "192.0.2.5"
    netns.ip("link", "set", "mc2dummy", "up")
    with netns.entered():
        assert link_state(by_name) == down  # up, but not running while its peer is down
    netns.ip("link", "set", "mc2peer", "up")
    with netns.entered():
        assert link_state(by_name) == LinkState(down.ifindex, True)
        assert link_state(by_address) == LinkState(down.ifindex, True)
        assert transition(down, link_state(by_name)) == Up(down.ifindex)
    netns.ip("link", "del", "mc2dummy")
    with netns.entered():
        assert link_state(by_name) == ABSENT
        assert interface_name(by_address) is None
        assert link_state(on(None)) == ABSENT  # no interface configured: nothing to follow
        assert must_wait(on("mc2dummy", wait_for_interface=True))
        assert not must_wait(on("mc2dummy"))
        assert not must_wait(on("lo", wait_for_interface=True))
        with pytest.raises(SocketSetupError, match="interface mc2dummy: does not exist"):
            ipv4_interface_address("mc2dummy")
