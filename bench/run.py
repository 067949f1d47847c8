"""The benchmark proper: every responder in turn, the scale tests, the targets.

Everything here runs inside the bench's own network namespace (see bench.bootstrap).
Results are plain dicts so that they can be saved as JSON and rendered again.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import configs, hotspots, procstat
from bench.loadgen import Generator, LoadResult
from bench.responders import (
    GROUP,
    PORT,
    Running,
    Spec,
    StartFailed,
    floor_spec,
    mcastd_spec,
    upstream_spec,
)

RATES = (1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 150_000, 200_000, 0)
# A step sends `count` datagrams (default 10,000) but lasts at least STEP_SECONDS: mcastd's
# socket buffer holds about 10,000 of them, so a shorter step would measure the buffer, not
# the rate. The unpaced step sends UNPACED_COUNT.
STEP_SECONDS = 1.0
UNPACED_COUNT = 200_000
RTT_RATE = 20_000
RTT_REPEATS = 3  # extra steps at RTT_RATE; the target uses the median p99
# Lower rates, tried only for a responder that already loses datagrams at the lowest step,
# so that its zero-loss rate is a number and not "below 1,000/s".
PROBE_RATES = (100, 200, 500)
PROBE_COUNT = 1_000
SCALE_PAIRS = (1, 100, 1_000)
SCALE_REPEATS = 3
GROUPS_BURST = 50_000
GROUPS_REPEATS = 3
FLOOD_RATE = 50_000
MEMORY_SMALL = 10_000
MEMORY_LARGE = 1_000_000
PROFILE_RATE = 150_000
SETTLE = 0.2  # seconds between steps, so one step's backlog never spills into the next
# All the load comes from one source address, which the shipped per-source reply limit
# (reply_rate) would throttle: every run but the memory one turns it off.
UNLIMITED = {"reply_rate": 0}
MEMORY_SOURCES = 128  # the memory run keeps the shipped limits and spreads over sources


def log(message: str) -> None:
    print(message, flush=True)


def machine() -> dict[str, str]:
    model = "unknown"
    mhz = ""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model == "unknown":
                model = value.strip()
            elif key == "cpu MHz" and not mhz:
                mhz = value.strip()
    return {
        "cpu": model + (f" ({float(mhz):.0f} MHz)" if mhz else ""),
        "nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
        "kernel": platform.release(),
        "python": platform.python_version() + f" ({sys.executable})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def cpus() -> tuple[int | None, int | None]:
    """(generator CPU, responder CPU): one each when there are two, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) >= 2:
        return available[0], available[1]
    return None, None


def step_row(result: LoadResult, cpu: float, drops: int | None, count: int) -> dict[str, Any]:
    row = asdict(result)
    row.update(
        count=count,
        loss=result.loss,
        offered_rate=result.offered_rate,
        answered_rate=result.answered_rate,
        cpu_seconds=cpu,
        cpu_us_per_answer=cpu / result.answered * 1e6 if result.answered else None,
        rcvbuf_drops=drops,
    )
    return row


def describe(name: str, row: dict[str, Any]) -> str:
    rate = f"{row['rate']:>7,}/s" if row["rate"] else "unpaced  "
    return (
        f"  {name:<13} {rate} offered {row['offered_rate']:>9,.0f}/s "
        f"answered {row['answered']:>6}/{row['sent']:<6} loss {row['loss'] * 100:6.2f}% "
        f"p50 {row['rtt_p50_us']:>8.1f}us p99 {row['rtt_p99_us']:>8.1f}us "
        f"cpu {row['cpu_seconds']:.2f}s"
    )


def run_step(
    gen: Generator, responder: Running, count: int, rate: int, sockets: int = 1
) -> dict[str, Any]:
    cpu0 = responder.cpu_seconds()
    drops0 = procstat.udp_drops(PORT)
    result = gen.run(count, rate, sockets=sockets)
    drops = procstat.udp_drops(PORT) - drops0
    cpu = responder.cpu_seconds() - cpu0
    return step_row(result, cpu, drops if drops >= 0 else None, count)


