"""mcastd.metrics: status documents and probe results -> metric families (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from mcastd.metrics import (
    ProbeResult,
    ResponderResult,
    daemon_families,
    exporter_families,
    probe_families,
)

DROP_REASONS = (
    "not_utf8",
    "reply_too_large",
    "amplifying",
    "echo",
    "not_allowed",
    "rate_limited",
    "stop_refused",
    "send_failed",
    "receive_error",
)
STOP_REASONS = ("disabled", "not_allowed", "unauthenticated", "malformed", "bad_mac", "stale")


def endpoint(group: str = "239.0.0.9", port: int = 59259, **fields: Any) -> dict[str, Any]:
    """An endpoint of a status document (docs/status.md) with nothing heard yet."""
    base: dict[str, Any] = {
        "group": group,
        "port": port,
        "interface": None,
        "reply": "unicast",
        "ttl": 1,
        "received": 0,
        "answered": 0,
        "listened": 0,
        "dropped": dict.fromkeys(DROP_REASONS, 0),
        "stop_refused": dict.fromkeys(STOP_REASONS, 0),
        "suppressed_lines": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "last_source": None,
        "last_heard": None,
    }
    base.update(fields)
    return base


def document(instance: str = "mcastd", *endpoints: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema": 1,
        "instance": instance,
        "version": "0.1.0",
        "pid": 42,
        "socket": f"/run/mcastd/{instance}/control.sock",
        "config": "/etc/mcastd.yaml",
        "started": 1_700_000_000.5,
        "uptime": 10.0,
        "status": "1 groups",
        "last_reload": None,
        "waiting_for_interface": [],
        "endpoints": list(endpoints) or [endpoint()],
    }
    base.update(fields)
    return base


def samples(families: list[Metric]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as it appears in the 0.0.4 text format: (name, sorted labels) -> value."""

    class Fixed:
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in found, f"duplicate series {key}"
            found[key] = s.value
    return found


def ep_labels(unit: str = "mcastd", group: str = "239.0.0.9", port: int = 59259, **extra: str):
    return tuple(sorted({"unit": unit, "group": group, "port": str(port), **extra}.items()))


def test_fresh_daemon_has_every_series_at_zero() -> None:
    got = samples(daemon_families([document()]))
    labels = ep_labels()
    for name in (
        "mcastd_requests_received_total",
        "mcastd_requests_answered_total",
        "mcastd_requests_listened_total",
        "mcastd_received_bytes_total",
        "mcastd_sent_bytes_total",
        "mcastd_log_lines_suppressed_total",
        "mcastd_last_heard_timestamp_seconds",
    ):
        assert got[(name, labels)] == 0.0, name
    for reason in DROP_REASONS:
        assert got[("mcastd_requests_dropped_total", ep_labels(reason=reason))] == 0.0
    for reason in STOP_REASONS:
        assert got[("mcastd_stop_refused_total", ep_labels(reason=reason))] == 0.0
    assert got[("mcastd_serving", labels)] == 1.0
    assert got[("mcastd_last_reload_success", (("unit", "mcastd"),))] == 1.0
    assert got[("mcastd_last_reload_timestamp_seconds", (("unit", "mcastd"),))] == 0.0


def test_counters_and_facts_are_copied() -> None:
    busy = endpoint(
        received=10,
        answered=7,
        listened=0,
        bytes_in=100,
        bytes_out=300,
        last_heard=1_700_000_100.25,
        last_source="10.0.0.1:4000",
        dropped={**dict.fromkeys(DROP_REASONS, 0), "rate_limited": 3},
        stop_refused={**dict.fromkeys(STOP_REASONS, 0), "disabled": 2},
    )
    reload = {"time": 1_700_000_050.0, "ok": True, "errors": []}
    got = samples(daemon_families([document("mcastd@239.0.0.9", busy, last_reload=reload)]))
    unit = "mcastd@239.0.0.9"
    labels = ep_labels(unit)
    assert got[("mcastd_requests_received_total", labels)] == 10
    assert got[("mcastd_requests_answered_total", labels)] == 7
    assert got[("mcastd_received_bytes_total", labels)] == 100
    assert got[("mcastd_sent_bytes_total", labels)] == 300
    assert got[("mcastd_requests_dropped_total", ep_labels(unit, reason="rate_limited"))] == 3
    assert got[("mcastd_stop_refused_total", ep_labels(unit, reason="disabled"))] == 2
    assert got[("mcastd_last_heard_timestamp_seconds", labels)] == 1_700_000_100.25
    assert got[("mcastd_start_time_seconds", (("unit", unit),))] == 1_700_000_000.5
    assert got[("mcastd_last_reload_timestamp_seconds", (("unit", unit),))] == 1_700_000_050.0
    assert got[("mcastd_build_info", (("unit", unit), ("version", "0.1.0")))] == 1
    assert got[("mcastd_config_info", (("config", "/etc/mcastd.yaml"), ("unit", unit)))] == 1
    info = ep_labels(unit, interface="", reply="unicast", ttl="1")
    assert got[("mcastd_endpoint_info", info)] == 1  # interface "": Prometheus drops the label
    # The sender is never a label.
    assert not any("10.0.0.1" in value for _, labels in got for _, value in labels)


