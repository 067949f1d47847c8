"""Status documents -> Prometheus metric families (pure: no socket, no clock).

Naming follows Prometheus practice: one `mcastd_` prefix, base units (seconds, bytes), `_total`
for counters, `_info` for facts, timestamps rather than ages. Labels are bounded: `unit` (the
daemon's name; `instance` belongs to Prometheus), `group`, `port`, and a drop or refusal
`reason` from a fixed set. There is never a per-source label: the last sender stays in
`mcastd status`. Every series a daemon can have exists from its first scrape, at 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

Document = Mapping[str, Any]

ENDPOINT_LABELS = ("unit", "group", "port")
# The states of an endpoint in the status document (a missing field is a serving endpoint,
# as documents of daemons older than the field show).
STATES = ("serving", "failing", "waiting")

# (metric name, status field, help) for the per-endpoint counters.
ENDPOINT_COUNTERS = (
    ("mcastd_requests_received", "received", "Datagrams read from the group's socket."),
    ("mcastd_requests_answered", "answered", "Replies sent."),
    ("mcastd_requests_listened", "listened", "Datagrams heard with reply: none."),
    ("mcastd_received_bytes", "bytes_in", "Payload bytes received."),
    ("mcastd_sent_bytes", "bytes_out", "Payload bytes sent in replies."),
    (
        "mcastd_log_lines_suppressed",
        "suppressed_lines",
        "Per-datagram log lines held back by the 20-a-second limit.",
    ),
)


def state_of(endpoint: Document) -> str:
    state = endpoint.get("state", "serving")
    return state if state in STATES else "failing"


def _unique(documents: Iterable[Document]) -> list[Document]:
    """One document per daemon name: two daemons under one name would be duplicate series,
    which Prometheus rejects; the first one found is kept."""
    seen: set[str] = set()
    kept = []
    for document in documents:
        name = str(document["instance"])
        if name not in seen:
            seen.add(name)
            kept.append(document)
    return kept


def daemon_families(documents: Sequence[Document]) -> list[Metric]:
    """The metric families of every daemon's status document."""
    documents = _unique(documents)
    build = InfoMetricFamily(
        "mcastd_build", "The mcastd version a daemon runs.", labels=["unit", "version"]
    )
    config = InfoMetricFamily(
        "mcastd_config", "The configuration file a daemon read.", labels=["unit", "config"]
    )
    start = GaugeMetricFamily(
        "mcastd_start_time_seconds", "When the daemon started (Unix time).", labels=["unit"]
    )
    reload_time = GaugeMetricFamily(
        "mcastd_last_reload_timestamp_seconds",
        "When the daemon last reloaded (Unix time; 0: never).",
        labels=["unit"],
    )
    reload_ok = GaugeMetricFamily(
        "mcastd_last_reload_success",
        "1 if the last reload succeeded without errors (or there was none), else 0.",
        labels=["unit"],
    )
    endpoints_info = InfoMetricFamily(
        "mcastd_endpoint",
        "How a (group, port) is served: configured interface, reply mode and TTL.",
        labels=[*ENDPOINT_LABELS, "interface", "reply", "ttl"],
    )
    counters = {
        field: CounterMetricFamily(name, text, labels=list(ENDPOINT_LABELS))
        for name, field, text in ENDPOINT_COUNTERS
    }
    dropped = CounterMetricFamily(
        "mcastd_requests_dropped",
        "Datagrams not answered, by reason.",
        labels=[*ENDPOINT_LABELS, "reason"],
    )
    refused = CounterMetricFamily(
        "mcastd_stop_refused",
        "STOP datagrams refused, by reason.",
        labels=[*ENDPOINT_LABELS, "reason"],
    )
    heard = GaugeMetricFamily(
        "mcastd_last_heard_timestamp_seconds",
        "When the last datagram arrived (Unix time; 0: never).",
        labels=list(ENDPOINT_LABELS),
    )
    serving = GaugeMetricFamily(
        "mcastd_serving",
        "1 if the (group, port) is joined and answering, 0 if it is failing or waiting.",
        labels=list(ENDPOINT_LABELS),
    )
    info_name = endpoints_info.name + "_info"
    dropped_name = dropped.name + "_total"
    refused_name = refused.name + "_total"
    for document in documents:
        unit = str(document["instance"])
        build.add_metric([unit, str(document["version"])], {})
        config.add_metric([unit, str(document["config"])], {})
        start.add_metric([unit], float(document["started"]))
        last_reload = document.get("last_reload")
        reload_time.add_metric([unit], float(last_reload["time"]) if last_reload else 0.0)
        ok = last_reload is None or (last_reload["ok"] and not last_reload["errors"])
        reload_ok.add_metric([unit], 1.0 if ok else 0.0)
        waiting = set(document.get("waiting_for_interface") or ())
        for endpoint in document["endpoints"]:
            # Samples are appended directly (add_metric rebuilds the label dict per call):
            # a scrape of 1,000 endpoints is some 20,000 samples.
            group, port = str(endpoint["group"]), str(endpoint["port"])
            labels = {"unit": unit, "group": group, "port": port}
            info = {
                **labels,
                "interface": str(endpoint.get("interface") or ""),
                "reply": str(endpoint.get("reply", "")),
                "ttl": str(endpoint.get("ttl", "")),
            }
            endpoints_info.samples.append(Sample(info_name, info, 1.0))
            for field, family in counters.items():
                family.samples.append(
                    Sample(family.name + "_total", labels, float(endpoint.get(field, 0)))
                )
            for reason, count in sorted(endpoint["dropped"].items()):
                dropped.samples.append(
                    Sample(dropped_name, {**labels, "reason": reason}, float(count))
                )
            for reason, count in sorted(endpoint.get("stop_refused", {}).items()):
                refused.samples.append(
                    Sample(refused_name, {**labels, "reason": reason}, float(count))
                )
            last = float(endpoint.get("last_heard") or 0.0)
            heard.samples.append(Sample(heard.name, labels, last))
            state = state_of(endpoint)
            if f"{group}:{port}" in waiting:
                state = "waiting"
            serving.samples.append(Sample(serving.name, labels, 1.0 if state == "serving" else 0.0))
    return [
        build,
        config,
        start,
        reload_time,
        reload_ok,
        endpoints_info,
        *counters.values(),
        dropped,
        refused,
        heard,
        serving,
    ]


