"""channel: one endpoint served from a real socket in a namespace; what it counts and logs."""

from __future__ import annotations

import errno
import logging
import select

import pytest

from mcastd.channel import BATCH, LOGGED_TEXT, Channel, outcome, quote
from mcastd.config import Endpoint, Settings
from mcastd.net import open_group_socket
from mcastd.protocol import Drop, DropReason, Heard, Refused, Reply, Stop, TokenBucket
from mcastd.stopauth import StopRefusal
from tests.logs import Records
from tests.netns import NetNS, collect

GROUP, PORT = "239.0.0.9", 59259
T0, WALL = 1000.0, 1_800_000_000.0


@pytest.mark.parametrize(
    ("actions", "failure", "said"),
    [
        ((Heard("hi"), Reply(b"x", ("h", 1))), None, "answered"),
        (
            (Heard("hi"), Reply(b"x", ("h", 1))),
            OSError(errno.ENETUNREACH, "Network is unreachable"),
            "reply failed: Network is unreachable",
        ),
        ((Heard("hi"), Drop(DropReason.RATE_LIMITED)), None, "dropped (rate_limited)"),
        ((Heard("ŉ"), Drop(DropReason.AMPLIFYING)), None, "dropped (amplifying)"),
        ((Drop(DropReason.NOT_UTF8),), None, "dropped (not_utf8)"),
        ((Drop(DropReason.NOT_ALLOWED),), None, "dropped (not_allowed)"),
        ((Heard("hi"),), None, "not answered (reply: none)"),
        ((Heard("STOP"), Reply(b"x", ("h", 1)), Stop(("h", 1))), None, "answered, STOP accepted"),
        (
            (Heard("STOP"), Drop(DropReason.STOP_REFUSED), Refused(StopRefusal.NOT_ALLOWED, True)),
            None,
            "dropped (stop_refused), STOP refused (not_allowed)",
        ),
    ],
)
def test_outcome_says_what_became_of_a_datagram(
    actions: tuple[object, ...], failure: OSError | None, said: str
):
    assert outcome(actions, failure) == said  # type: ignore[arg-type]


def test_quote_cuts_long_text():
    assert quote("hi") == "'hi'"
    assert quote("a" * 500) == repr("a" * LOGGED_TEXT) + "... (500 characters)"


def channel_in(netns: NetNS, total: TokenBucket | None = None, **settings: object) -> Channel:
    endpoint = Endpoint(GROUP, PORT, Settings(**settings))  # type: ignore[arg-type]
    with netns.entered():
        group_socket = open_group_socket(endpoint)
    return Channel(endpoint, group_socket, None, total, WALL - 60)


def serve_until(channel: Channel, received: int, now: float = T0) -> str | None:
    """serve_batch whenever the socket is readable, until `received` datagrams were read."""
    stop = None
    while channel.counters.received < received and stop is None:
        ready, _, _ = select.select([channel.group_socket.sock], [], [], 5.0)
        assert ready, f"only {channel.counters.received} of {received} datagrams arrived"
        stop = channel.serve_batch(now, WALL)
    return stop


@pytest.mark.net
def test_serve_batch_answers_counts_and_logs_each_datagram(netns: NetNS, journal: Records):
    channel = channel_in(netns, reply_rate=1, reply_burst=2)
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    me = f"127.0.0.1:{client.getsockname()[1]}"
    try:
        for payload in (b"one", b"two", b"three", b"\xff bad", "ŉ".encode()):
            client.sendto(payload, (GROUP, PORT))
        assert serve_until(channel, 5) is None
        replies = collect(client, quiet=0.3)
    finally:
        channel.close()
    assert [r.split(b" SAID")[0] for r in replies] == [b"HEAR [ ONE", b"HEAR [ TWO"]
    c = channel.counters
    assert (c.received, c.answered, c.listened) == (5, 2, 0)
    assert dict(c.dropped) == {"rate_limited": 1, "not_utf8": 1, "amplifying": 1}
    assert c.bytes_out == sum(len(r) for r in replies)
    assert c.last_source == ("127.0.0.1", client.getsockname()[1])
    assert c.last_heard == T0
    heard = [m for m in journal.messages if " heard " in m]
    assert heard == [
        f"{GROUP}:{PORT} heard 'one' from {me}: answered",
        f"{GROUP}:{PORT} heard 'two' from {me}: answered",
        f"{GROUP}:{PORT} heard 'three' from {me}: dropped (rate_limited)",
        f"{GROUP}:{PORT} heard 5 bytes from {me}: dropped (not_utf8)",
        f"{GROUP}:{PORT} heard 'ŉ' from {me}: dropped (amplifying)",
    ]
    assert journal.messages[-1] == (
        f"{GROUP}:{PORT} left: 5 received, 2 answered, 3 dropped "
        "(1 amplifying, 1 not_utf8, 1 rate_limited)"
    )


