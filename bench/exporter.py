"""`mcastd exporter` on demand: scrape time and cost, and whether scraping costs mcastd datagrams.

    sudo python3 -m bench.exporter

Runs in a network namespace of its own (it re-executes itself under `unshare --net`), with
IPv4 multicast routed to `lo`; nothing leaves it. Prints the figures for docs/benchmarks.md.

- Scrape time: GET /metrics 20 times (one after another) against one mcastd serving 1,000
  (group, port) and against 10 mcastd serving 100 each; median and max wall time per scrape
  (target: under 200 ms), and the exporter's CPU time per scrape (/proc/PID/stat).
- Scraping under load: mcastd's zero-loss step (the highest rate of bench.run's steps such
  that it and every lower step lost nothing, the C load generator of bench/) measured twice
  in the same run, alternating step by step: without scrapes, and while the exporter is
  scraped every 100 ms. Target: the same step.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench import configs, netns
from bench.cli import add_wait_quiet, loadavg, wait_for_quiet
from bench.loadgen import build
from bench.probe import machine
from bench.responders import PORT, Running, Spec, mcastd_spec
from bench.run import RATES, SETTLE, Bench, run_step, zero_loss_rate
from mcastd.control import query

REPO = Path(__file__).resolve().parent.parent
LISTEN = "127.0.0.1:9859"
LISTEN_ARGS = ("--listen", LISTEN)
SCRAPES = 20
SCRAPE_EVERY = 0.1
TARGET_SECONDS = 0.2


def endpoints_config(workdir: Path, name: str, first: int, count: int) -> Path:
    """A config serving `count` IPv4 groups 239.(first + i // 250).x.y on the bench port."""
    groups = [
        {"group": f"239.{first + i // 250}.{(i // 250) % 250}.{i % 250 + 1}", "ports": [PORT]}
        for i in range(count)
    ]
    data = {"reply_rate": 0, "log_datagrams": False, "groups": groups}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Exporter:
    """`mcastd exporter` reading the given control sockets, on LISTEN."""

    def __init__(self, workdir: Path, sockets: list[Path]) -> None:
        runtime = workdir / "no-runtime-dir"
        runtime.mkdir(exist_ok=True)
        config = workdir / "exporter.yaml"
        config.write_text(
            json.dumps({"runtime_dir": str(runtime), "sockets": [str(s) for s in sockets]})
        )
        argv = (sys.executable, "-m", "mcastd", "exporter", "--config", str(config), *LISTEN_ARGS)
        # Started, logged to exporter.log and stopped as bench's responders are; it sends no
        # READY=1 that Running.wait_ready could wait for: a scrape answered is the sign.
        spec = Spec("exporter", "mcastd exporter", argv, notify=False, cwd=REPO)
        self.running = Running(spec, workdir, None)
        if not answered(scrape, self.running, 20, (OSError,)):
            self.stop()
            raise SystemExit("bench.exporter: the exporter did not come up")

    def cpu_seconds(self) -> float:
        return self.running.cpu_seconds()

    def stop(self) -> None:
        self.running.stop(timeout=10)


def scrape() -> tuple[float, bytes]:
    """One GET /metrics: (seconds, body)."""
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://{LISTEN}/metrics", timeout=10) as response:
        body = response.read()
    return time.perf_counter() - started, body


def answered(
    ask: Callable[[], object],
    running: Running,
    timeout: float,
    errors: tuple[type[Exception], ...],
) -> bool:
    """Call `ask` every 0.1 s until it raises none of `errors` (True); False once `running`
    has exited or `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ask()
            return True
        except errors:
            if not running.alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.1)


def answering(control: Path, running: Running, timeout: float = 120.0) -> None:
    """Wait until the daemon answers on its control socket (its groups are not the bench
    group, which Running.wait_ready probes)."""
    if not answered(lambda: query(control), running, timeout, (OSError, ValueError)):
        raise SystemExit(f"bench.exporter: no answer on {control}:\n{running.log_tail()}")


def count_series(body: bytes) -> int:
    return sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))


def scrape_time(workdir: Path, layout: list[int]) -> dict[str, Any]:
    """Daemons with `layout[i]` endpoints each; SCRAPES scrapes of all of them."""
    daemons: list[Running] = []
    sockets = []
    exporter: Exporter | None = None
    try:
        for index, count in enumerate(layout):
            name = f"d{index}"
            control = workdir / f"{name}.sock"
            config = endpoints_config(workdir, name, 10 + 5 * index, count)
            spec = mcastd_spec(name, name, REPO, config, "--control-socket", str(control))
            running = Running(spec, workdir, None)
            daemons.append(running)
            answering(control, running)
            sockets.append(control)
        exporter = Exporter(workdir, sockets)
        cpu0 = exporter.cpu_seconds()
        times = []
        body = b""
        for _ in range(SCRAPES):
            seconds, body = scrape()
            times.append(seconds)
        cpu = exporter.cpu_seconds() - cpu0
    finally:
        if exporter is not None:
            exporter.stop()
        for running in daemons:
            running.stop()
    return {
        "daemons": len(layout),
        "endpoints": sum(layout),
        "median_ms": statistics.median(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "cpu_ms_per_scrape": cpu / SCRAPES * 1e3,
        "bytes": len(body),
        "series": count_series(body),
    }


class Scraper:
    """GET /metrics every SCRAPE_EVERY seconds in a thread, until stopped."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped.wait(SCRAPE_EVERY):
            scrape()
            self.count += 1

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join()
        return self.count


def under_load(workdir: Path, count: int, rates: tuple[int, ...]) -> dict[str, Any]:
    """The zero-loss step without and with scrapes every 100 ms, step by step alternating."""
    # bench.run's set-up: the generator on one CPU (with this process), mcastd on the other.
    bench = Bench(REPO, workdir, build(workdir), count, smoke=False)
    config = configs.ipv4_only(REPO, workdir, "load", reply_rate=0)
    control = workdir / "load.sock"
    steps: dict[str, list[dict[str, Any]]] = {"quiet": [], "scraped": []}
    scrapes = 0
    exporter_cpu = 0.0
    for rate in rates:
        for condition in ("quiet", "scraped"):
            spec = mcastd_spec("load", "mcastd", REPO, config, "--control-socket", str(control))
            running = bench.start(spec)
            exporter = None
            scraper = None
            try:
                if condition == "scraped":
                    exporter = Exporter(workdir, [control])
                    cpu0 = exporter.cpu_seconds()
                    scraper = Scraper()
                step_count = max(count, rate) if rate else count * 10
                row = run_step(bench.gen, running, step_count, rate, bench.responder_cpu)
                if scraper is not None and exporter is not None:
                    scrapes += scraper.stop()
                    exporter_cpu += exporter.cpu_seconds() - cpu0
            finally:
                if scraper is not None and not scraper.stopped.is_set():
                    scraper.stop()
                if exporter is not None:
                    exporter.stop()
                bench.stop()
            steps[condition].append(row)
            print(
                f"  {condition:<8} {rate or 'unpaced':>7}/s: answered {row['answered']}/"
                f"{row['sent']}",
                flush=True,
            )
            time.sleep(SETTLE)
    return {
        "zero_loss_quiet": zero_loss_rate(steps["quiet"]),
        "zero_loss_scraped": zero_loss_rate(steps["scraped"]),
        "scrapes": scrapes,
        "exporter_cpu_ms_per_scrape": exporter_cpu / scrapes * 1e3 if scrapes else None,
        "steps": steps,
    }


def section(results: dict[str, Any]) -> str:
    """The Markdown of this bench's section of docs/benchmarks.md, printed for pasting."""
    busy = results["busy_before"]
    load = results["load"]
    per_scrape = load["exporter_cpu_ms_per_scrape"]
    scraped_ok = load["zero_loss_scraped"] >= load["zero_loss_quiet"]
    lines = [
        "## mcastd exporter: scrape time and cost",
        "",
        "Printed by `sudo python3 -m bench.exporter` (about a minute, its own network "
        "namespace). Scrape time: 20 scrapes of /metrics one after another (wall time of the "
        "GET); exporter CPU from /proc. Under load: mcastd's zero-loss step (bench.run's "
        "steps and C load generator) measured without scrapes and while /metrics is scraped "
        "every 100 ms, alternating step by step with a fresh daemon per step.",
        "",
        machine().rstrip("\n"),
        f"- Machine {busy * 100:.0f} % busy just before the run"
        if busy is not None
        else "- Machine load before the run not measured (no --wait-quiet)",
        "",
        "| daemons x endpoints | series | scrape median | scrape max | target < 200 ms | "
        "exporter CPU per scrape | size |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in results["scrape"]:
        met = row["median_ms"] < TARGET_SECONDS * 1e3 and row["max_ms"] < TARGET_SECONDS * 1e3
        lines.append(
            f"| {row['daemons']} x {row['endpoints'] // row['daemons']:,} | "
            f"{row['series']:,} | {row['median_ms']:.1f} ms | {row['max_ms']:.1f} ms | "
            f"**{'PASS' if met else 'FAIL'}** | {row['cpu_ms_per_scrape']:.1f} ms | "
            f"{row['bytes'] / 1024:,.0f} KiB |"
        )
    cpu = f"{per_scrape:.1f} ms" if per_scrape is not None else "-"
    lines += [
        "",
        "| zero-loss step without scrapes | with a scrape every 100 ms | scrapes | "
        "exporter CPU per scrape (one daemon) | result |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {load['zero_loss_quiet']:,.0f}/s | {load['zero_loss_scraped']:,.0f}/s | "
        f"{load['scrapes']} | {cpu} | **{'PASS' if scraped_ok else 'FAIL'}** |",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.exporter", description=__doc__)
    parser.add_argument("--count", type=int, default=10_000, help="datagrams per load step")
    parser.add_argument(
        "--rates",
        default=",".join(str(r) for r in RATES if r),
        help="load steps, datagrams a second",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    add_wait_quiet(parser, 0.0)
    args = parser.parse_args()
    netns.enter("bench.exporter")
    # 1,000 sockets in one daemon, plus its own files.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    busy = wait_for_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="mc6-bench-exporter-") as tmp:
        workdir = Path(tmp)
        results: dict[str, Any] = {"scrape": []}
        for layout in ([1000], [100] * 10):
            print(f"scrape time: {len(layout)} daemon(s), {sum(layout)} endpoints", flush=True)
            results["scrape"].append(scrape_time(workdir, layout))
        print("zero-loss step, without and with scrapes every 100 ms", flush=True)
        rates = tuple(int(r) for r in args.rates.split(","))
        results["load"] = under_load(workdir, args.count, rates)
    results["seconds"] = time.time() - started
    results["busy_before"] = busy
    results["loadavg_after"] = loadavg()
    print()
    print(section(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