@pytest.mark.parametrize(
    ("fields", "waiting", "serving"),
    [
        ({}, [], 1.0),  # a daemon older than the field
        ({"state": "serving"}, [], 1.0),
        ({"state": "failing", "error": "no route"}, [], 0.0),
        ({"state": "waiting"}, [], 0.0),
        ({"state": "exploded"}, [], 0.0),  # unknown: not serving
        ({}, ["239.0.0.9:59259"], 0.0),  # waiting_for_interface
    ],
)
def test_serving(fields: dict[str, str], waiting: list[str], serving: float) -> None:
    got = samples(
        daemon_families([document("d", endpoint(**fields), waiting_for_interface=waiting)])
    )
    assert got[("mcastd_serving", ep_labels("d"))] == serving


@pytest.mark.parametrize(
    ("last_reload", "success", "time"),
    [
        (None, 1.0, 0.0),
        ({"time": 5.0, "ok": True, "errors": []}, 1.0, 5.0),
        ({"time": 6.0, "ok": False, "errors": ["x.yaml:1:1: bad"]}, 0.0, 6.0),
        ({"time": 7.0, "ok": True, "errors": ["ff05::9: cannot join"]}, 0.0, 7.0),
    ],
)
def test_reload(last_reload: dict[str, Any] | None, success: float, time: float) -> None:
    got = samples(daemon_families([document("d", last_reload=last_reload)]))
    assert got[("mcastd_last_reload_success", (("unit", "d"),))] == success
    assert got[("mcastd_last_reload_timestamp_seconds", (("unit", "d"),))] == time


def test_two_daemons_of_one_name_give_one_set_of_series() -> None:
    first = document("mcastd", endpoint(received=1))
    second = document("mcastd", endpoint(received=2))
    got = samples(daemon_families([first, second]))
    assert got[("mcastd_requests_received_total", ep_labels())] == 1


def test_no_daemon_gives_empty_families() -> None:
    assert samples(daemon_families([])) == {}


def test_exporter_families() -> None:
    got = samples(exporter_families(2, 1, 0.25))
    assert got[("mcastd_exporter_daemons", ())] == 2
    assert got[("mcastd_exporter_errors", ())] == 1
    assert got[("mcastd_exporter_scrape_duration_seconds", ())] == 0.25


groups = st.sampled_from(["239.0.0.9", "239.1.2.3", "ff05::9", "232.1.1.1"])
counts = st.integers(min_value=0, max_value=2**53)
endpoints = st.builds(
    endpoint,
    group=groups,
    port=st.integers(min_value=1, max_value=65535),
    received=counts,
    answered=counts,
    bytes_in=counts,
    last_heard=st.none() | st.floats(min_value=0, max_value=4e9),
    dropped=st.fixed_dictionaries({r: counts for r in DROP_REASONS}),
    state=st.sampled_from(["serving", "failing", "waiting"]),
)
documents = st.builds(
    document,
    st.text(alphabet="abcdefgh@.:-_,09", min_size=1, max_size=30),
    last_reload=st.none()
    | st.fixed_dictionaries(
        {"time": st.floats(0, 4e9), "ok": st.booleans(), "errors": st.lists(st.text(), max_size=2)}
    ),
    config=st.text(max_size=40),
).flatmap(
    lambda d: st.lists(
        endpoints, min_size=1, max_size=4, unique_by=lambda e: (e["group"], e["port"])
    ).map(lambda es: {**d, "endpoints": es})
)


