"""`mcastd exporter` scraped by a real Prometheus (Debian's), with real mcastd responders on a
bridge; promtool checks the exposition and the shipped alert rules.

Segment: the monitor (10.77.0.1) runs the exporter and Prometheus, each on the monitor's own
loopback; responders r1 (10.77.0.2) and r2 (10.77.0.3) run mcastd. The exporter reads the
responders' control sockets by path (AF_UNIX sockets live in the file system, not in a
network namespace), as it reads those under /run/mcastd on a real host.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.hosts import Daemons, Host, segment
from tests.netns import REPO, Daemon, mcastd_argv, terminate

pytestmark = pytest.mark.net

EXPORTER = "127.0.0.1:9859"
PROMETHEUS = "127.0.0.1:9090"
ALERTS = REPO / "docs" / "examples" / "mcastd-alerts.yml"
COUNTED_GROUP = "239.0.0.77"  # only the counting test sends here
BURST_GROUP = "239.0.0.78"  # only the rate test probes here
R1_CONFIG = """\
groups:
  - group: 239.0.0.9
  - group: 239.0.0.77
  - group: 239.0.0.78
"""
R2_CONFIG = "groups:\n  - group: 239.0.0.9\n"
BURST_COUNT = 3
BURST_SPACING = 2.0


def exporter_config(sockets: list[Path], runtime_dir: Path) -> str:
    return json.dumps(
        {
            "runtime_dir": str(runtime_dir),
            "sockets": [str(s) for s in sockets],
            "modules": {
                "lan": {
                    "group": "239.0.0.9",
                    "count": 3,
                    "interval": 0.05,
                    "wait": 0.3,
                    "expect": ["10.77.0.2", "10.77.0.3"],
                    "min_interval": 1,
                },
                "hops": {
                    "group": "239.0.0.9",
                    "count": 1,
                    "interval": 0.05,
                    "wait": 0.3,
                    "expect": ["10.77.0.2", "10.77.0.3"],
                    "hops": True,
                    "max_hops": 3,
                },
                "burst": {
                    "group": BURST_GROUP,
                    "count": BURST_COUNT,
                    "interval": 0.05,
                    "wait": 0.3,
                    "expect": ["10.77.0.2"],
                    "min_interval": BURST_SPACING,
                },
            },
        }
    )


PROMETHEUS_CONFIG = f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mcastd
    static_configs:
      - targets: ["{EXPORTER}"]
  - job_name: mcastd_probe
    metrics_path: /probe
    params:
      module: [lan]
    scrape_interval: 2s
    scrape_timeout: 2s
    static_configs:
      - targets: ["{EXPORTER}"]
"""


