"""snapshot: the status document the daemon builds, checked against docs/status.md."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from mcastd.config import Endpoint, Settings
from mcastd.snapshot import (
    DROP_REASONS,
    SCHEMA,
    Counters,
    EndpointState,
    daemon_document,
    endpoint_document,
    reload_record,
    status_document,
    status_line,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "status.md"


def documented_fields(table: str) -> set[str]:
    """The field names in the table under `**table**` in docs/status.md."""
    text = DOC.read_text().split(f"**{table}**", 1)[1].split("\n\n", 2)[1]
    names: set[str] = set()
    for row in text.splitlines()[2:]:
        names.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    return names


def wall_time(moment: float | None) -> float | None:
    return None if moment is None else moment + 1000.0


def counters() -> Counters:
    return Counters(
        received=10,
        answered=6,
        listened=1,
        dropped=Counter({"not_utf8": 2, "send_failed": 1}),
        bytes_in=100,
        bytes_out=80,
        suppressed_lines=3,
        stop_refused=Counter({"stale": 1}),
        last_source=("fe80::1", 4000, 0, 2),
        last_heard=5.0,
    )


def test_endpoint_document_has_exactly_the_documented_fields():
    e = Endpoint("ff05::9", 59259, Settings(ttl=3, interface="eth0"))
    document = endpoint_document(e, counters(), wall_time, pending_lines=2)
    assert set(document) == documented_fields("Endpoint")
    assert document["state"] == "serving"
    assert document["error"] is None
    assert document["last_source"] == "[fe80::1]:4000"
    assert document["last_heard"] == 1005.0
    assert document["suppressed_lines"] == 5
    assert list(document["dropped"]) == list(DROP_REASONS)  # type: ignore[call-overload]
    assert document["received"] == document["answered"] + document["listened"] + sum(
        document["dropped"].values()  # type: ignore[attr-defined]
    )


def test_an_endpoint_not_served_has_its_state_and_error():
    e = Endpoint("239.0.0.9", 59259)
    document = endpoint_document(e, Counters(), wall_time, EndpointState.FAILING, "no route")
    assert (document["state"], document["error"]) == ("failing", "no route")
    assert (document["received"], document["last_source"], document["last_heard"]) == (
        0,
        None,
        None,
    )


def test_daemon_document_has_the_documented_fields_and_the_one_schema():
    document = daemon_document(
        instance="mcastd",
        version="0.1.0",
        pid=7,
        config="/etc/mcastd.yaml",
        started=1.0,
        uptime=2.34567,
        status="1 group, 0 heard, 0 answered, 0 dropped",
        waiting=[Endpoint("239.0.0.9", 1)],
        last_reload=reload_record(5.12345, ["a: b"]),
        endpoints=[],
    )
    # `socket` is added by `mcastd status`, which knows which socket answered
    assert set(document) | {"socket"} == documented_fields("Daemon")
    assert document["schema"] == SCHEMA == status_document([])["schema"]
    assert document["uptime"] == 2.346
    assert document["waiting_for_interface"] == ["239.0.0.9:1"]
    assert document["last_reload"] == {"time": 5.123, "ok": False, "errors": ["a: b"]}
    assert f"# `mcastd status --json`: schema {SCHEMA}" in DOC.read_text()


def test_status_line_and_summary():
    assert status_line([]) == "0 groups, 0 heard, 0 answered, 0 dropped"
    assert status_line([counters(), Counters()]) == "2 groups, 10 heard, 6 answered, 3 dropped"
    assert counters().summary() == (
        "10 received, 6 answered, 1 listened, 3 dropped (2 not_utf8, 1 send_failed)"
    )


@pytest.mark.parametrize(
    ("served", "failing", "not_served", "line"),
    [
        (1, 1, 1, "1 group, 0 heard, 0 answered, 0 dropped; 1 of 2 groups failing"),
        (0, 1, 1, "0 groups, 0 heard, 0 answered, 0 dropped; 1 of 1 groups failing"),
        (2, 2, 3, "2 groups, 0 heard, 0 answered, 0 dropped; 2 of 5 groups failing"),
        # waiting for an interface is not failing: said in `state`, not in STATUS=
        (1, 0, 1, "1 group, 0 heard, 0 answered, 0 dropped"),
    ],
)
def test_status_line_counts_failing_groups(served: int, failing: int, not_served: int, line: str):
    counters = [Counters() for _ in range(served)]
    assert status_line(counters, failing=failing, not_served=not_served) == line


def test_a_reload_in_force_with_errors_is_ok():
    assert reload_record(1.0, ["[ff05::9]:59259: no route"], ok=True) == {
        "time": 1.0,
        "ok": True,
        "errors": ["[ff05::9]:59259: no route"],
    }
