"""mcastd.exporter: socket activation, the probe gate, and the HTTP answers over real sockets.

The daemons here are stand-ins that answer the control socket's one request with a fixed
document (tests/net/test_exporter.py scrapes real daemons with a real Prometheus); the
prober is a stand-in that counts its runs (the probe itself is tested in tests/net).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcastd.exporter import (
    JOIN,
    REUSE,
    RUN,
    TIMEOUT_MARGIN,
    Probes,
    activated_fds,
    bind,
    decide,
    scrape_budget,
    serve,
)
from mcastd.exporterconfig import ExporterConfig, ProbeModule
from mcastd.metrics import ProbeResult, ResponderResult
from tests.test_metrics import document, endpoint


@pytest.mark.parametrize(
    ("environ", "pid", "fds"),
    [
        ({"LISTEN_PID": "7", "LISTEN_FDS": "1"}, 7, [3]),
        ({"LISTEN_PID": "7", "LISTEN_FDS": "2"}, 7, [3, 4]),
        ({"LISTEN_PID": "8", "LISTEN_FDS": "1"}, 7, []),  # meant for another process
        ({"LISTEN_FDS": "1"}, 7, []),
        ({"LISTEN_PID": "7", "LISTEN_FDS": "x"}, 7, []),
        ({}, 7, []),
    ],
)
def test_activated_fds(environ: dict[str, str], pid: int, fds: list[int]) -> None:
    assert activated_fds(environ, pid) == fds


@pytest.mark.parametrize(
    ("running", "last_started", "now", "action"),
    [
        (False, None, 100.0, RUN),
        (True, 99.0, 100.0, JOIN),
        (False, 95.0, 100.0, REUSE),  # 5 s after the last start, min_interval 10
        (False, 90.0, 100.0, RUN),  # exactly min_interval later
        (False, 50.0, 100.0, RUN),
    ],
)
def test_decide(running: bool, last_started: float | None, now: float, action: str) -> None:
    assert decide(running, last_started, 10.0, now) == action


@pytest.mark.parametrize(
    ("header", "budget"),
    [
        (None, 10.0 - TIMEOUT_MARGIN),
        ("5", 5.0 - TIMEOUT_MARGIN),
        ("2.5", 2.0),
        ("0.1", 0.2),  # a floor: some probe is better than an empty answer
        ("-3", 10.0 - TIMEOUT_MARGIN),
        ("nan", 10.0 - TIMEOUT_MARGIN),
        ("soon", 10.0 - TIMEOUT_MARGIN),
    ],
)
def test_scrape_budget(header: str | None, budget: float) -> None:
    assert scrape_budget(header) == pytest.approx(budget)


class CountingProber:
    """Counts runs; each takes `seconds` and reports one responder."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds
        self.runs = 0
        self.deadlines: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, module: ProbeModule, deadline: float) -> ProbeResult:
        with self.lock:
            self.runs += 1
        self.deadlines.append(deadline - time.monotonic())
        time.sleep(self.seconds)
        responder = ResponderResult("10.0.0.2", module.count, module.count, 0.001, 0.002)
        return ProbeResult(True, module.count, (responder,), self.seconds, time.time())


def module(name: str = "lan", min_interval: float = 60.0) -> ProbeModule:
    return ProbeModule(
        name=name, group="239.0.0.9", expect=("10.0.0.2",), min_interval=min_interval
    )


def test_back_to_back_results_reuse_the_last_probe() -> None:
    prober = CountingProber()
    probes = Probes({"lan": module()}, prober)
    first = probes.result("lan", 5.0)
    again = [probes.result("lan", 5.0) for _ in range(5)]
    assert prober.runs == 1
    assert all(r is first for r in again)


