"""A service that survives one bad group: what can be served is, the rest is retried.

The host is a namespace with only `lo`: IPv4 multicast is routed to it, IPv6 multicast has
no route at all (as on a host or container without IPv6 links), so an IPv6 group fails with
"no route for multicast" until the test adds a veth pair, which brings the ff00::/8 routes.
"""

from __future__ import annotations

import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from mcastd.config import Endpoint, parse
from mcastd.messages import MessageId
from mcastd.net import GroupSocket, open_group_socket
from mcastd.notify import Notifier
from mcastd.retry import RETRY_SECONDS
from mcastd.server import Server
from tests.hosts import PORT, Daemons, Host, answered_within
from tests.logs import recording
from tests.netns import Daemon, ask, mcastd_argv, netns_script

pytestmark = pytest.mark.net

ULA = "fd08::1"
FAILING_LINE = "not served, trying again every"


class Bare(NamedTuple):
    host: Host
    daemons: Daemons


@pytest.fixture
def bare() -> Iterator[Bare]:
    host = Host("partial")
    daemons = Daemons()
    try:
        host.ip("route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
        yield Bare(host, daemons)
    finally:
        daemons.close()
        host.delete()


def add_ipv6_link(host: Host) -> None:
    """A veth pair, up: the kernel adds its ff00::/8 routes, and IPv6 groups can be joined."""
    netns_script("veth", host.name, "v6a", host.name, "v6b")
    host.ip("addr", "add", f"{ULA}/64", "dev", "v6a", "nodad")


def six_client(host: Host) -> socket.socket:
    sock = host.socket(socket.AF_INET6)
    sock.bind((ULA, 0))
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, host.index("v6a"))
    return sock


def states(found: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    return {e["group"]: (e["state"], e["error"]) for e in found["endpoints"]}


def failing_lines(daemon: Daemon) -> list[str]:
    return [line for line in daemon.stderr.splitlines() if FAILING_LINE in line]


NO_ROUTE = "no route for multicast"
NOT_SERVED = "[ff05::9]:59259 not served, trying again every 2 s: no route for multicast"


def test_a_group_that_cannot_be_joined_is_served_once_it_can(bare: Bare):
    daemon = bare.daemons.start(bare.host, "groups: [239.0.0.9, ff05::9]\n", ready=False)
    ready = daemon.wait_for("READY=1")
    assert "STATUS=1 group, 0 heard, 0 answered, 0 dropped; 1 of 2 groups failing" in ready
    found = states(bare.daemons.document(daemon))
    assert found["239.0.0.9"] == ("serving", None)
    state, error = found["ff05::9"]
    assert state == "failing"
    assert error is not None
    assert error.startswith(NO_ROUTE)
    # The IPv4 group is answered meanwhile.
    client = bare.host.socket()
    client.bind(("127.0.0.1", 0))
    data, _ = ask(client, b"still here", "239.0.0.9", PORT)
    assert data.startswith(b"HEAR [ STILL HERE SAID")

    became_joinable = time.monotonic()
    add_ipv6_link(bare.host)
    assert answered_within(six_client(bare.host), "ff05::9", 5.0)
    picked_up = time.monotonic() - became_joinable
    print(f"\nff05::9 picked up {picked_up:.2f} s after its route appeared")  # for the notes
    assert "STATUS=2 groups, 1 heard" in daemon.wait_for("STATUS=2 groups")
    found = states(bare.daemons.document(daemon))
    assert found == {"239.0.0.9": ("serving", None), "ff05::9": ("serving", None)}
    # Said once when it failed (not at every retry), then joined as any group is.
    (line,) = failing_lines(daemon)
    assert NOT_SERVED in line
    assert "[ff05::9]:59259 joined on the kernel's choice of interface" in daemon.stderr


def test_a_missing_interface_is_served_once_it_appears(bare: Bare):
    config = "groups:\n  - 239.0.0.9\n  - group: 239.0.0.10\n    interface: mc2eth\n"
    daemon = bare.daemons.start(bare.host, config, ready=False)
    assert "; 1 of 2 groups failing" in daemon.wait_for("READY=1")
    found = states(bare.daemons.document(daemon))
    assert found["239.0.0.10"] == ("failing", "interface mc2eth: does not exist")
    bare.host.ip("link", "add", "mc2eth", "type", "veth", "peer", "name", "mc2peer")
    bare.host.ip("addr", "add", "192.0.2.1/24", "dev", "mc2eth")
    for link in ("mc2eth", "mc2peer"):
        bare.host.ip("link", "set", link, "up")
    client = bare.host.socket()
    client.bind(("192.0.2.1", 0))
    client.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("192.0.2.1"))
    assert answered_within(client, "239.0.0.10", 5.0)
    assert states(bare.daemons.document(daemon))["239.0.0.10"] == ("serving", None)


def test_a_port_in_use_is_still_fatal_at_start(bare: Bare):
    blocker = bare.host.socket()
    blocker.bind(("239.0.0.10", PORT))  # another program has this (group, port)
    config = "groups: [239.0.0.9, 239.0.0.10, ff05::9]\n"
    daemon = bare.daemons.start(bare.host, config, ready=False)
    assert daemon.proc.wait(timeout=10) == 69
    assert "239.0.0.10:59259: address already in use" in daemon.stderr
    daemon.drain()  # all it sent is in `messages`, not only what the reader took so far
    assert "READY=1" not in "".join(daemon.messages)
    blocker.close()