def zero_loss_rate(steps: list[dict[str, Any]]) -> float:
    """Highest offered rate such that it and every lower step lost nothing (0 if none)."""
    best = 0.0
    for row in sorted(steps, key=lambda r: r["rate"] or float("inf")):
        if row["answered"] < row["sent"]:
            break
        best = float(row["rate"] or row["offered_rate"])
    return best


def step_at(steps: list[dict[str, Any]], rate: int) -> dict[str, Any] | None:
    return next((row for row in steps if row["rate"] == rate), None)


class Bench:
    def __init__(self, repo: Path, workdir: Path, binary: Path, count: int, smoke: bool) -> None:
        self.repo = repo
        self.workdir = workdir
        self.count = count
        self.smoke = smoke
        gen_cpu, self.responder_cpu = cpus()
        self.gen = Generator(binary, GROUP, PORT, gen_cpu)
        self.running: Running | None = None
        self.notes: list[str] = []
        self.default_config = configs.shipped(repo)

    # -- starting and stopping, with the one cleanup path --------------------------------

    def start(self, spec: Spec) -> Running:
        running = Running(spec, self.workdir, self.responder_cpu)
        self.running = running
        try:
            running.wait_ready()
        except StartFailed:
            self.stop()
            raise
        return running

    def stop(self) -> tuple[float, int | None]:
        running, self.running = self.running, None
        if running is None:
            return 0.0, None
        return running.stop()

    def close(self) -> None:
        """Called from the runner's finally: nothing started here outlives the bench."""
        self.stop()

    # -- mcastd specs ------------------------------------------------------------------------

    def mcastd(self, name: str, label: str, config: Path) -> Spec:
        return mcastd_spec(name, label, self.repo, config)

    def start_default_mcastd(self, name: str, label: str, **top: Any) -> Running:
        """mcastd on the shipped config (with top-level changes); IPv4-only if IPv6 fails."""
        config = (
            configs.variant(self.repo, self.workdir, name, **top) if top else (self.default_config)
        )
        try:
            return self.start(self.mcastd(name, label, config))
        except StartFailed as e:
            if "ff05" not in e.message and "IPv6" not in e.message:
                raise
            note = (
                f"{label}: could not join the IPv6 group of the shipped config in the "
                f"bench namespace, so it ran with the IPv4 group only ({e.message.strip()})"
            )
            self.notes.append(note)
            log("  NOTE " + note)
            return self.start(
                self.mcastd(name, label, configs.ipv4_only(self.repo, self.workdir, name, **top))
            )

    # -- the rate steps ------------------------------------------------------------------------

    def step_count(self, rate: int) -> int:
        if self.smoke:
            return self.count
        if rate == 0:
            return max(self.count, UNPACED_COUNT)
        return max(self.count, int(rate * STEP_SECONDS))

    def rate_steps(self, running: Running, rates: tuple[int, ...]) -> list[dict[str, Any]]:
        steps = []
        for rate in rates:
            row = run_step(self.gen, running, self.step_count(rate), rate)
            steps.append(row)
            log(describe(running.spec.name, row))
            if not running.alive():
                raise StartFailed(
                    running.spec.name, f"died during the {rate}/s step:\n{running.log_tail()}"
                )
            time.sleep(SETTLE)
        return steps

    def responder_run(
        self, spec_or_default: Spec | tuple[str, str, dict[str, Any]], rates: tuple[int, ...]
    ) -> dict[str, Any]:
        if isinstance(spec_or_default, Spec):
            running = self.start(spec_or_default)
        else:
            name, label, top = spec_or_default
            running = self.start_default_mcastd(name, label, **top)
        spec = running.spec
        log(f"{spec.label}: ready in {running.ready_seconds:.3f} s (pid {running.pid})")
        try:
            steps = self.rate_steps(running, rates)
            if steps and steps[0]["answered"] < steps[0]["sent"] and not self.smoke:
                log(
                    f"  {spec.name} loses datagrams at {rates[0]}/s: probing lower rates "
                    f"with {PROBE_COUNT} datagrams each"
                )
                for rate in PROBE_RATES:
                    row = run_step(self.gen, running, PROBE_COUNT, rate)
                    steps.append(row)
                    log(describe(spec.name, row))
                    time.sleep(SETTLE)
            rtt = [row["rtt_p99_us"] for row in steps if row["rate"] == RTT_RATE]
            if rtt and not self.smoke:
                for _ in range(RTT_REPEATS - 1):
                    row = run_step(self.gen, running, self.step_count(RTT_RATE), RTT_RATE)
                    rtt.append(row["rtt_p99_us"])
                    time.sleep(SETTLE)
                log(
                    f"  {spec.name} RTT p99 at {RTT_RATE:,}/s over {len(rtt)} steps: "
                    + ", ".join(f"{x:.0f}" for x in rtt)
                    + " us"
                )
            memory = running.memory_kib()
            buffers = procstat.receive_buffers(PORT)
        finally:
            exit_seconds, code = self.stop()
        steps.sort(key=lambda r: r["rate"] or float("inf"))
        return {
            "name": spec.name,
            "label": spec.label,
            "argv": list(spec.argv),
            "config": next((a for a in spec.argv if a.endswith(".yaml")), None),
            "ready_seconds": running.ready_seconds,
            "steps": steps,
            "zero_loss_rate": zero_loss_rate(steps),
            "rtt_p99_repeats": rtt,
            "rtt_p99_median": statistics.median(rtt) if rtt else None,
            "receive_buffers": buffers,
            "peak_rss_kib": memory.get("VmHWM"),
            "rss_kib": memory.get("VmRSS"),
            "exit_seconds": exit_seconds,
            "exit_code": code,
        }

    # -- scale: many (group, port) pairs ---------------------------------------------------

    def scale(self) -> dict[str, Any]:
        ready: dict[int, list[float]] = {n: [] for n in SCALE_PAIRS}
        rss: dict[int, list[int]] = {n: [] for n in SCALE_PAIRS}
        hwm: dict[int, list[int]] = {n: [] for n in SCALE_PAIRS}
        rates: dict[int, list[float]] = {1: [], SCALE_PAIRS[-1]: []}
        cpu_per: dict[int, list[float]] = {1: [], SCALE_PAIRS[-1]: []}
        paths = {n: configs.pairs(self.repo, self.workdir, n, **UNLIMITED) for n in SCALE_PAIRS}
        for repeat in range(SCALE_REPEATS):
            for n in SCALE_PAIRS:
                running = self.start(self.mcastd(f"pairs{n}", f"mcastd {n} pairs", paths[n]))
                try:
                    assert running.ready_seconds is not None
                    ready[n].append(running.ready_seconds)
                    mem = running.memory_kib()
                    rss[n].append(mem["VmRSS"])
                    hwm[n].append(mem["VmHWM"])
                    line = (
                        f"  {n:>5} pairs: ready {running.ready_seconds:.3f} s, "
                        f"RSS {mem['VmRSS'] / 1024:.1f} MiB"
                    )
                    if n in rates and repeat < GROUPS_REPEATS:
                        row = run_step(self.gen, running, GROUPS_BURST, 0)
                        rates[n].append(row["answered_rate"])
                        if row["cpu_us_per_answer"] is not None:
                            cpu_per[n].append(row["cpu_us_per_answer"])
                        line += (
                            f", unpaced burst of {GROUPS_BURST:,}: answered "
                            f"{row['answered_rate']:,.0f}/s"
                        )
                    log(line)
                finally:
                    self.stop()
        return {
            "pairs": {
                str(n): {
                    "ready_seconds": ready[n],
                    "ready_median": statistics.median(ready[n]),
                    "rss_kib": statistics.median(rss[n]),
                    "peak_rss_kib": max(hwm[n]),
                }
                for n in SCALE_PAIRS
            },
            "answered_rate": {str(n): rates[n] for n in rates},
            "answered_rate_median": {str(n): statistics.median(rates[n]) for n in rates},
            "cpu_us_per_answer_median": {
                str(n): statistics.median(cpu_per[n]) if cpu_per[n] else None for n in cpu_per
            },
        }

    # -- SIGTERM under a flood -----------------------------------------------------------------

    def sigterm_under_flood(self) -> dict[str, Any]:
        running = self.start_default_mcastd(
            "sigterm", "mcastd (shipped config, reply_rate: 0)", **UNLIMITED
        )
        flood = self.gen.start(FLOOD_RATE * 3, FLOOD_RATE)
        try:
            time.sleep(1.0)
            took, code = self.stop()
        finally:
            result = Generator.finish(flood, FLOOD_RATE)
        log(
            f"  SIGTERM under a {FLOOD_RATE:,}/s flood: exited {code} after {took * 1000:.1f} ms "
            f"({result.answered:,} answered before)"
        )
        del running
        return {
            "rate": FLOOD_RATE,
            "exit_seconds": took,
            "exit_code": code,
            "answered_before": result.answered,
        }

    # -- memory after many datagrams -----------------------------------------------------------

    def memory_growth(self, rate: int) -> dict[str, Any]:
        running = self.start_default_mcastd("memory", "mcastd (shipped config)")
        try:
            small = self.gen.run(MEMORY_SMALL, rate, sockets=MEMORY_SOURCES)
            after_small = running.memory_kib()["VmRSS"]
            large = self.gen.run(MEMORY_LARGE - MEMORY_SMALL, rate, sockets=MEMORY_SOURCES)
            after_large = running.memory_kib()["VmRSS"]
        finally:
            self.stop()
        growth = after_large / after_small - 1.0
        log(
            f"  RSS after {MEMORY_SMALL:,} datagrams {after_small / 1024:.2f} MiB, after "
            f"{MEMORY_LARGE:,} {after_large / 1024:.2f} MiB ({growth * 100:+.2f} %), "
            f"{small.answered + large.answered:,} answered at {rate:,}/s from "
            f"{MEMORY_SOURCES} source addresses"
        )
        return {
            "rate": rate,
            "sources": MEMORY_SOURCES,
            "rss_small_kib": after_small,
            "rss_large_kib": after_large,
            "growth": growth,
            "sent": small.sent + large.sent,
            "answered": small.answered + large.answered,
        }

    # -- where the time goes -------------------------------------------------------------------

    def profile(self, rate: int) -> dict[str, Any] | None:
        running = self.start_default_mcastd(
            "profile", "mcastd (shipped config, reply_rate: 0)", **UNLIMITED
        )
        out = self.workdir / "py-spy.txt"
        try:
            spy = hotspots.record(running.pid, out, self.gen.cpu)
            if spy is None:
                self.notes.append("py-spy not found: no profile taken")
                return None
            time.sleep(0.5)  # let py-spy attach before the load starts
            result = self.gen.run(int(rate * (hotspots.SECONDS + 0.5)), rate)
            spy.wait(timeout=60)
        finally:
            self.stop()
        if not out.exists():
            self.notes.append("py-spy wrote no profile")
            return None
        folded = hotspots.fold(out.read_text())
        folded.update(rate=rate, sent=result.sent, answered=result.answered)
        log(
            f"  profiled at {rate:,}/s: {folded['samples']} samples, "
            f"{result.answered:,}/{result.sent:,} answered"
        )
        for row in folded["self"][:8]:
            log(
                f"    {row['self'] * 100:5.1f}% self {row['total'] * 100:5.1f}% total  "
                f"{row['function']}"
            )
        return folded


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 4 with its figure and PASS/FAIL."""
    by_name = {r["name"]: r for r in results["responders"]}
    out: list[dict[str, Any]] = []

    def add(name: str, figure: str, ok: bool | None) -> None:
        out.append(
            {
                "target": name,
                "figure": figure,
                "result": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
            }
        )

    floor, mcastd, upstream = by_name.get("floor"), by_name.get("mcastd"), by_name.get("upstream")
    if floor and mcastd:
        f, m = floor["zero_loss_rate"], mcastd["zero_loss_rate"]
        ratio = m / f if f else 0.0
        add(
            "zero-loss rate, mcastd (shipped config, reply_rate: 0) >= 0.75x floor",
            f"{m:,.0f}/s vs {f:,.0f}/s = {ratio:.2f}x",
            ratio >= 0.75,
        )
    if mcastd and upstream:
        m, u = mcastd["zero_loss_rate"], upstream["zero_loss_rate"]
        if u > 0:
            ratio = m / u
            add(
                "zero-loss rate, mcastd >= 100x upstream",
                f"{m:,.0f}/s vs {u:,.0f}/s = {ratio:,.0f}x",
                ratio >= 100,
            )
        else:
            low = min(PROBE_RATES)
            add(
                "zero-loss rate, mcastd >= 100x upstream",
                f"{m:,.0f}/s vs upstream lossy even at {low}/s: > {m / low:,.0f}x",
                m / low >= 100,
            )
    if floor and mcastd:
        fp, mp = floor["rtt_p99_median"], mcastd["rtt_p99_median"]
        if fp and mp:
            ratio = mp / fp
            add(
                f"RTT p99 at {RTT_RATE // 1000}k/s, mcastd <= 1.5x floor (median of "
                f"{RTT_REPEATS} steps)",
                f"{mp:.0f} us vs {fp:.0f} us = {ratio:.2f}x",
                ratio <= 1.5,
            )
    scale = results.get("scale")
    if scale:
        big = str(SCALE_PAIRS[-1])
        one, many = scale["answered_rate_median"]["1"], scale["answered_rate_median"][big]
        ratio = many / one if one else 0.0
        add(
            f"answered rate on one group with {int(big):,} pairs >= 0.9x with 1",
            f"{many:,.0f}/s vs {one:,.0f}/s = {ratio:.2f}x",
            ratio >= 0.9,
        )
        ready = scale["pairs"][big]["ready_median"]
        add(
            f"start to READY=1 with {int(big):,} pairs < 1 s",
            f"{ready * 1000:.0f} ms (median of {SCALE_REPEATS})",
            ready < 1.0,
        )
        peak = scale["pairs"][big]["peak_rss_kib"] / 1024
        add(f"RSS with {int(big):,} pairs < 60 MB", f"{peak:.1f} MiB peak", peak * 1.048576 < 60)
    memory = results.get("memory")
    if memory:
        add(
            f"RSS after {MEMORY_LARGE:,} datagrams within 5% of after {MEMORY_SMALL:,}",
            f"{memory['rss_large_kib'] / 1024:.2f} MiB vs {memory['rss_small_kib'] / 1024:.2f} "
            f"MiB = {memory['growth'] * 100:+.2f} %",
            abs(memory["growth"]) <= 0.05,
        )
    sigterm = results.get("sigterm")
    if sigterm:
        add(
            f"SIGTERM to exit under a {sigterm['rate']:,}/s flood <= 1 s (contract)",
            f"{sigterm['exit_seconds'] * 1000:.0f} ms, exit code {sigterm['exit_code']}",
            sigterm["exit_seconds"] <= 1.0 and sigterm["exit_code"] == 0,
        )
    return out


def run(repo: Path, workdir: Path, binary: Path, count: int, smoke: bool) -> dict[str, Any]:
    bench = Bench(repo, workdir, binary, count, smoke)
    results: dict[str, Any] = {
        "machine": machine(),
        "count": count,
        "smoke": smoke,
        "rates": list(RATES),
        "responders": [],
        "notes": bench.notes,
    }
    rates = (1_000,) if smoke else RATES
    plan: list[Spec | tuple[str, str, dict[str, Any]]] = [
        floor_spec(),
        ("mcastd", "mcastd (shipped config, reply_rate: 0)", UNLIMITED),
    ]
    if not smoke:
        plan += [
            (
                "mcastd-nolog",
                "mcastd (log_datagrams: false, reply_rate: 0)",
                {**UNLIMITED, "log_datagrams": False},
            ),
            upstream_spec(),
        ]
    try:
        for item in plan:
            results["responders"].append(bench.responder_run(item, rates))
        if not smoke:
            log(f"mcastd with {', '.join(str(n) for n in SCALE_PAIRS)} (group, port) pairs:")
            results["scale"] = bench.scale()
            log("mcastd (reply_rate: 0) stopping under load:")
            results["sigterm"] = bench.sigterm_under_flood()
            zero = next(r for r in results["responders"] if r["name"] == "mcastd")
            rate = int(max(20_000, min(100_000, zero["zero_loss_rate"])))
            log(f"mcastd (shipped config as is) memory over {MEMORY_LARGE:,} datagrams:")
            results["memory"] = bench.memory_growth(rate)
            log("mcastd (reply_rate: 0) profile under load:")
            results["profile"] = bench.profile(PROFILE_RATE)
    finally:
        bench.close()
    results["targets"] = [] if smoke else targets(results)
    return results
