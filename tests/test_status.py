"""status: what `mcastd status` shows of the documents, rendered at a fixed `now`."""

from __future__ import annotations

import json

import pytest

from mcastd.snapshot import SCHEMA
from mcastd.status import Document, _size, only_groups, render_json, render_text

NOW = 1_800_000_000.0


def endpoint(group: str, **fields: object) -> Document:
    document: Document = {
        "group": group,
        "port": 59259,
        "interface": None,
        "reply": "unicast",
        "ttl": 1,
        "state": "serving",
        "error": None,
        "received": 0,
        "answered": 0,
        "listened": 0,
        "dropped": {"not_utf8": 0, "rate_limited": 0},
        "stop_refused": {},
        "suppressed_lines": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "last_source": None,
        "last_heard": None,
    }
    return document | fields


def daemon(*endpoints: Document, **fields: object) -> Document:
    document: Document = {
        "schema": SCHEMA,
        "instance": "mcastd",
        "version": "0.1.0",
        "pid": 42,
        "config": "/etc/mcastd.yaml",
        "started": NOW - 3725,
        "uptime": 3725.0,
        "status": f"{len(endpoints)} groups, 0 heard, 0 answered, 0 dropped",
        "waiting_for_interface": [],
        "last_reload": None,
        "endpoints": list(endpoints),
        "socket": "/run/mcastd/mcastd/control.sock",
    }
    return document | fields


def test_render_text_table_with_notes_per_endpoint():
    busy = endpoint(
        "239.0.0.9",
        received=1500,
        answered=1400,
        dropped={"not_utf8": 0, "rate_limited": 100},
        bytes_in=3000,
        bytes_out=2 * 1024 * 1024,
        last_source="192.0.2.7:40000",
        last_heard=NOW - 75,
        suppressed_lines=9,
    )
    waiting = endpoint("ff02::9", interface="eth9", state="waiting")
    failing = endpoint("ff05::9", state="failing", error="[ff05::9]:59259: no route for multicast")
    reloaded = {"time": NOW - 30, "ok": False, "errors": ["x", "y"]}
    text = render_text([daemon(busy, waiting, failing, last_reload=reloaded)], now=NOW)
    assert text.splitlines() == [
        "mcastd (pid 42, mcastd 0.1.0): up 1h 02m, config /etc/mcastd.yaml, "
        "reloaded 30s ago: FAILED (2 errors)",
        "  3 groups, 0 heard, 0 answered, 0 dropped",
        "  GROUP:PORT       RECEIVED  ANSWERED  DROPPED  IN/OUT         LAST SENDER      HEARD",
        "  239.0.0.9:59259      1500      1400      100  2.9KiB/2.0MiB  192.0.2.7:40000"
        "  1m 15s ago",
        "    239.0.0.9:59259: 100 rate_limited, 9 log lines suppressed",
        "  [ff02::9]:59259         0         0        0  0B/0B          -                never",
        "    [ff02::9]:59259: waiting for interface eth9",
        "  [ff05::9]:59259         0         0        0  0B/0B          -                never",
        "    [ff05::9]:59259: failing: [ff05::9]:59259: no route for multicast",
    ]


def test_render_text_of_a_daemon_never_reloaded():
    first = render_text([daemon(uptime=59.9)], now=NOW).splitlines()[0]
    assert first.endswith("up 59s, config /etc/mcastd.yaml, never reloaded")


def test_only_groups_keeps_the_daemons_that_serve_them():
    a = daemon(endpoint("239.0.0.9"), endpoint("239.0.0.10"))
    b = daemon(endpoint("239.0.0.11"), pid=43)
    assert only_groups([a, b], []) == [a, b]
    (kept,) = only_groups([a, b], ["239.0.0.10"])
    assert [e["group"] for e in kept["endpoints"]] == ["239.0.0.10"]
    assert kept["pid"] == 42
    assert only_groups([a, b], ["239.0.0.99"]) == []


def test_render_json_names_the_schema_once():
    document = json.loads(render_json([daemon()]))
    assert document["schema"] == SCHEMA
    assert document["daemons"][0]["pid"] == 42


@pytest.mark.parametrize(
    ("count", "shown"),
    [(0, "0B"), (1023, "1023B"), (1024, "1.0KiB"), (3000, "2.9KiB"), (2 << 20, "2.0MiB"),
     (5 << 30, "5.0GiB"), (3000 << 30, "3000.0GiB")],
)  # fmt: skip
def test_sizes(count: int, shown: str):
    assert _size(count) == shown
