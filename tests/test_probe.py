"""`mcastd probe`'s pure core: probes, matching replies, tallies, roster, verdict, output."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.probe import (
    DEFAULT_COUNT,
    DEFAULT_STEP_COUNT,
    USER_INTERVAL_FLOOR,
    ProbeSettings,
    ReplyKind,
    Roster,
    RosterError,
    Train,
    Via,
    new_probe_id,
    parse_roster,
    payload,
    problems,
    render_heard,
    render_json,
    render_text,
    roster_from_list,
    schedule,
)
from mcastd.protocol import decide

SCHEMA = json.loads((Path(__file__).parent.parent / "docs" / "probe.schema.json").read_text())
GROUP = "239.0.0.9"
PID = "0123456789abcdef"
ME = ("10.0.0.1", 40000)
A, B, C = "10.0.0.5", "10.0.0.6", "10.0.0.7"


def reply_to(seq: int, probe_id: str = PID, group: str = GROUP) -> bytes:
    """What a HEAR responder sends back for probe `seq`: mcastd's own protocol decides."""
    actions = decide(payload(probe_id, seq), ME, group, 59259, "unicast", 0.0)
    return actions[1].data  # type: ignore[union-attr]


def train(count: int = 5, wait: float = 1.0, **more: object) -> Train:
    return Train(ProbeSettings(GROUP, count=count, wait=wait, **more), PID, 0.0)  # type: ignore[arg-type]


def send_all(t: Train, interval: float = 1.0) -> None:
    while (probe := t.next_probe()) is not None:
        t.sent(probe[0], probe[0] * interval)


# Probes and matching ---------------------------------------------------------------------


@given(st.binary(min_size=8, max_size=8), st.integers(min_value=0, max_value=10**9))
def test_a_probe_never_contains_stop_in_any_case(raw: bytes, seq: int):
    text = payload(new_probe_id(raw), seq).decode()
    assert "STOP" not in text.upper()
    assert "STOP" not in reply_to(seq, new_probe_id(raw)).decode()


def test_the_probe_text():
    assert payload(PID, 42) == b"mcastd-probe 0123456789abcdef 42"
    assert reply_to(42) == (
        b"HEAR [ MCASTD-PROBE 0123456789ABCDEF 42 SAID ('10.0.0.1', 40000) ] from 239.0.0.9"
    )