def test_concurrent_scrapes_join_the_probe_in_flight() -> None:
    prober = CountingProber(seconds=0.3)
    probes = Probes({"lan": module(min_interval=1.0)}, prober)
    results: list[ProbeResult] = []
    threads = [
        threading.Thread(target=lambda: results.append(probes.result("lan", 5.0))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert prober.runs == 1
    assert len(results) == 4
    assert all(r is results[0] for r in results)


def test_modules_are_gated_separately() -> None:
    prober = CountingProber()
    probes = Probes({"a": module("a"), "b": module("b")}, prober)
    probes.result("a", 5.0)
    probes.result("b", 5.0)
    assert prober.runs == 2


def test_a_prober_that_raises_gives_a_failed_result() -> None:
    def broken(module: ProbeModule, deadline: float) -> ProbeResult:
        raise OSError("no route")

    result = Probes({"lan": module()}, broken).result("lan", 5.0)
    assert not result.success
    assert result.error == "no route"


@contextmanager
def stand_in_daemon(path: Path, status: dict[str, object]) -> Iterator[None]:
    """An AF_UNIX socket at `path` that answers `status\\n` with `status` as mcastd does."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    stop = threading.Event()

    def answer() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2.0)
                request = b""
                while b"\n" not in request:
                    chunk = conn.recv(256)
                    if not chunk:
                        break
                    request += chunk
                conn.sendall(json.dumps(status).encode() + b"\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextmanager
def exporter(config: ExporterConfig, prober: CountingProber) -> Iterator[str]:
    """The exporter serving on a free loopback port; yields its base URL."""
    sock = bind("127.0.0.1:0")
    port = sock.getsockname()[1]
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=([sock], config, stop, prober), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=10)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http only)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only)
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_asks_every_daemon(tmp_path: Path) -> None:
    (tmp_path / "mcastd").mkdir()
    (tmp_path / "mcastd@239.1.1.1").mkdir()
    first = document("mcastd", endpoint(received=3, answered=3))
    second = document("mcastd@239.1.1.1", endpoint("239.1.1.1", state="failing", error="x"))
    config = ExporterConfig(runtime_dir=str(tmp_path))
    with (
        stand_in_daemon(tmp_path / "mcastd" / "control.sock", first),
        stand_in_daemon(tmp_path / "mcastd@239.1.1.1" / "control.sock", second),
        exporter(config, CountingProber()) as url,
    ):
        code, kind, text = get(url + "/metrics")
    assert code == 200
    assert kind.startswith("text/plain; version=0.0.4")
    got = values(text)
    labels = (("group", "239.0.0.9"), ("port", "59259"), ("unit", "mcastd"))
    assert got[("mcastd_requests_received_total", labels)] == 3
    failing = (("group", "239.1.1.1"), ("port", "59259"), ("unit", "mcastd@239.1.1.1"))
    assert got[("mcastd_serving", failing)] == 0
    assert got[("mcastd_exporter_daemons", ())] == 2


def test_metrics_with_no_daemon(tmp_path: Path) -> None:
    with exporter(ExporterConfig(runtime_dir=str(tmp_path)), CountingProber()) as url:
        code, _, text = get(url + "/metrics")
    assert code == 200
    assert values(text)[("mcastd_exporter_daemons", ())] == 0


def test_openmetrics_when_asked(tmp_path: Path) -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    with exporter(ExporterConfig(runtime_dir=str(tmp_path)), CountingProber()) as url:
        code, kind, text = get(url + "/metrics", {"Accept": accept})
    assert code == 200
    assert kind.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("module=nope", "unknown module 'nope': known modules are lan"),
        ("", "unknown module none: known modules are lan"),
        ("module=lan&module=lan", "give one module=NAME"),
        ("group=239.0.0.1&module=x", "unknown module 'x': known modules are lan"),
    ],
)
def test_probe_refuses_what_the_configuration_does_not_name(
    tmp_path: Path, query: str, message: str
) -> None:
    prober = CountingProber()
    config = ExporterConfig(runtime_dir=str(tmp_path), modules={"lan": module()})
    with exporter(config, prober) as url:
        code, _, text = get(f"{url}/probe?{query}")
    assert (code, text.strip()) == (400, message)
    assert prober.runs == 0


def test_probe_runs_the_module_within_the_scrape_timeout(tmp_path: Path) -> None:
    prober = CountingProber()
    config = ExporterConfig(runtime_dir=str(tmp_path), modules={"lan": module()})
    with exporter(config, prober) as url:
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "3"}
        code, _, text = get(url + "/probe?module=lan", headers)
        again = [get(url + "/probe?module=lan", headers)[0] for _ in range(3)]
    assert code == 200
    assert again == [200] * 3
    assert prober.runs == 1  # min_interval 60 s: the others got the same result
    assert 2.0 < prober.deadlines[0] <= 3.0 - TIMEOUT_MARGIN
    got = values(text)
    assert got[("probe_success", ())] == 1
    assert got[("probe_responder_up", (("responder", "10.0.0.2"),))] == 1


def test_unknown_path_is_404(tmp_path: Path) -> None:
    with exporter(ExporterConfig(runtime_dir=str(tmp_path)), CountingProber()) as url:
        code, _, text = get(url + "/etc/passwd")
    assert code == 404
    assert "/metrics" in text


def test_activated_socket_is_served(tmp_path: Path) -> None:
    """A listening socket handed over by descriptor (as systemd does) answers scrapes."""
    sock = bind("127.0.0.1:0")
    handed = socket.socket(fileno=os.dup(sock.fileno()))
    sock.close()
    port = handed.getsockname()[1]
    stop = threading.Event()
    config = ExporterConfig(runtime_dir=str(tmp_path))
    thread = threading.Thread(target=serve, args=([handed], config, stop, CountingProber()))
    thread.start()
    try:
        code, _, _ = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert code == 200