def exporter_families(answered: int, problems: int, seconds: float) -> list[Metric]:
    """What the scrape itself found: daemons that answered, sockets that did not, its time."""
    daemons = GaugeMetricFamily(
        "mcastd_exporter_daemons", "mcastd daemons that answered this scrape."
    )
    daemons.add_metric([], float(answered))
    errors = GaugeMetricFamily(
        "mcastd_exporter_errors",
        "Control sockets or runtime directories that could not be read in this scrape.",
    )
    errors.add_metric([], float(problems))
    duration = GaugeMetricFamily(
        "mcastd_exporter_scrape_duration_seconds", "Time spent asking the daemons."
    )
    duration.add_metric([], seconds)
    return [daemons, errors, duration]


@dataclass(frozen=True)
class ResponderResult:
    """What one responder did during a probe."""

    address: str
    sent: int
    """Probes that count for it (with a TTL sweep: those sent with a TTL that reaches it)."""
    answered: int
    """Probes it answered in time (each counted once)."""
    rtt_median: float | None = None
    """Median round-trip time in seconds (None: no answer)."""
    rtt_max: float | None = None
    hops: int | None = None
    """Smallest TTL that reached it (None: not measured)."""

    @property
    def loss(self) -> float:
        return min(max(1.0 - self.answered / self.sent, 0.0), 1.0) if self.sent > 0 else 1.0