@pytest.mark.parametrize(
    ("data", "seq"),
    [
        (reply_to(0), 0),
        (reply_to(4), 4),
        (reply_to(5), None),  # never sent
        (reply_to(3, probe_id="fedcba9876543210"), None),  # another client's probe
        (payload(PID, 3), None),  # our own probe, looped back by the group
        (b"HEAR [ MCASTD-PROBE 0123456789ABCDEF 3", None),  # truncated
        (b"HEAR [ MCASTD-PROBE 0123456789ABCDEF x3 SAID ('a', 1) ] from g", None),
        (b"HEAR [ MCASTD-PROBE 0123456789ABCDEF  SAID ('a', 1) ] from g", None),
        (b"HEAR [ MCASTD-PROBE 0123456789ABCDEF 2 SAID ('a', 1) ]", None),
        (b"HEAR [ HELLO SAID ('10.0.0.1', 1) ] from 239.0.0.9", None),
        (b"", None),
        (b"\xff\xfe", None),
        # upstream 2.1.1 words it the same: the group as configured, any sender address
        (b"HEAR [ MCASTD-PROBE 0123456789ABCDEF 1 SAID ('127.0.0.1', 5) ] from 239.0.0.9", 1),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_replies_are_matched_to_our_probes_only(data: bytes, seq: int | None):
    t = train()
    send_all(t)
    assert t.match(data) == seq


def test_what_is_not_ours_is_counted_as_ignored():
    t = train()
    send_all(t)
    assert t.heard(payload(PID, 1), A, Via.GROUP, 64, 1.0) is None
    assert t.heard(reply_to(1, "ffffffffffffffff"), A, Via.UNICAST, 64, 1.0) is None
    report = t.report(10.0)
    assert report.ignored == 2
    assert report.responders == ()


def test_probes_are_sent_in_order():
    t = train(count=2)
    with pytest.raises(ValueError, match="out of order"):
        t.sent(1, 0.0)


@pytest.mark.parametrize(
    ("settings", "ttls"),
    [
        (ProbeSettings(GROUP), (1,) * DEFAULT_COUNT),
        (ProbeSettings(GROUP, count=3, ttl=4), (4, 4, 4)),
        (ProbeSettings(GROUP, hops=3), tuple(t for t in (1, 2, 3) for _ in range(3))),
        (ProbeSettings(GROUP, hops=2, count=1), (1, 2)),
    ],
)
def test_schedule(settings: ProbeSettings, ttls: tuple[int, ...]):
    assert schedule(settings) == ttls
    assert DEFAULT_STEP_COUNT == 3


# Classifying replies ----------------------------------------------------------------------

# (seq, arrival time) of replies from one responder to probes sent at 0, 1, 2, 3, 4 (wait 1)
CASES = [
    ([(0, 0.1)], [ReplyKind.RECEIVED]),
    ([(0, 0.1), (0, 0.2)], [ReplyKind.RECEIVED, ReplyKind.DUPLICATE]),
    ([(0, 1.5)], [ReplyKind.LATE]),
    ([(0, 1.5), (0, 1.6)], [ReplyKind.LATE, ReplyKind.DUPLICATE]),
    ([(0, 1.0)], [ReplyKind.RECEIVED]),  # exactly at the wait: in time
    ([(1, 1.2), (0, 1.3)], [ReplyKind.RECEIVED, ReplyKind.LATE]),
    ([(1, 1.2), (0, 0.9)], [ReplyKind.RECEIVED, ReplyKind.REORDERED]),
    ([(2, 2.1), (1, 1.9), (3, 3.1)], [ReplyKind.RECEIVED, ReplyKind.REORDERED, ReplyKind.RECEIVED]),
]


@pytest.mark.parametrize(("replies", "kinds"), CASES)
def test_each_reply_is_classified(replies: list[tuple[int, float]], kinds: list[ReplyKind]):
    t = train()
    send_all(t)
    got = [t.heard(reply_to(seq), A, Via.UNICAST, 64, at) for seq, at in replies]
    assert [h.kind for h in got if h is not None] == kinds


def test_counts_and_round_trip_times_like_ping():
    t = train(count=5)
    send_all(t)
    rtts = [0.010, 0.020, 0.030]
    for seq, rtt in enumerate(rtts):
        t.heard(reply_to(seq), A, Via.UNICAST, 63, seq + rtt)
    t.heard(reply_to(0), A, Via.GROUP, 64, 0.5)  # a duplicate, to the group
    t.heard(reply_to(3), A, Via.UNICAST, 64, 3 + 1.5)  # late
    (r,) = t.report(10.0).responders
    assert (r.sent, r.received, r.duplicates, r.late, r.reordered) == (5, 3, 1, 1, 0)
    assert r.loss == pytest.approx(0.4)
    assert (r.unicast, r.group) == (4, 1)
    assert (r.ttl_min, r.ttl_max) == (63, 64)
    assert r.rtt is not None
    assert r.rtt.min == pytest.approx(0.010)
    assert r.rtt.max == pytest.approx(0.030)
    assert r.rtt.avg == pytest.approx(0.020)
    assert r.rtt.median == pytest.approx(0.020)
    assert r.rtt.mdev == pytest.approx(statistics.pstdev(rtts))
    assert r.hops is None


def test_probes_still_inside_their_wait_count_only_when_answered():
    t = train(count=5, wait=1.0)
    for seq in range(3):
        t.sent(seq, float(seq))
    t.heard(reply_to(2), A, Via.UNICAST, 64, 2.1)
    # at 2.5: probe 0 and 1 have had their wait, 2 is answered
    (r,) = t.report(2.5, interrupted=True).responders
    assert (r.sent, r.received) == (3, 1)
    report = t.report(2.5, interrupted=True)
    assert report.sent == 3
    assert report.interrupted


def test_a_ttl_sweep_measures_hops_and_counts_loss_from_there():
    t = train(count=2, hops=3)
    send_all(t)  # seq 0,1: ttl 1; 2,3: ttl 2; 4,5: ttl 3
    for seq in (0, 1, 2, 3, 4, 5):
        t.heard(reply_to(seq), A, Via.UNICAST, 64, seq + 0.01)
    for seq in (2, 4):  # two hops away, one probe lost
        t.heard(reply_to(seq), B, Via.UNICAST, 63, seq + 0.01)
    near, far = t.report(10.0).responders
    assert (near.address, near.hops, near.sent, near.received) == (A, 1, 6, 6)
    assert (far.address, far.hops, far.sent, far.received) == (B, 2, 4, 2)
    assert far.loss == pytest.approx(0.5)


# Roster and verdict -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entries"),
    [
        ("10.0.0.5\n", ((A, None),)),
        (
            "# fleet\n10.0.0.5 db1  # primary\n\n  fd00::0001 web\n",
            ((A, "db1"), ("fd00::1", "web")),
        ),
        ("10.0.0.5\n10.0.0.5 again\n", ((A, None),)),
        ("FE80::0001%eth0 router\n", (("fe80::1%eth0", "router"),)),  # as replies show it
    ],
)
def test_roster_files(text: str, entries: tuple[tuple[str, str | None], ...]):
    assert parse_roster(text, "f").entries == entries


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("host1\n", "f:1: 'host1' is not an IP address"),
        ("10.0.0.5\n10.0.0.300\n", "f:2: '10.0.0.300' is not an IP address"),
        ("10.0.0.5 a b\n", "f:1: expected `ADDRESS [NAME]`, got '10.0.0.5 a b'"),
        ("# nobody\n", "f: no addresses"),
    ],
)
def test_roster_errors_are_one_line_with_the_place(text: str, message: str):
    with pytest.raises(RosterError) as e:
        parse_roster(text, "f")
    assert str(e.value) == message


