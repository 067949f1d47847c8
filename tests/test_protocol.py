"""The HEAR decision: a table of datagrams and the actions they lead to, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.protocol import (
    MAX_PAYLOAD_IPV4,
    Drop,
    DropReason,
    Heard,
    Reply,
    Stop,
    decide,
    is_stop,
)

SRC = ("127.0.0.1", 49574)
GROUP = "239.0.0.9"
PORT = 59259


def hear(text: str, source: tuple[str, int] = SRC, group: str = GROUP) -> bytes:
    return f"HEAR [ {text} SAID ('{source[0]}', {source[1]}) ] from {group}".encode()


@pytest.mark.parametrize(
    ("payload", "actions"),
    [
        (b"hi there", (Heard("hi there"), Reply(hear("HI THERE"), SRC))),
        (b"STOP", (Heard("STOP"), Reply(hear("STOP"), SRC), Stop(SRC))),
        (b" STOP\n", (Heard(" STOP\n"), Reply(hear(" STOP\n"), SRC), Stop(SRC))),
        (b"\tSTOP \r\n", (Heard("\tSTOP \r\n"), Reply(hear("\tSTOP \r\n"), SRC), Stop(SRC))),
        (b"NONSTOP", (Heard("NONSTOP"), Reply(hear("NONSTOP"), SRC))),
        (b"BUS STOP", (Heard("BUS STOP"), Reply(hear("BUS STOP"), SRC))),
        (b"STOP STOP", (Heard("STOP STOP"), Reply(hear("STOP STOP"), SRC))),
        (b"stop", (Heard("stop"), Reply(hear("STOP"), SRC))),  # case-sensitive, as upstream
        (b"", (Heard(""), Reply(hear(""), SRC))),
        (b"hi\n", (Heard("hi\n"), Reply(hear("HI\n"), SRC))),
        ("straße".encode(), (Heard("straße"), Reply(hear("STRASSE"), SRC))),
        (b"a\x00b", (Heard("a\x00b"), Reply(hear("A\x00B"), SRC))),
        (b"\xff\xfe", (Drop(DropReason.NOT_UTF8),)),
        (b"ok \xc3", (Drop(DropReason.NOT_UTF8),)),
        (b"x" * 65_536, (Heard("x" * 65_536), Drop(DropReason.REPLY_TOO_LARGE))),
        (b"y" * 65_000, (Heard("y" * 65_000), Reply(hear("Y" * 65_000), SRC))),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_decision_table_unicast(payload: bytes, actions: tuple[object, ...]):
    assert decide(payload, SRC, GROUP, PORT, "unicast", 0.0) == actions


def test_reply_exactly_at_the_udp_limit_is_sent_one_more_byte_is_not():
    overhead = len(hear(""))
    fits = b"z" * (MAX_PAYLOAD_IPV4 - overhead)
    assert isinstance(decide(fits, SRC, GROUP, PORT, "unicast", 0.0)[1], Reply)
    assert decide(fits + b"z", SRC, GROUP, PORT, "unicast", 0.0)[1] == Drop(
        DropReason.REPLY_TOO_LARGE
    )


def test_a_reply_is_never_larger_than_the_request_plus_the_hear_text():
    # U+0149 is 2 bytes and upper-cases to 3 (U+02BC, N): answering would amplify.
    assert decide("ŉ".encode(), SRC, GROUP, PORT, "unicast", 0.0) == (
        Heard("ŉ"),
        Drop(DropReason.AMPLIFYING),
    )
    assert decide("ǆ".encode(), SRC, GROUP, PORT, "unicast", 0.0)[1] == Reply(hear("Ǆ"), SRC)


def test_group_mode_answers_the_group_and_ignores_replies():
    assert decide(b"hi", SRC, GROUP, PORT, "group", 0.0) == (
        Heard("hi"),
        Reply(hear("HI"), (GROUP, PORT)),
    )
    # Another responder's reply (or our own, looped back): answering would ping-pong forever.
    assert decide(hear("HI"), SRC, GROUP, PORT, "group", 0.0) == (Drop(DropReason.ECHO),)
    # In unicast mode upstream answers everything, replies included.
    assert decide(hear("HI"), SRC, GROUP, PORT, "unicast", 0.0)[1] == Reply(
        hear(hear("HI").decode().upper()), SRC
    )


def test_none_mode_only_listens_but_still_stops():
    assert decide(b"hi", SRC, GROUP, PORT, "none", 0.0) == (Heard("hi"),)
    assert decide(b"STOP", SRC, GROUP, PORT, "none", 0.0) == (Heard("STOP"), Stop(SRC))


def test_ipv6_source_and_group():
    source = ("fe80::1", 40000)
    assert decide(b"six", source, "ff05::9", PORT, "unicast", 0.0) == (
        Heard("six"),
        Reply(hear("SIX", source, "ff05::9"), source),
    )


@given(st.binary(max_size=2048), st.sampled_from(["unicast", "group", "none"]))
def test_every_datagram_gets_a_decision_and_never_raises(payload: bytes, mode: str):
    actions = decide(payload, SRC, GROUP, PORT, mode, 1.0)  # type: ignore[arg-type]
    assert actions
    kinds = [type(a) for a in actions]
    if Drop in kinds:
        assert kinds == [Drop] or kinds == [Heard, Drop]
    else:
        assert kinds[0] is Heard
    assert (Stop in kinds) == (kinds[0] is Heard and is_stop(actions[0].text))  # type: ignore[union-attr]


@given(st.text(max_size=500))
def test_unicast_reply_is_the_upper_cased_text_verbatim(text: str):
    actions = decide(text.encode(), SRC, GROUP, PORT, "unicast", 0.0)
    if len(text.upper().encode()) > len(text.encode()):
        assert actions[1] == Drop(DropReason.AMPLIFYING)
    else:
        assert actions[1] == Reply(hear(text.upper()), SRC)


@given(st.text(alphabet=" \t\r\n\x0b\x0c", max_size=5), st.text(alphabet=" \t\r\n", max_size=5))
def test_stop_with_any_surrounding_white_space_stops(before: str, after: str):
    assert Stop(SRC) in decide(f"{before}STOP{after}".encode(), SRC, GROUP, PORT, "unicast", 0.0)


@given(st.text(max_size=20).filter(lambda t: t.strip() != "STOP"))
def test_nothing_else_stops(text: str):
    assert Stop(SRC) not in decide(text.encode(), SRC, GROUP, PORT, "unicast", 0.0)
