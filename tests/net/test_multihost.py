"""Four hosts on one bridged segment: two run mcastd, one is a client, one a stranger.

Every host is a network namespace made here (tests/hosts.py); the segment's addresses
(10.77.0.0/24, fd77::/64) exist only inside them.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.hosts import (
    PORT,
    Daemons,
    Host,
    balanced,
    enable_ttl,
    receive_with_ttl,
    replies,
    say,
    segment,
)

pytestmark = pytest.mark.net

GROUP4, GROUP6 = "239.77.0.1", "ff05::77"
SSM4, SSM6 = "232.77.0.1", "ff3e::77"


class Lan(NamedTuple):
    d1: Host
    d2: Host
    client: Host
    stranger: Host
    daemons: Daemons


@pytest.fixture
def lan() -> Iterator[Lan]:
    with segment(("d1", 1), ("d2", 2), ("client", 10), ("stranger", 66)) as hosts:
        daemons = Daemons()
        try:
            yield Lan(*hosts, daemons)
        finally:
            daemons.close()


def hear(text: str, host: Host, port: int, group: str, v6: bool) -> str:
    source = host.v6 if v6 else host.v4
    return f"HEAR [ {text} SAID ('{source}', {port}) ] from {group}"


def say_lines(host: Host, group: str, *words: str) -> tuple[int, list[str]]:
    """`mcastd say` on `host` to `group`: exit code and the printed lines, sorted."""
    extra = ["--interface", "eth0"] if ":" in group else []
    out = say(host, "--group", group, *extra, *words)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, sorted(out.stdout.splitlines())


def sender_of(host: Host, v6: bool) -> str:
    return f"[{host.v6}]:{PORT}" if v6 else f"{host.v4}:{PORT}"


@pytest.mark.parametrize("group", [GROUP4, GROUP6])
def test_both_hosts_answer_one_request(lan: Lan, group: str):
    for host in (lan.d1, lan.d2):
        lan.daemons.start(host, f"groups: [{group}]\n")
    code, lines = say_lines(lan.client, group, "hello", "segment")
    assert code == 0
    assert len(lines) == 2, lines
    v6 = ":" in group
    # `say` prints `<sender> <reply>`; the reply quotes the client's ephemeral port.
    senders = sorted(line.split(" ", 1)[0] for line in lines)
    assert senders == sorted(sender_of(h, v6) for h in (lan.d1, lan.d2))
    port = int(lines[0].rsplit(", ", 1)[1].split(")")[0])
    for line in lines:
        assert line.split(" ", 1)[1] == hear("HELLO SEGMENT", lan.client, port, group, v6)


def test_a_disallowed_source_gets_no_answer_and_its_stop_does_nothing(lan: Lan):
    config = (
        f"allow_from: [{lan.client.v4}/32, {lan.client.v6}/128]\ngroups: [{GROUP4}, {GROUP6}]\n"
    )
    daemons = [lan.daemons.start(host, config) for host in (lan.d1, lan.d2)]
    for group in (GROUP4, GROUP6):
        assert say_lines(lan.stranger, group, "let me in") == (1, [])
        extra = ["--interface", "eth0"] if ":" in group else []
        stop = say(lan.stranger, "--group", group, *extra, "--stop")
        assert (stop.returncode, stop.stdout) == (1, "")
    # Both daemons still run and still answer the allowed client.
    for group in (GROUP4, GROUP6):
        code, lines = say_lines(lan.client, group, "still", "there")
        assert code == 0
        assert len(lines) == 2, lines
    for daemon in daemons:
        assert daemon.proc.poll() is None
        for group in (GROUP4, GROUP6):
            counters = lan.daemons.status(daemon)[(group, PORT)]
            assert counters["dropped"]["not_allowed"] == 2  # the words and the STOP
            assert counters["answered"] == 1
            assert set(counters["stop_refused"].values()) == {0}  # never got that far
            assert balanced(counters)


def test_stop_from_a_source_outside_stop_allow_from_is_refused_and_counted(lan: Lan):
    config = f"stop:\n  allow_from: [{lan.client.v4}/32]\ngroups: [{GROUP4}]\n"
    daemons = [lan.daemons.start(host, config) for host in (lan.d1, lan.d2)]
    refused = say(lan.stranger, "--group", GROUP4, "--stop")
    # A refused STOP is answered like any datagram (answer_refused: true, the default) ...
    assert refused.returncode == 0
    assert len(refused.stdout.splitlines()) == 2
    for daemon in daemons:
        assert daemon.proc.poll() is None  # ... and stops nobody
        counters = lan.daemons.status(daemon)[(GROUP4, PORT)]
        assert counters["stop_refused"]["not_allowed"] == 1
        assert counters["answered"] == 1
        assert balanced(counters)
        assert f"STOP from {lan.stranger.v4}:" in daemon.stderr
        assert "refused: not_allowed" in daemon.stderr
    # The allowed client's STOP stops both hosts at once (it is one multicast datagram).
    accepted = say(lan.client, "--group", GROUP4, "--stop")
    assert accepted.returncode == 0
    for daemon in daemons:
        assert daemon.proc.wait(timeout=5) == 0
        assert f"STOP from {lan.client.v4}:" in daemon.stderr


@pytest.mark.parametrize("group", [SSM4, SSM6])
def test_an_ssm_group_answers_only_its_listed_source(lan: Lan, group: str):
    v6 = ":" in group
    source = lan.client.v6 if v6 else lan.client.v4
    config = f"groups:\n  - group: {group}\n    sources: [{source}]\n"
    daemons = [lan.daemons.start(host, config) for host in (lan.d1, lan.d2)]
    assert say_lines(lan.stranger, group, "not", "my", "source") == (1, [])
    code, lines = say_lines(lan.client, group, "listed")
    assert code == 0
    assert sorted(line.split(" ", 1)[0] for line in lines) == sorted(
        sender_of(h, v6) for h in (lan.d1, lan.d2)
    )
    for daemon in daemons:
        counters = lan.daemons.status(daemon)[(group, PORT)]
        # The kernel filtered the stranger's datagram: the daemon never received it.
        assert (counters["received"], counters["answered"]) == (1, 1)


def set_default_ttl(host: Host, ttl: int) -> None:
    """The host's own default hop limit for unicast (IPv4, and IPv6 on eth0)."""
    host.exec("sysctl", "-qw", f"net.ipv4.ip_default_ttl={ttl}")
    host.exec("sysctl", "-qw", f"net.ipv6.conf.eth0.hop_limit={ttl}")


