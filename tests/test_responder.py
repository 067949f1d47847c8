"""The defences of one (group, port), decided purely: sources, rates, STOP policy and auth."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.config import Endpoint, Settings, StopPolicy
from mcastd.protocol import (
    MAX_TRACKED_SOURCES,
    Drop,
    DropReason,
    Heard,
    Refused,
    Reply,
    Rules,
    SourceLimiter,
    Stop,
    TokenBucket,
)
from mcastd.stopauth import ReplayGuard, StopRefusal, sign

GROUP, PORT = "239.0.0.9", 59259
SRC = ("192.0.2.7", 40000)
KEY = b"k" * 32
T0 = 1_800_000_000.0


def responder(key: bytes | None = None, **settings: object) -> Rules:
    return Rules(Endpoint(GROUP, PORT, Settings(**settings)), key)  # type: ignore[arg-type]


def nets(*texts: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t) for t in texts)


def kinds(actions: tuple[object, ...]) -> list[str]:
    return [type(a).__name__ for a in actions]


def test_token_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True  # one token after 0.1 s at 10/s
    assert bucket.full(1.0)


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=500))
def test_token_bucket_never_gives_more_than_burst_plus_rate_times_time(times: list[float]):
    bucket = TokenBucket(rate=50, burst=20, now=0.0)
    taken = sum(bucket.take(t) for t in sorted(times))
    span = max(times, default=0.0)
    assert taken <= 20 + 50 * span + 1e-9


def test_per_source_limit_keys_on_the_address_not_the_port():
    r = responder(reply_rate=1, reply_burst=2)
    outcomes = [kinds(r.decide(b"x", ("192.0.2.7", 1000 + i), 0.0, T0))[1] for i in range(4)]
    assert outcomes == ["Reply", "Reply", "Drop", "Drop"]
    # Another source is not affected by the first one's flood.
    assert kinds(r.decide(b"x", ("192.0.2.8", 1), 0.0, T0))[1] == "Reply"
    # A second later the first source gets one more reply.
    assert kinds(r.decide(b"x", SRC, 1.0, T0))[1] == "Reply"


def test_rate_limited_datagram_is_heard_but_dropped():
    r = responder(reply_rate=1, reply_burst=1)
    r.decide(b"x", SRC, 0.0, T0)
    assert r.decide(b"y", SRC, 0.0, T0) == (Heard("y"), Drop(DropReason.RATE_LIMITED))


def test_reply_rate_zero_is_unlimited():
    r = responder(reply_rate=0)
    assert all(kinds(r.decide(b"x", SRC, 0.0, T0))[1] == "Reply" for _ in range(10_000))


def test_total_cap_applies_across_sources():
    total = TokenBucket(rate=5, burst=5, now=0.0)
    r = Rules(Endpoint(GROUP, PORT, Settings(reply_rate=0)), None, total)
    results = [kinds(r.decide(b"x", (f"192.0.2.{i}", 1), 0.0, T0))[1] for i in range(8)]
    assert results.count("Reply") == 5


def test_source_table_is_bounded_under_a_spoofed_flood():
    limiter = SourceLimiter(rate=1, burst=1)
    for i in range(MAX_TRACKED_SOURCES + 5000):
        limiter.allow(str(ipaddress.IPv4Address(0x0A000000 + i)), 0.0)
    assert len(limiter.buckets) <= MAX_TRACKED_SOURCES
    limiter.prune(10.0)  # every bucket refilled: nothing left to remember
    assert limiter.buckets == {}


@pytest.mark.parametrize(
    ("allowed", "source", "answered"),
    [
        (("10.0.0.0/8",), ("10.1.2.3", 5), True),
        (("10.0.0.0/8",), ("192.0.2.1", 5), False),
        (("10.0.0.0/8", "2001:db8::/32"), ("2001:db8::1", 5), True),
        (("2001:db8::/32",), ("fe80::1%eth0", 5), False),
        (("fe80::/10",), ("fe80::1%eth0", 5), True),
        (("127.0.0.1/32",), ("::ffff:127.0.0.1", 5), True),  # mapped addresses match
    ],
)
def test_allow_from_drops_other_sources(
    allowed: tuple[str, ...], source: tuple[str, int], answered: bool
):
    r = responder(allow_from=nets(*allowed))
    actions = r.decide(b"hi", source, 0.0, T0)
    if answered:
        assert kinds(actions) == ["Heard", "Reply"]
    else:
        assert actions == (Drop(DropReason.NOT_ALLOWED),)


@pytest.mark.parametrize(
    ("policy", "source", "expected"),
    [
        (StopPolicy(), SRC, ["Heard", "Reply", "Stop"]),
        (StopPolicy(enabled=False), SRC, ["Heard", "Reply", "Refused"]),
        (StopPolicy(allow_from=nets("192.0.2.0/24")), SRC, ["Heard", "Reply", "Stop"]),
        (StopPolicy(allow_from=nets("10.0.0.0/8")), SRC, ["Heard", "Reply", "Refused"]),
        (StopPolicy(enabled=False, answer_refused=False), SRC, ["Heard", "Drop", "Refused"]),
    ],
)
def test_who_may_stop(policy: StopPolicy, source: tuple[str, int], expected: list[str]):
    assert kinds(responder(stop=policy).decide(b"STOP", source, 0.0, T0)) == expected


def test_refused_stop_reason_and_not_answered_when_configured():
    r = responder(stop=StopPolicy(allow_from=nets("10.0.0.0/8"), answer_refused=False))
    assert r.decide(b" STOP\n", SRC, 0.0, T0) == (
        Heard(" STOP\n"),
        Drop(DropReason.STOP_REFUSED),
        Refused(StopRefusal.NOT_ALLOWED, True),
    )


def test_refusals_are_logged_once_a_minute_per_source():
    r = responder(stop=StopPolicy(enabled=False))
    logs = [r.decide(b"STOP", SRC, 0.0, T0 + t)[-1].log for t in (0, 10, 59, 61)]  # type: ignore[union-attr]
    assert logs == [True, False, False, True]
    other = r.decide(b"STOP", ("192.0.2.99", 1), 0.0, T0 + 10)[-1]
    assert other == Refused(StopRefusal.DISABLED, True)


def keyed(**stop: object) -> Rules:
    return responder(KEY, stop=StopPolicy(key_file="k", **stop))  # type: ignore[arg-type]


def test_authenticated_stop_is_the_only_stop_with_a_key():
    r = keyed()
    valid = sign(KEY, GROUP, PORT, int(T0)).encode()
    assert kinds(r.decide(b"STOP", SRC, 0.0, T0)) == ["Heard", "Reply", "Refused"]
    assert r.decide(b"STOP", SRC, 0.0, T0)[-1].reason == StopRefusal.UNAUTHENTICATED  # type: ignore[union-attr]
    actions = r.decide(valid, SRC, 0.0, T0 + 5)
    assert kinds(actions) == ["Heard", "Reply", "Stop"]
    assert actions[2] == Stop(SRC)


@pytest.mark.parametrize(
    ("text", "at", "reason"),
    [
        (sign(b"w" * 32, GROUP, PORT, int(T0)), T0, StopRefusal.BAD_MAC),
        (sign(KEY, "239.0.0.10", PORT, int(T0)), T0, StopRefusal.BAD_MAC),  # other group
        (sign(KEY, GROUP, PORT + 1, int(T0)), T0, StopRefusal.BAD_MAC),  # other port
        (sign(KEY, GROUP, PORT, int(T0)), T0 + 31, StopRefusal.STALE),
        (sign(KEY, GROUP, PORT, int(T0) + 31), T0, StopRefusal.STALE),  # from the future
        ("STOP v1 123 nothex nomac", T0, StopRefusal.MALFORMED),
        ("STOP v1 " + "1" * 40, T0, StopRefusal.MALFORMED),
    ],
)
def test_bad_authenticated_stops_are_refused(text: str, at: float, reason: StopRefusal):
    actions = keyed().decide(text.encode(), SRC, 0.0, at)
    assert actions[-1].__class__ is Refused
    assert actions[-1].reason == reason  # type: ignore[union-attr]


def test_a_replayed_stop_is_refused():
    guard = ReplayGuard(KEY, 30)
    text = sign(KEY, GROUP, PORT, int(T0))
    assert guard.check(text, GROUP, PORT, T0) is None
    assert guard.check(text, GROUP, PORT, T0 + 1) == StopRefusal.REPLAYED
    fresh = sign(KEY, GROUP, PORT, int(T0) + 2)
    assert guard.check(fresh, GROUP, PORT, T0 + 2) is None


def test_a_stop_signed_before_the_daemon_started_is_refused():
    """It was meant for an earlier run: replaying it after a restart must not work."""
    guard = ReplayGuard(KEY, 30, not_before=T0 + 10)
    captured = sign(KEY, GROUP, PORT, T0 + 9.999)
    assert guard.check(captured, GROUP, PORT, T0 + 12) == StopRefusal.REPLAYED
    assert guard.check(sign(KEY, GROUP, PORT, T0 + 10.001), GROUP, PORT, T0 + 12) is None


def test_signed_text_without_a_key_is_an_ordinary_datagram():
    text = sign(KEY, GROUP, PORT, int(T0)).encode()
    assert kinds(responder().decide(text, SRC, 0.0, T0)) == ["Heard", "Reply"]


@given(st.binary(max_size=300))
def test_no_datagram_stops_a_keyed_responder_without_the_key(payload: bytes):
    actions = keyed().decide(payload, SRC, 0.0, T0)
    assert not any(a.__class__ is Stop for a in actions)


def test_reply_is_unchanged_by_the_defences():
    r = keyed(allow_from=nets("192.0.2.0/24"))
    actions = r.decide(b"hello", SRC, 0.0, T0)
    assert actions == (
        Heard("hello"),
        Reply(b"HEAR [ HELLO SAID ('192.0.2.7', 40000) ] from 239.0.0.9", SRC),
    )