@pytest.mark.net
def test_the_line_budget_holds_lines_back_and_counts_them(netns: NetNS, journal: Records):
    channel = channel_in(netns, reply="none")
    client = netns.socket()
    try:
        for i in range(30):
            client.sendto(b"%d" % i, (GROUP, PORT))
        serve_until(channel, 30)
        heard = [m for m in journal.messages if " heard " in m]
        assert len(heard) == 20
        assert heard[0].endswith(": not answered (reply: none)")
        channel.prune(T0 + 1.0, WALL + 1.0)  # the second is over: say how many were held back
        assert journal.messages[-1] == f"{GROUP}:{PORT}: 10 more datagram lines suppressed"
    finally:
        channel.close()
    assert (channel.counters.listened, channel.counters.suppressed_lines) == (30, 10)


@pytest.mark.net
def test_a_batch_reads_at_most_batch_datagrams(netns: NetNS):
    channel = channel_in(netns, log_datagrams=False)
    client = netns.socket()
    try:
        for _ in range(BATCH + 5):
            client.sendto(b"x", (GROUP, PORT))
        serve_until(channel, 1)
        assert channel.counters.received == BATCH
        serve_until(channel, BATCH + 5)
    finally:
        channel.close()


@pytest.mark.net
@pytest.mark.parametrize("log_datagrams", [True, False])
def test_a_reply_that_cannot_be_sent_is_counted_and_said(
    netns: NetNS, journal: Records, log_datagrams: bool
):
    channel = channel_in(netns, log_datagrams=log_datagrams)
    netns.ip("addr", "add", "198.51.100.7/32", "dev", "lo")
    client = netns.socket()
    client.bind(("198.51.100.7", 0))
    me = f"198.51.100.7:{client.getsockname()[1]}"
    try:
        client.sendto(b"hello", (GROUP, PORT))
        select.select([channel.group_socket.sock], [], [], 5.0)
        # The sender's address goes away before the reply: no route back to it.
        netns.ip("addr", "del", "198.51.100.7/32", "dev", "lo")
        serve_until(channel, 1)
    finally:
        channel.close()
    assert channel.counters.dropped["send_failed"] == 1
    assert channel.counters.answered == 0
    # One line either way: the datagram's own, or (without those) the failure's.
    said = [r for r in journal.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in said] == [
        f"{GROUP}:{PORT} heard 'hello' from {me}: reply failed: Network is unreachable"
        if log_datagrams
        else f"{GROUP}:{PORT}: reply to {me} failed: Network is unreachable"
    ]


@pytest.mark.net
def test_stop_ends_the_batch_and_names_its_sender(netns: NetNS, journal: Records):
    total = TokenBucket(100, 100, T0)
    channel = channel_in(netns, total)
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    me = f"127.0.0.1:{client.getsockname()[1]}"
    try:
        for payload in (b"before", b"STOP", b"after"):
            client.sendto(payload, (GROUP, PORT))
        assert serve_until(channel, 3) == f"STOP from {me} on {GROUP}:{PORT}"
    finally:
        channel.close()
    assert channel.counters.received == 2  # "after" stays unread: the daemon is stopping
    assert f"{GROUP}:{PORT}: STOP from {me} accepted" in journal.messages
    assert f"{GROUP}:{PORT} heard 'STOP' from {me}: answered, STOP accepted" in journal.messages