def unicast_ttls(lan: Lan, family: int, group: str) -> dict[str, int | None]:
    """Ask once; the TTL / hop limit each responder's unicast reply arrived with."""
    client = lan.client.client(family)
    enable_ttl(client)
    client.sendto(b"how far", (group, PORT))
    got = replies(client)
    assert len(got) == 2, got
    for data, _, _ in got:
        assert data.startswith(b"HEAR [ HOW FAR SAID")
    return {sender: ttl for _, sender, ttl in got}


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_unicast_replies_get_the_system_default_ttl_unless_unicast_ttl_is_set(
    lan: Lan, family: int
):
    v6 = family == socket.AF_INET6
    group = GROUP6 if v6 else GROUP4
    d1, d2 = (lan.d1.v6, lan.d2.v6) if v6 else (lan.d1.v4, lan.d2.v4)
    for host in (lan.d1, lan.d2):
        set_default_ttl(host, 77)  # not Linux's 64: the reply's TTL is the host's setting
    # `ttl` is the hop limit of group replies only: unicast replies can cross routers.
    first = lan.daemons.start(lan.d1, f"ttl: 3\ngroups: [{group}]\n")
    second = lan.daemons.start(lan.d2, f"ttl: 3\nunicast_ttl: 9\ngroups: [{group}]\n")
    # One segment, no router: what arrives is what was sent.
    assert unicast_ttls(lan, family, group) == {d1: 77, d2: 9}

    # A reload sets unicast_ttl on one and puts the other back on the system default.
    for daemon, config in (
        (first, f"unicast_ttl: 5\ngroups: [{group}]\n"),
        (second, f"ttl: 3\ngroups: [{group}]\n"),
    ):
        daemon.config_path.write_text(config)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("READY=1")
    assert unicast_ttls(lan, family, group) == {d1: 5, d2: 77}


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_group_replies_reach_a_member_on_another_host_with_the_configured_ttl(
    lan: Lan, family: int
):
    v6 = family == socket.AF_INET6
    group = "ff05::78" if v6 else "239.77.0.2"
    daemon = lan.daemons.start(
        lan.d1, f"groups:\n  - group: {group}\n    reply: group\n    ttl: 5\n"
    )
    member = lan.stranger.member(group)  # another host that joined the group
    enable_ttl(member)
    client = lan.client.client(family)
    client.sendto(b"to everyone", (group, PORT))
    heard = []
    for _ in range(2):  # the request itself, and the reply to the group
        heard.append(receive_with_ttl(member, 2.0))
    request = [h for h in heard if h[0] == b"to everyone"]
    reply = [h for h in heard if h[0].startswith(b"HEAR [ ")]
    assert len(request) == 1
    assert len(reply) == 1, heard
    data, sender, ttl = reply[0]
    assert data == hear("TO EVERYONE", lan.client, client.getsockname()[1], group, v6).encode()
    assert sender == (lan.d1.v6 if v6 else lan.d1.v4)
    assert ttl == 5
    assert replies(client, quiet=0.3) == []  # no unicast copy to the sender
    # The responder heard its own reply looped back and did not answer it.
    counters = lan.daemons.status(daemon)[(group, PORT)]
    assert counters["dropped"]["echo"] == 1
    assert balanced(counters)