def test_nothing_that_can_be_served_exits_69(bare: Bare):
    daemon = bare.daemons.start(bare.host, "groups: [ff05::9, ff05::10]\n", ready=False)
    assert daemon.proc.wait(timeout=10) == 69
    assert NO_ROUTE in daemon.stderr


def test_unless_it_waits_for_an_interface(bare: Bare):
    config = "wait_for_interface: true\ngroups: [ff05::9]\n"
    daemon = bare.daemons.start(bare.host, config, ready=False)
    assert "STATUS=0 groups, 0 heard, 0 answered, 0 dropped; 1 of 1 groups failing" in (
        daemon.wait_for("READY=1")
    )
    assert states(bare.daemons.document(daemon))["ff05::9"][0] == "failing"
    add_ipv6_link(bare.host)
    assert answered_within(six_client(bare.host), "ff05::9", 5.0)


def test_a_reload_that_adds_an_unjoinable_group_is_done_with_errors(bare: Bare):
    daemon = bare.daemons.start(bare.host, "groups: [239.0.0.9]\n")
    daemon.config_path.write_text("groups: [239.0.0.9, ff05::9]\n")
    daemon.signal(signal.SIGHUP)
    assert "STATUS=1 group, 0 heard, 0 answered, 0 dropped; 1 of 2 groups failing" in (
        daemon.wait_for("READY=1")
    )
    found = bare.daemons.document(daemon)
    reload = found["last_reload"]
    assert reload["ok"] is True  # in force: the new config is served as far as it can be
    (error,) = reload["errors"]  # named: the group and why
    assert error.startswith(f"[ff05::9]:59259: {NO_ROUTE}")
    assert states(found)["ff05::9"] == ("failing", error.removeprefix("[ff05::9]:59259: "))
    table = subprocess.run(
        mcastd_argv("status", "--socket", str(daemon.control_socket)),
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    assert table.splitlines()[0].endswith(" ago: done with 1 error")
    assert f"    [ff05::9]:59259: failing: {error.removeprefix('[ff05::9]:59259: ')}" in (
        table.splitlines()
    )
    add_ipv6_link(bare.host)
    assert answered_within(six_client(bare.host), "ff05::9", 5.0)
    assert daemon.proc.poll() is None


def test_a_port_in_use_at_reload_is_not_retried_until_the_next_reload(bare: Bare):
    daemon = bare.daemons.start(bare.host, "groups: [239.0.0.9]\n")
    blocker = bare.host.socket()
    blocker.bind(("239.0.0.10", PORT))
    daemon.config_path.write_text("groups: [239.0.0.9, 239.0.0.10]\n")
    daemon.signal(signal.SIGHUP)
    assert "; 1 of 2 groups failing" in daemon.wait_for("READY=1")
    found = bare.daemons.document(daemon)
    assert found["last_reload"]["errors"] == [
        "239.0.0.10:59259: address already in use "
        "(another mcastd, or another program, serves this port)"
    ]
    assert states(found)["239.0.0.10"][0] == "failing"
    assert "239.0.0.10:59259 not served, not tried again until a reload or restart" in (
        daemon.stderr
    )
    blocker.close()  # freed: the next reload takes it
    daemon.signal(signal.SIGHUP)
    assert "STATUS=2 groups, 0 heard" in daemon.wait_for("READY=1")
    found = bare.daemons.document(daemon)
    assert found["last_reload"] == {**found["last_reload"], "ok": True, "errors": []}
    assert states(found)["239.0.0.10"] == ("serving", None)


def test_retries_are_due_every_few_seconds_and_said_once(bare: Bare):
    """In this process, with a clock the test moves: no waiting for real seconds."""
    moment = [1000.0]
    tries: list[str] = []

    def opener(endpoint: Endpoint) -> GroupSocket:  # the real one, counting its calls
        tries.append(endpoint.group)
        return open_group_socket(endpoint)

    text = "groups: [239.0.0.9, ff05::9]\n"
    server = Server(
        parse(text, "test.yaml"), Notifier(lambda _: True), clock=lambda: moment[0], opener=opener
    )
    selector = selectors.DefaultSelector()
    try:
        with recording() as journal, bare.host.entered():
            server.open()
            assert sorted(tries) == ["239.0.0.9", "ff05::9"]
            for step in (0.5, 1.0, RETRY_SECONDS, RETRY_SECONDS + 0.5, 2 * RETRY_SECONDS):
                moment[0] = 1000.0 + step
                server.recover(selector, moment[0])
            # due at +RETRY_SECONDS and (counted from there) at +2 * RETRY_SECONDS only
            assert tries.count("ff05::9") == 3
            assert list(server.channels) == [("239.0.0.9", PORT)]
            add_ipv6_link(bare.host)
            moment[0] += RETRY_SECONDS
            server.recover(selector, moment[0])
            assert sorted(server.channels) == [("239.0.0.9", PORT), ("ff05::9", PORT)]
            assert len(server.backlog) == 0
            assert server.status_line() == "2 groups, 0 heard, 0 answered, 0 dropped"
    finally:
        server.close()
        selector.close()
    (failing,) = journal.with_id(MessageId.GROUP_FAILING)
    assert failing.startswith(
        f"[ff05::9]:59259 not served, trying again every {RETRY_SECONDS:g} s: {NO_ROUTE}"
    )
    joined = journal.with_id(MessageId.GROUP_JOINED)
    assert [line.split()[0] for line in joined] == ["239.0.0.9:59259", "[ff05::9]:59259"]