@dataclass(frozen=True)
class ProbeResult:
    """One probe of a module, reduced to what the metrics need."""

    success: bool
    """The probe's verdict (every expected responder answered within the module's max_loss;
    without a roster, any responder did)."""
    sent: int
    """Probe datagrams sent."""
    responders: tuple[ResponderResult, ...]
    duration: float
    """Seconds the probe took."""
    started: float
    """When it started (Unix time)."""
    error: str | None = None
    """Why the probe could not run (no route, no such interface ...), else None."""

    @classmethod
    def failed(cls, error: str, started: float = 0.0) -> ProbeResult:
        return cls(False, 0, (), 0.0, started, error)


def probe_families(expect: Sequence[str], hops: bool, result: ProbeResult) -> list[Metric]:
    """The /probe answer. Per-responder series exist only for the expected responders, so
    their number is bounded by the configuration, not by who answers."""
    by_address = {r.address: r for r in result.responders if r.answered > 0}
    counted = list(expect) if expect else sorted(by_address)
    losses = [r.loss if (r := by_address.get(a)) else 1.0 for a in counted]
    medians = sorted(
        r.rtt_median for a in counted if (r := by_address.get(a)) and r.rtt_median is not None
    )
    maxima = [r.rtt_max for a in counted if (r := by_address.get(a)) and r.rtt_max is not None]

    def gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, text)
        family.add_metric([], value)
        return family

    families: list[Metric] = [
        gauge(
            "probe_success",
            "1 if every expected responder answered within max_loss (without a roster: any).",
            1.0 if result.success else 0.0,
        ),
        gauge("probe_duration_seconds", "How long the probe took.", result.duration),
        gauge(
            "probe_start_timestamp_seconds",
            "When the probe whose result this is started (Unix time): a scrape within the "
            "module's min_interval repeats the last result.",
            result.started,
        ),
        gauge("probe_sent_datagrams", "Probe datagrams sent to the group.", float(result.sent)),
        gauge(
            "probe_responders_seen", "Distinct responders that answered.", float(len(by_address))
        ),
        gauge("probe_responders_expected", "Responders named by the module.", float(len(expect))),
        gauge(
            "probe_loss_ratio",
            "Mean share of probes lost, over the expected responders (without a roster: over "
            "those that answered; 1 if none did).",
            sum(losses) / len(losses) if losses else 1.0,
        ),
    ]
    if medians:
        middle = len(medians) // 2
        median = (
            medians[middle] if len(medians) % 2 else (medians[middle - 1] + medians[middle]) / 2
        )
        families.append(
            gauge(
                "probe_rtt_median_seconds",
                "Median over responders of each one's median round-trip time.",
                median,
            )
        )
        families.append(
            gauge("probe_rtt_max_seconds", "Largest round-trip time of any responder.", max(maxima))
        )
    up = GaugeMetricFamily(
        "probe_responder_up", "1 if the expected responder answered.", labels=["responder"]
    )
    loss = GaugeMetricFamily(
        "probe_responder_loss_ratio",
        "Share of probes the responder did not answer.",
        labels=["responder"],
    )
    rtt = GaugeMetricFamily(
        "probe_responder_rtt_seconds",
        "Median round-trip time of the responder.",
        labels=["responder"],
    )
    distance = GaugeMetricFamily(
        "probe_responder_hops",
        "Smallest TTL that reached the responder (forward hop distance).",
        labels=["responder"],
    )
    for address in expect:
        found = by_address.get(address)
        up.add_metric([address], 1.0 if found else 0.0)
        loss.add_metric([address], found.loss if found else 1.0)
        if found is not None and found.rtt_median is not None:
            rtt.add_metric([address], found.rtt_median)
        if hops and found is not None and found.hops is not None:
            distance.add_metric([address], float(found.hops))
    families += [up, loss, rtt]
    if hops:
        families.append(distance)
    return families


class Families(Collector):
    """A collector that yields families made beforehand (a file's, or one probe's)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def exposition(collector: Collector, accept: str | None = None) -> tuple[bytes, str]:
    """The collector's families in the format an `Accept` header asks for (the text format
    0.0.4 without one), and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