def test_two_group_mode_responders_do_not_answer_each_other(lan: Lan):
    config = "groups:\n  - group: 239.77.0.3\n    reply: group\n"
    daemons = [lan.daemons.start(host, config) for host in (lan.d1, lan.d2)]
    member = lan.stranger.member("239.77.0.3")
    client = lan.client.client()
    client.sendto(b"echo chamber", ("239.77.0.3", PORT))
    heard = replies(member, quiet=1.0)
    answers = sorted(sender for data, sender, _ in heard if data.startswith(b"HEAR [ "))
    assert answers == sorted([str(lan.d1.v4), str(lan.d2.v4)])  # one each, then quiet
    for daemon in daemons:
        counters = lan.daemons.status(daemon)[("239.77.0.3", PORT)]
        # The request is answered; its own reply (looped back) and the other's are not.
        assert (counters["received"], counters["answered"]) == (3, 1)
        assert counters["dropped"]["echo"] == 2
        assert balanced(counters)


def test_ttl_0_keeps_group_replies_on_the_host_and_unicast_replies_get_the_default(lan: Lan):
    config = "ttl: 0\ngroups:\n  - group: 239.77.0.4\n    reply: group\n  - group: 239.77.0.5\n"
    set_default_ttl(lan.d1, 77)
    lan.daemons.start(lan.d1, config)
    member = lan.stranger.member("239.77.0.4")
    client = lan.client.client()
    enable_ttl(client)
    client.sendto(b"stay home", ("239.77.0.4", PORT))
    assert [data for data, _, _ in replies(member)] == [b"stay home"]  # no reply left d1
    client.sendto(b"come here", ("239.77.0.5", PORT))
    ((data, sender, ttl),) = replies(client)
    assert data.startswith(b"HEAR [ COME HERE SAID")
    assert (sender, ttl) == (lan.d1.v4, 77)  # ttl: 0 bounds group replies only


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_say_ttl_is_the_hop_limit_of_the_request(lan: Lan, family: int):
    v6 = family == socket.AF_INET6
    group = "ff05::7a" if v6 else "239.77.0.7"
    member = lan.stranger.member(group)
    enable_ttl(member)
    say_lines(lan.client, group, "--ttl", "4", "far away")  # nobody answers: exit 1
    data, sender, ttl = receive_with_ttl(member, 2.0)
    assert (data, sender, ttl) == (b"far away", lan.client.v6 if v6 else lan.client.v4, 4)