def test_roster_from_a_list():
    assert roster_from_list("10.0.0.5, 10.0.0.6").addresses == (A, B)
    with pytest.raises(RosterError, match="--expect:1: 'x' is not an IP address"):
        roster_from_list("x,10.0.0.5")


def verdict_train(roster: Roster | None, answers: dict[str, int], count: int = 4) -> Train:
    t = train(count=count, roster=roster)
    send_all(t)
    for address, n in answers.items():
        for seq in range(n):
            t.heard(reply_to(seq), address, Via.UNICAST, 64, seq + 0.01)
    return t


@pytest.mark.parametrize(
    ("roster", "answers", "max_loss", "success", "missing", "unexpected"),
    [
        (None, {}, 1.0, False, (), ()),
        (None, {A: 1}, 1.0, True, (), ()),
        (None, {A: 1}, 0.5, False, (), ()),
        (None, {A: 1, B: 4}, 0.0, True, (), ()),
        ((A, B), {A: 4, B: 4}, 0.0, True, (), ()),
        ((A, B), {A: 4}, 1.0, False, (B,), ()),
        ((A, B), {A: 4, B: 3}, 0.25, True, (), ()),
        ((A, B), {A: 4, B: 2}, 0.25, False, (), ()),
        ((A,), {A: 4, C: 1}, 0.0, True, (), (C,)),
        ((A,), {C: 4}, 1.0, False, (A,), (C,)),
    ],
)
def test_verdict(
    roster: tuple[str, ...] | None,
    answers: dict[str, int],
    max_loss: float,
    success: bool,
    missing: tuple[str, ...],
    unexpected: tuple[str, ...],
):
    r = Roster(tuple((a, None) for a in roster)) if roster is not None else None
    report = verdict_train(r, answers).report(10.0)
    assert report.success(max_loss) is success
    assert report.missing == missing
    assert report.unexpected == unexpected
    assert report.expected == (roster or ())


