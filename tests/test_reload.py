"""reload.plan: (what is served, a new config) -> steps, decided without a socket."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.config import Config, Endpoint, parse
from mcastd.reload import Close, Open, Rejoin, Retune, Served, Wait, plan, stop_key

KEY = b"k" * 32


def config(text: str) -> Config:
    return parse(text, "new.yaml")


def serving(text: str, keys: dict[str, bytes] | None = None) -> dict[tuple[str, int], Served]:
    """What a server would serve after starting with `text` (every endpoint joined)."""
    old = replace(config(text), keys=keys or {})
    return {e.key: Served(e, stop_key(old, e), old.reply_rate_total) for e in old.endpoints()}


def endpoint(text: str, group: str, port: int = 59259) -> Endpoint:
    return next(e for e in config(text).endpoints() if e.key == (group, port))


A = "groups: [239.0.0.9]\n"
AB = "groups: [239.0.0.9, 239.0.0.10]\n"
A_TTL = "ttl: 4\ngroups: [239.0.0.9]\n"
A_ETH = "interface: eth0\ngroups: [239.0.0.9]\n"
A_SSM = "groups:\n  - group: 232.1.1.1\n    sources: [192.0.2.1]\n"
A_SSM2 = "groups:\n  - group: 232.1.1.1\n    sources: [192.0.2.1, 192.0.2.2]\n"
A_TWO_PORTS = "groups:\n  - group: 239.0.0.9\n    ports: [1, 2]\n"
A_TOTAL = "reply_rate_total: 50\ngroups: [239.0.0.9]\n"
A_WAIT = "interface: eth9\nwait_for_interface: true\ngroups: [239.0.0.9]\n"


P = 59259
STEPS = {"open": Open, "close": Close, "rejoin": Rejoin, "retune": Retune, "wait": Wait}


def expected_steps(new: str, rows: list[tuple[str, str, int]]) -> tuple[object, ...]:
    """("retune", group, port) -> Retune(that endpoint of `new`); ("close", ...) -> Close(key)."""
    return tuple(
        Close((group, port)) if kind == "close" else STEPS[kind](endpoint(new, group, port))
        for kind, group, port in rows
    )


A_UTTL = "unicast_ttl: 9\ngroups: [239.0.0.9]\n"
A_NONE = "reply: none\ngroups: [239.0.0.9]\n"
A_ETH_TTL = "interface: eth0\nttl: 3\ngroups: [239.0.0.9]\n"
B = "groups: [239.0.0.10]\n"
A_PORTS_23 = "groups:\n  - group: 239.0.0.9\n    ports: [2, 3]\n"
AB_TOTAL = "reply_rate_total: 50\ngroups: [239.0.0.9, 239.0.0.10]\n"


@pytest.mark.parametrize(
    ("old", "new", "rows"),
    [
        (A, A, []),
        (A, AB, [("open", "239.0.0.10", P)]),
        (AB, A, [("close", "239.0.0.10", P)]),
        (A, B, [("close", "239.0.0.9", P), ("open", "239.0.0.10", P)]),
        (A, A_TTL, [("retune", "239.0.0.9", P)]),
        (A, A_UTTL, [("retune", "239.0.0.9", P)]),
        (A, A_NONE, [("retune", "239.0.0.9", P)]),
        (A, A_ETH, [("rejoin", "239.0.0.9", P)]),
        (A_ETH, A_ETH_TTL, [("retune", "239.0.0.9", P)]),
        (A_ETH, A, [("rejoin", "239.0.0.9", P)]),
        (A_SSM, A_SSM2, [("rejoin", "232.1.1.1", P)]),
        (A_TWO_PORTS, A_PORTS_23, [("close", "239.0.0.9", 1), ("open", "239.0.0.9", 3)]),
        # the daemon-wide reply rate is one bucket that every channel shares: all retune
        (AB, AB_TOTAL, [("retune", "239.0.0.9", P), ("retune", "239.0.0.10", P)]),
        (A_TOTAL, A_TOTAL, []),
    ],
)
def test_plan_table(old: str, new: str, rows: list[tuple[str, str, int]]):
    assert plan(serving(old), {}, config(new)) == expected_steps(new, rows)


def test_a_changed_stop_key_retunes_and_the_same_key_does_not():
    text = "stop:\n  key_file: /k\ngroups: [239.0.0.9]\n"
    current = serving(text, {"/k": KEY})
    same = replace(config(text), keys={"/k": KEY})
    assert plan(current, {}, same) == ()
    other = replace(config(text), keys={"/k": b"o" * 32})
    assert plan(current, {}, other) == (Retune(endpoint(text, "239.0.0.9")),)


def test_endpoints_not_served_yet():
    waiting = endpoint(A_WAIT, "239.0.0.9")
    absent = {"eth9"}
    # unchanged and still absent: nothing to do (it is being retried)
    assert plan({}, {waiting.key: waiting}, config(A_WAIT), absent) == ()
    # not wanted any more: forgotten
    assert plan({}, {waiting.key: waiting}, config(AB.replace("9,", "8,")), absent) == (
        Close(waiting.key),
        Open(endpoint(AB.replace("9,", "8,"), "239.0.0.8")),
        Open(endpoint(AB, "239.0.0.10")),
    )
    # changed while absent: waits with the new settings; once there, opened
    changed = "interface: eth9\nwait_for_interface: true\nttl: 5\ngroups: [239.0.0.9]\n"
    new = endpoint(changed, "239.0.0.9")
    assert plan({}, {waiting.key: waiting}, config(changed), absent) == (Wait(new),)
    assert plan({}, {waiting.key: waiting}, config(changed), ()) == (Open(new),)
    # a new endpoint whose interface is absent waits only with wait_for_interface
    assert plan({}, {}, config(A_WAIT), absent) == (Wait(waiting),)
    no_wait = "interface: eth9\ngroups: [239.0.0.9]\n"
    assert plan({}, {}, config(no_wait), absent) == (Open(endpoint(no_wait, "239.0.0.9")),)


def test_closes_come_before_everything_else():
    new = "ttl: 2\ngroups: [239.0.0.11, 239.0.0.9]\n"
    steps = plan(serving(AB), {}, config(new))
    assert [type(s) for s in steps] == [Close, Open, Retune]


GROUPS = [f"239.0.0.{i}" for i in range(1, 6)]


def _text(groups: list[str], ttl: int, interface: str | None) -> str:
    head = f"ttl: {ttl}\n" + (f"interface: {interface}\n" if interface else "")
    return head + "groups: [" + ", ".join(groups) + "]\n"


texts = st.builds(
    _text,
    st.lists(st.sampled_from(GROUPS), unique=True, min_size=1, max_size=5),
    st.integers(0, 3),
    st.sampled_from([None, "eth0", "eth1"]),
)


@given(texts, texts)
def test_carrying_out_the_plan_serves_exactly_the_new_config(old: str, new: str):
    """Applied to the old set of endpoints, the steps give the new set; no step is a no-op."""
    current = serving(old)
    served = {k: s.endpoint for k, s in current.items()}
    for step in plan(current, {}, config(new)):
        if type(step) is Close:
            assert step.key in served
            del served[step.key]
        else:
            assert type(step) in (Open, Rejoin, Retune)
            assert served.get(step.endpoint.key) != step.endpoint or type(step) is Retune
            served[step.endpoint.key] = step.endpoint
    assert served == {e.key: e for e in config(new).endpoints()}