@settings(max_examples=60, deadline=None)
@given(st.lists(documents, max_size=3))
def test_any_documents_give_valid_bounded_exposition(docs: list[dict[str, Any]]) -> None:
    got = samples(daemon_families(docs))  # asserts that no series is given twice
    allowed = {"unit", "group", "port", "reason", "version", "config", "interface"}
    allowed |= {"reply", "ttl"}
    for name, labels in got:
        assert name.startswith("mcastd_")
        assert {k for k, _ in labels} <= allowed, (name, labels)
    # One serving series per (unit, group, port) of the first document of each name.
    names = {d["instance"]: d for d in reversed(docs)}
    expected = sum(len(d["endpoints"]) for d in names.values())
    assert sum(1 for name, _ in got if name == "mcastd_serving") == expected


def result(*responders: ResponderResult, success: bool = True, sent: int = 5) -> ProbeResult:
    return ProbeResult(success, sent, responders, 1.5, 1_700_000_000.0)


def probe_samples(expect: tuple[str, ...], hops: bool, outcome: ProbeResult):
    return samples(probe_families(expect, hops, outcome))


def r(
    address: str, answered: int, median: float | None = None, top: float | None = None, hops=None
):
    return ResponderResult(address, 5, answered, median, top, hops)


def test_probe_all_expected_answered() -> None:
    outcome = result(r("10.0.0.2", 5, 0.001, 0.002), r("10.0.0.3", 4, 0.003, 0.010))
    got = probe_samples(("10.0.0.2", "10.0.0.3"), False, outcome)
    assert got[("probe_success", ())] == 1
    assert got[("probe_duration_seconds", ())] == 1.5
    assert got[("probe_responders_seen", ())] == 2
    assert got[("probe_responders_expected", ())] == 2
    assert got[("probe_loss_ratio", ())] == pytest.approx(0.1)  # (0 + 0.2) / 2
    assert got[("probe_rtt_median_seconds", ())] == pytest.approx(0.002)
    assert got[("probe_rtt_max_seconds", ())] == pytest.approx(0.010)
    assert got[("probe_responder_up", (("responder", "10.0.0.3"),))] == 1
    assert got[("probe_responder_loss_ratio", (("responder", "10.0.0.3"),))] == pytest.approx(0.2)
    assert not any(name == "probe_responder_hops" for name, _ in got)


def test_probe_missing_and_unexpected_responders() -> None:
    outcome = result(r("10.0.0.2", 5, 0.001, 0.001), r("10.0.0.9", 5, 0.5, 0.5), success=False)
    got = probe_samples(("10.0.0.2", "10.0.0.3"), True, outcome)
    assert got[("probe_success", ())] == 0
    assert got[("probe_responder_up", (("responder", "10.0.0.3"),))] == 0
    assert got[("probe_responder_loss_ratio", (("responder", "10.0.0.3"),))] == 1
    assert got[("probe_loss_ratio", ())] == pytest.approx(0.5)
    assert got[("probe_responders_seen", ())] == 2
    # The unexpected responder counts as seen but has no series of its own, and the RTT
    # figures are over the expected responders only.
    assert not any(dict(labels).get("responder") == "10.0.0.9" for _, labels in got)
    assert got[("probe_rtt_max_seconds", ())] == pytest.approx(0.001)


def test_probe_hops_only_when_asked() -> None:
    outcome = result(r("10.0.0.2", 5, 0.001, 0.001, hops=2))
    got = probe_samples(("10.0.0.2",), True, outcome)
    assert got[("probe_responder_hops", (("responder", "10.0.0.2"),))] == 2


def test_probe_without_roster_counts_whoever_answered() -> None:
    outcome = result(r("10.0.0.2", 5, 0.001, 0.001), r("10.0.0.3", 0))
    got = probe_samples((), False, outcome)
    assert got[("probe_responders_seen", ())] == 1
    assert got[("probe_loss_ratio", ())] == 0
    assert not any(name.startswith("probe_responder_") for name, _ in got)


def test_probe_that_could_not_run() -> None:
    got = probe_samples(("10.0.0.2",), False, ProbeResult.failed("no route"))
    assert got[("probe_success", ())] == 0
    assert got[("probe_loss_ratio", ())] == 1
    assert ("probe_rtt_median_seconds", ()) not in got


@pytest.mark.parametrize(
    ("medians", "median"),
    [([0.001], 0.001), ([0.001, 0.003], 0.002), ([0.003, 0.001, 0.002], 0.002)],
)
def test_probe_rtt_median_over_responders(medians: list[float], median: float) -> None:
    outcome = result(*(r(f"10.0.0.{i}", 5, m, m) for i, m in enumerate(medians, 2)))
    got = probe_samples((), False, outcome)
    assert got[("probe_rtt_median_seconds", ())] == pytest.approx(median)