@pytest.mark.parametrize(
    ("settings", "root", "found"),
    [
        (ProbeSettings(GROUP), False, []),
        (ProbeSettings(GROUP, interval=0.01), True, []),
        (
            ProbeSettings(GROUP, interval=0.01),
            False,
            [f"--interval below {USER_INTERVAL_FLOOR} s is a flood and needs root (as ping)"],
        ),
        (ProbeSettings(GROUP, hops=4, ttl=3), True, ["--hops sweeps the TTL itself: drop --ttl"]),
        (
            ProbeSettings(GROUP, source="fd00::1"),
            True,
            ["--source fd00::1 is not of the group's address family"],
        ),
        (ProbeSettings(GROUP, max_loss=2.0), True, ["--max-loss is a percentage (0-100)"]),
        (ProbeSettings(GROUP, source="host1"), True, ["--source host1 is not an IP address"]),
        (ProbeSettings(GROUP, count=0), True, ["--count must be at least 1"]),
        (ProbeSettings(GROUP, hops=0), True, ["--hops is a TTL (1-255)"]),
        (
            ProbeSettings("232.1.1.1", join=True),
            True,
            ["--join hears replies sent to an any-source group, not an SSM one"],
        ),
        (ProbeSettings(GROUP, count=200_000), True, ["more than 100000 probes"]),
    ],
)
def test_settings_problems(settings: ProbeSettings, root: bool, found: list[str]):
    assert problems(settings, root) == found


# Output ------------------------------------------------------------------------------------


def test_reply_lines_read_like_ping():
    t = train()
    send_all(t)
    lines = [
        render_heard(h)
        for h in (
            t.heard(reply_to(1), A, Via.UNICAST, 64, 1.000250),
            t.heard(reply_to(1), A, Via.GROUP, None, 1.0005),
            t.heard(reply_to(0), B, Via.UNICAST, 63, 1.5),
        )
        if h is not None
    ]
    assert lines == [
        "10.0.0.5: seq=1 ttl=64 time=0.250 ms unicast",
        "10.0.0.5: seq=1 time=0.500 ms group (DUP!)",
        "10.0.0.6: seq=0 ttl=63 time=1500.000 ms unicast (late)",
    ]


def test_summary_names_every_responder_and_the_missing_ones():
    roster = Roster(((A, "db1"), (B, None)))
    text = render_text(verdict_train(roster, {A: 4, C: 2}).report(10.0), 0.0)
    lines = text.splitlines()
    assert lines[0] == "--- 239.0.0.9:59259 mcastd probe statistics ---"
    assert any(line.startswith("10.0.0.5 (db1)") and "0.0%" in line for line in lines)
    assert any(line.startswith("10.0.0.6 MISSING") and "100.0%" in line for line in lines)
    assert any(line.startswith("10.0.0.7 unexpected") and "50.0%" in line for line in lines)
    assert "missing: 10.0.0.6" in lines
    assert "unexpected: 10.0.0.7" in lines


def test_a_run_without_replies_says_what_to_try():
    text = render_text(verdict_train(None, {}).report(10.0), 1.0)
    assert text.splitlines()[-1].startswith("no replies: responders behind routers need --ttl N")


def test_json_follows_the_documented_schema():
    roster = Roster(((A, "db1"), (B, None)))
    t = verdict_train(roster, {A: 4, C: 2})
    document = json.loads(render_json(t.report(10.0), 0.25))
    jsonschema.validate(document, SCHEMA)
    assert document["missing"] == [B]
    assert document["unexpected"] == [C]
    assert document["success"] is False
    by_address = {r["address"]: r for r in document["responders"]}
    assert by_address[A]["name"] == "db1"
    assert by_address[A]["ok"] is True
    assert by_address[C]["loss"] == 0.5
    assert by_address[B]["rtt"] is None