def fetch(host: Host, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET `url` from inside `host` (the socket is made in its namespace)."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (http only)
    with host.entered():
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


def wait_until(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something true; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, ValueError, KeyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


class Process:
    """A long-running program inside a host, its output in a file, stopped by SIGTERM."""

    def __init__(self, host: Host, argv: list[str], log: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                host.command(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        return terminate(self.proc, timeout=10)


class Site(NamedTuple):
    monitor: Host
    r1: Daemon
    r2: Daemon
    daemons: Daemons
    sockets: list[Path]
    dir: Path
    exporter: Process


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    work = Path(tempfile.mkdtemp(prefix="mc6-exporter-"))
    daemons = Daemons()
    exporter: Process | None = None
    try:
        with segment(("mc6mon", 1), ("mc6r1", 2), ("mc6r2", 3)) as (monitor, h1, h2):
            r1 = daemons.start(h1, R1_CONFIG)
            r2 = daemons.start(h2, R2_CONFIG, ["--group", "239.0.0.9"])
            sockets = [r1.control_socket, r2.control_socket]
            (work / "run").mkdir()
            config = work / "exporter.yaml"
            config.write_text(exporter_config(sockets, work / "run"))
            argv = mcastd_argv("exporter", "--config", str(config), "--listen", EXPORTER)
            exporter = Process(monitor, argv, work / "exporter.log")
            wait_until(
                "the exporter answers",
                lambda: fetch(monitor, f"http://{EXPORTER}/")[0] == 200,
                timeout=15,
            )
            yield Site(monitor, r1, r2, daemons, sockets, work, exporter)
    finally:
        if exporter is not None:
            exporter.stop()
        daemons.close()
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def prometheus(site: Site) -> Iterator[Callable[[str], list[tuple[dict[str, str], float]]]]:
    """Debian's Prometheus in the monitor's namespace, scraping the exporter; yields a
    function that runs an instant query through its HTTP API."""
    work = site.dir / "prometheus"
    work.mkdir()
    config = work / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG)
    argv = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address={PROMETHEUS}",
        "--web.enable-lifecycle",
    ]
    server = Process(site.monitor, argv, work / "prometheus.log")

    def query(expr: str) -> list[tuple[dict[str, str], float]]:
        url = f"http://{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        code, body = fetch(site.monitor, url)
        answer = json.loads(body)
        assert code == 200, answer
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    try:
        wait_until(
            "Prometheus is ready",
            lambda: fetch(site.monitor, f"http://{PROMETHEUS}/-/ready")[0] == 200,
        )
        yield query
    finally:
        code = server.stop()
        assert code == 0, server.output()[-3000:]


def send(host: Host, group: str, count: int) -> None:
    sock = host.client()
    try:
        for n in range(count):
            sock.sendto(b"count %d" % n, (group, 59259))
            time.sleep(0.002)
    finally:
        sock.close()


def single(results: list[tuple[dict[str, str], float]]) -> float | None:
    return results[0][1] if len(results) == 1 else None


def test_probe_measures_hops_when_the_module_asks(site: Site) -> None:
    """Both responders are on the segment: the smallest TTL that reaches them is 1."""
    code, text = fetch(site.monitor, f"http://{EXPORTER}/probe?module=hops")
    assert code == 200, text
    hops = {
        line.split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("probe_responder_hops{")
    }
    assert hops == {"10.77.0.2": 1.0, "10.77.0.3": 1.0}
    assert "probe_success 1.0" in text.splitlines()


def test_prometheus_sees_the_counters_and_the_probe(site: Site) -> None:
    sent = 37
    send(site.monitor, COUNTED_GROUP, sent)
    with prometheus(site) as query:
        received = f'mcastd_requests_received_total{{group="{COUNTED_GROUP}",job="mcastd"}}'
        # The raw counter (not increase(), which extrapolates) equals what was sent.
        wait_until(
            f"{received} == {sent}",
            lambda: single(query(received)) == sent,
        )
        (labels, _), *_ = query(received)
        assert labels["unit"]
        assert labels["port"] == "59259"
        # Every series of a daemon exists before its first event.
        dropped = query(f'mcastd_requests_dropped_total{{group="{COUNTED_GROUP}"}}')
        assert {m["reason"] for m, _ in dropped} >= {"not_utf8", "rate_limited"}
        assert len({m["unit"] for m, _ in query("mcastd_build_info")}) == 2

        wait_until("probe_success == 1", lambda: single(query("probe_success")) == 1)
        up = {m["responder"]: v for m, v in query("probe_responder_up")}
        assert up == {"10.77.0.2": 1.0, "10.77.0.3": 1.0}
        assert single(query("probe_responders_seen")) == 2

        site.r2.stop()
        wait_until("probe_success == 0", lambda: single(query("probe_success")) == 0)
        wait_until(
            "r2 missing",
            lambda: single(query('probe_responder_up{responder="10.77.0.3"}')) == 0,
        )
        assert single(query('probe_responder_up{responder="10.77.0.2"}')) == 1


def promtool(*argv: str, text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Debian's promtool with `argv`, `text` on its standard input."""
    return subprocess.run(
        ["promtool", *argv], input=text, capture_output=True, text=True, timeout=30, check=False
    )


def test_metrics_pass_promtool(site: Site) -> None:
    code, text = fetch(site.monitor, f"http://{EXPORTER}/metrics")
    assert code == 200
    assert "mcastd_requests_received_total" in text
    checked = promtool("check", "metrics", text=text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_textfile_passes_promtool(site: Site) -> None:
    output = site.dir / "textfile" / "mcastd.prom"
    output.parent.mkdir()
    argv = ["status", "--format", "prometheus", "--output", str(output)]
    for path in site.sockets:
        argv += ["--socket", str(path)]
    done = subprocess.run(
        mcastd_argv(*argv), capture_output=True, text=True, cwd=REPO, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert os.listdir(output.parent) == ["mcastd.prom"]
    text = output.read_text()
    assert "mcastd_serving{" in text
    assert " info\n" not in text
    checked = promtool("check", "metrics", text=text)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


@pytest.mark.parametrize("query", ["module=nope", "module=", "target=239.0.0.1"])
def test_unknown_module_is_400(site: Site, query: str) -> None:
    code, text = fetch(site.monitor, f"http://{EXPORTER}/probe?{query}")
    assert code == 400
    assert "known modules are burst, hops, lan" in text


def test_back_to_back_scrapes_keep_to_the_documented_rate(site: Site) -> None:
    """A module sends `count` probes per `min_interval`, however often it is scraped."""
    before = site.daemons.status(site.r1)[(BURST_GROUP, 59259)]["received"]
    started = time.monotonic()
    codes = [fetch(site.monitor, f"http://{EXPORTER}/probe?module=burst")[0] for _ in range(12)]
    elapsed = time.monotonic() - started
    time.sleep(0.5)  # the last probes' datagrams are on their way
    after = site.daemons.status(site.r1)[(BURST_GROUP, 59259)]["received"]
    assert codes == [200] * 12
    allowed = BURST_COUNT * (math.floor(elapsed / BURST_SPACING) + 1)
    assert BURST_COUNT <= after - before <= allowed, (after - before, elapsed)


ALERT_TESTS = """\
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'mcastd_serving{{unit="mcastd",group="ff05::9",port="59259",
          instance="h:9859",job="mcastd"}}'
        values: '1 0 0 0 0'
      - series: 'mcastd_last_reload_success{{unit="mcastd",instance="h:9859",job="mcastd"}}'
        values: '1 1 0'
      - series: 'probe_responder_up{{responder="10.0.0.3",instance="h:9859",job="probe"}}'
        values: '1 0 0 0 0 0 0 0'
      - series: 'probe_responder_loss_ratio{{responder="10.0.0.2",instance="h:9859",job="probe"}}'
        values: '0.5x40'
    alert_rule_test:
      - eval_time: 4m
        alertname: McastdGroupNotServing
        exp_alerts:
          - exp_labels: {{severity: warning, unit: mcastd, group: "ff05::9", port: "59259",
                          instance: "h:9859", job: mcastd}}
            exp_annotations:
              summary: "mcastd on h:9859 does not serve ff05::9 port 59259"
              description: "See `mcastd status` on the host for the reason
                (it is also in the journal)."
      - eval_time: 2m
        alertname: McastdReloadFailed
        exp_alerts:
          - exp_labels: {{severity: warning, unit: mcastd, instance: "h:9859", job: mcastd}}
            exp_annotations:
              summary: "mcastd on h:9859: the last reload failed"
              description: "`mcastd check` names the problem; `mcastd status` shows the errors."
      - eval_time: 7m
        alertname: McastdProbeResponderMissing
        exp_alerts:
          - exp_labels: {{severity: warning, responder: 10.0.0.3, instance: "h:9859", job: probe}}
            exp_annotations:
              summary: "Responder 10.0.0.3 does not answer probe h:9859"
      - eval_time: 3m
        alertname: McastdProbeResponderMissing
        exp_alerts: []
      - eval_time: 35m
        alertname: McastdProbeLossHigh
        exp_alerts:
          - exp_labels: {{severity: info, responder: 10.0.0.2, instance: "h:9859", job: probe}}
            exp_annotations:
              summary: "50% of probes to 10.0.0.2 lost (h:9859)"
"""


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tests = tmp_path / "alerts-test.yml"
    tests.write_text(ALERT_TESTS.format(rules=json.dumps(str(ALERTS))))
    tested = promtool("test", "rules", str(tests))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