# Properties -------------------------------------------------------------------------------

event = st.tuples(
    st.sampled_from([A, B, C]),
    st.integers(min_value=0, max_value=12),  # some beyond what was sent
    st.floats(min_value=0.0, max_value=3.0),  # delay after the probe was sent
    st.sampled_from(list(Via)),
    st.one_of(st.none(), st.integers(min_value=0, max_value=255)),
)


@given(
    st.integers(min_value=1, max_value=10),
    st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
    st.lists(event, max_size=60),
    st.floats(min_value=0.0, max_value=20.0),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_any_reply_stream_gives_a_consistent_report(
    count: int,
    hops: int | None,
    events: list[tuple[str, int, float, Via, int | None]],
    now: float,
    max_loss: float,
):
    t = train(count=count, hops=hops, roster=Roster(((A, None),)))
    send_all(t, interval=0.5)
    kinds: dict[str, list[ReplyKind]] = {}
    for address, seq, delay, via, ttl in sorted(events, key=lambda e: e[1] * 0.5 + e[2]):
        heard = t.heard(reply_to(seq), address, via, ttl, seq * 0.5 + delay)
        if heard is not None:
            kinds.setdefault(address, []).append(heard.kind)
    report = t.report(max(now, t.due() or 0.0))
    document = json.loads(render_json(report, max_loss))
    jsonschema.validate(document, SCHEMA)
    for r in report.responders:
        assert 0 <= r.received <= r.sent <= report.sent
        assert 0.0 <= r.loss <= 1.0
        assert math.isclose(r.loss, 1 - r.received / r.sent) if r.sent else r.loss == 1.0
        got = kinds.get(r.address, [])
        assert r.received == sum(k in (ReplyKind.RECEIVED, ReplyKind.REORDERED) for k in got)
        assert r.duplicates == got.count(ReplyKind.DUPLICATE)
        assert r.late == got.count(ReplyKind.LATE)
        assert r.unicast + r.group == len(got)
        if r.rtt is not None:
            assert r.rtt.min <= r.rtt.median <= r.rtt.max
            assert r.rtt.min <= r.rtt.avg + 1e-12
            assert r.rtt.avg <= r.rtt.max + 1e-12
        assert (r.hops is not None) == (hops is not None and bool(got))
    assert report.success(max_loss) == all(
        r.ok(max_loss) for r in report.responders if r.address == A
    )
    assert render_text(report, max_loss).count("\n") >= len(report.responders) + 2


def test_with_a_roster_the_run_is_settled_once_every_expected_responder_answered_all():
    roster = Roster(((A, None), (B, None)))
    t = train(count=2, roster=roster)
    t.sent(0, 0.0)
    for address in (A, B):
        t.heard(reply_to(0), address, Via.UNICAST, 64, 0.1)
    assert not t.settled()  # probe 1 is still to be sent
    t.sent(1, 1.0)
    t.heard(reply_to(1), A, Via.UNICAST, 64, 1.1)
    assert not t.settled()
    t.heard(reply_to(1), B, Via.UNICAST, 64, 1.1)
    assert t.settled()
    assert not train(count=1).settled()  # without a roster: wait for whoever else answers


def test_replies_the_kernel_dropped_for_us_are_a_warning_not_hidden():
    report = verdict_train(None, {A: 2}).report(10.0, overflow=7)
    assert report.overflow == 7
    assert "warning: 7 replies dropped here (receive buffer full)" in render_text(report, 1.0)
    document = json.loads(render_json(report, 1.0))
    jsonschema.validate(document, SCHEMA)
    assert document["overflow"] == 7
