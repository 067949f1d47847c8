"""The benchmark proper: every responder in turn, the scale tests, the targets.

Everything here runs inside the bench's own network namespace (see bench.bootstrap).
Results are plain dicts so that they can be saved as JSON and rendered again.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import configs, hotpath, hotspots, procstat
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
RTT_REPEATS = 5  # steps at RTT_RATE for floor and mcastd; the target uses the median p99
RTT_NAMES = ("floor", "mcastd")
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
# A step during which other processes took more than this share of the responder's CPU, or
# the generator could not keep its rate, is measured again (at most STEP_ATTEMPTS times in
# all, within RETRY_SECONDS for the whole run): this VM is shared.
DISTURBED_SHARE = 0.05
STEP_ATTEMPTS = 3
RETRY_SECONDS = 60.0
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
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version() + f" ({sys.executable})",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def mcastd_version(repo: Path) -> str:
    """The last commit that changed mcastd/ or etc/, and whether they differ from it now."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("log", "-1", "--format=%h %s", "--", "mcastd", "etc") or "unknown"
    dirty = git("status", "--porcelain", "--", "mcastd", "etc")
    return commit + (" (plus uncommitted changes in mcastd/ or etc/)" if dirty else "")


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
        f"cpu {row['cpu_seconds']:.2f}s (others {row.get('other_cpu_seconds', 0):.2f}s)"
    )


def measure_step(
    gen: Generator, responder: Running, count: int, rate: int, cpu_index: int | None
) -> dict[str, Any]:
    cpu0 = responder.cpu_seconds()
    busy0 = procstat.cpu_busy(cpu_index)
    drops0 = procstat.udp_drops(PORT)
    wall0 = time.monotonic()
    result = gen.run(count, rate)
    wall = time.monotonic() - wall0
    drops = procstat.udp_drops(PORT) - drops0
    cpu = responder.cpu_seconds() - cpu0
    row = step_row(result, cpu, drops if drops >= 0 else None, count)
    busy = procstat.cpu_busy(cpu_index)
    # CPU time on the responder's CPU that was not the responder's (softirq left out: much
    # of it is the responder's own datagrams): another process, or the hypervisor (steal).
    row["other_cpu_seconds"] = max(0.0, busy["task"] - busy0["task"] - cpu)
    row["steal_seconds"] = busy["steal"] - busy0["steal"]
    row["wall_seconds"] = wall
    return row


class RetryBudget:
    """Seconds the whole run may spend repeating disturbed steps."""

    def __init__(self, seconds: float) -> None:
        self.left = seconds
        self.used = 0
        self.exhausted = False


def disturbed(row: dict[str, Any]) -> str | None:
    """Why a step's figures say more about the machine than about the responder, if they do."""
    if row["other_cpu_seconds"] > DISTURBED_SHARE * row["wall_seconds"]:
        return f"others used {row['other_cpu_seconds']:.2f} s of the responder's CPU"
    if row["rate"] and row["offered_rate"] < 0.97 * row["rate"]:
        return f"the generator fell behind ({row['offered_rate']:,.0f}/s sent)"
    return None


def run_step(
    gen: Generator,
    responder: Running,
    count: int,
    rate: int,
    cpu_index: int | None = None,
    budget: RetryBudget | None = None,
) -> dict[str, Any]:
    """One step; repeated (at most twice, within the budget) while it was disturbed."""
    for attempt in range(1, STEP_ATTEMPTS + 1):
        row = measure_step(gen, responder, count, rate, cpu_index)
        row["attempts"] = attempt
        why = disturbed(row)
        row["disturbed"] = why
        if why is None or budget is None or attempt == STEP_ATTEMPTS:
            break
        if budget.left < row["wall_seconds"]:
            budget.exhausted = True
            break
        budget.left -= row["wall_seconds"]
        budget.used += 1
        log(f"  {responder.spec.name} {rate:,}/s step disturbed ({why}): again")
        time.sleep(SETTLE)
    return row


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


# A Spec, or (name, label, top-level config changes[, mcastd tree]) for the shipped config.
Item = Spec | tuple[str, str, dict[str, Any]] | tuple[str, str, dict[str, Any], Path]


class Bench:
    def __init__(self, repo: Path, workdir: Path, binary: Path, count: int, smoke: bool) -> None:
        self.repo = repo
        self.workdir = workdir
        self.count = count
        self.smoke = smoke
        gen_cpu, self.responder_cpu = cpus()
        self.budget = RetryBudget(RETRY_SECONDS)
        if gen_cpu is not None:
            # the runner itself stays off the responder's CPU
            os.sched_setaffinity(0, {gen_cpu})
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

    def start_default_mcastd(
        self, name: str, label: str, repo: Path | None = None, **top: Any
    ) -> Running:
        """mcastd (from `repo`, default the tree under test) on its shipped config with
        top-level changes; IPv4-only if IPv6 fails."""
        repo = self.repo if repo is None else repo
        config = configs.variant(repo, self.workdir, name, **top) if top else configs.shipped(repo)
        try:
            return self.start(mcastd_spec(name, label, repo, config))
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
                mcastd_spec(name, label, repo, configs.ipv4_only(repo, self.workdir, name, **top))
            )

    # -- the rate steps ------------------------------------------------------------------------

    def step_count(self, rate: int) -> int:
        if self.smoke:
            return self.count
        if rate == 0:
            return max(self.count, UNPACED_COUNT)
        return max(self.count, int(rate * STEP_SECONDS))

    def launch(self, item: Item) -> Running:
        if isinstance(item, Spec):
            return self.start(item)
        name, label, top, *repo = item
        return self.start_default_mcastd(name, label, *repo, **top)

    def one_step(self, item: Item, count: int, rate: int, record: dict[str, Any]) -> dict[str, Any]:
        """Start the responder, offer one step, stop it; note what it showed in `record`."""
        running = self.launch(item)
        try:
            row = run_step(self.gen, running, count, rate, self.responder_cpu, self.budget)
            if not running.alive():
                raise StartFailed(
                    running.spec.name, f"died during the {rate}/s step:\n{running.log_tail()}"
                )
            memory = running.memory_kib()
            buffers = procstat.receive_buffers(PORT)
        finally:
            exit_seconds, code = self.stop()
        spec = running.spec
        record.update(
            name=spec.name,
            label=spec.label,
            argv=list(spec.argv),
            config=next((a for a in spec.argv if a.endswith(".yaml")), None),
            receive_buffers=buffers,
        )
        record["ready"].append(running.ready_seconds)
        record["exits"].append(exit_seconds)
        record["exit_codes"].append(code)
        record["peak_rss_kib"] = max(record["peak_rss_kib"] or 0, memory.get("VmHWM", 0))
        log(describe(spec.name, row))
        time.sleep(SETTLE)
        return row

    def sweep(self, plan: list[Item], rates: tuple[int, ...]) -> list[dict[str, Any]]:
        """Every rate for every responder, interleaved: at each rate, each responder in turn.

        Each step gets a freshly started responder, so that a disturbance from outside
        (this is a shared VM) lands on one step of one responder and not on all the later
        steps of whichever responder happened to run then.
        """
        records: list[dict[str, Any]] = [
            {"steps": [], "ready": [], "exits": [], "exit_codes": [], "peak_rss_kib": None,
             "rtt_p99_repeats": []}
            for _ in plan
        ]  # fmt: skip
        for rate in rates:
            for item, record in zip(plan, records, strict=True):
                record["steps"].append(self.one_step(item, self.step_count(rate), rate, record))
        for item, record in zip(plan, records, strict=True):
            first = record["steps"][0]
            if first["answered"] < first["sent"] and not self.smoke:
                log(
                    f"  {record['name']} loses datagrams at {first['rate']:,}/s: probing lower "
                    f"rates with {PROBE_COUNT:,} datagrams each"
                )
                for rate in PROBE_RATES:
                    record["steps"].append(self.one_step(item, PROBE_COUNT, rate, record))
        return records

    def rtt_rounds(self, plan: list[Item], records: list[dict[str, Any]]) -> None:
        """More steps at RTT_RATE for floor and mcastd, alternating, for the p99 target."""
        pairs = [(i, r) for i, r in zip(plan, records, strict=True) if r["name"] in RTT_NAMES]
        for _ in range(RTT_REPEATS - 1):
            for item, record in pairs:
                row = self.one_step(item, self.step_count(RTT_RATE), RTT_RATE, record)
                record["rtt_p99_repeats"].append(row["rtt_p99_us"])
        for _, record in pairs:
            log(
                f"  {record['name']} RTT p99 at {RTT_RATE:,}/s, extra steps: "
                + ", ".join(f"{x:.0f}" for x in record["rtt_p99_repeats"])
                + " us"
            )

    @staticmethod
    def finish(record: dict[str, Any]) -> dict[str, Any]:
        steps = sorted(record.pop("steps"), key=lambda r: r["rate"] or float("inf"))
        rtt = record["rtt_p99_repeats"]
        main_rtt = step_at(steps, RTT_RATE)
        if main_rtt is not None:
            rtt.insert(0, main_rtt["rtt_p99_us"])
        exits = [e for e in record["exits"] if e is not None]
        return {
            **record,
            "steps": steps,
            "zero_loss_rate": zero_loss_rate(steps),
            "ready_seconds": statistics.median(record["ready"]),
            "exit_seconds": statistics.median(exits) if exits else None,
            "rtt_p99_median": statistics.median(rtt) if rtt else None,
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
                        row = run_step(
                            self.gen, running, GROUPS_BURST, 0, self.responder_cpu, self.budget
                        )
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
                "result": "figure" if ok is None else ("PASS" if ok else "FAIL"),
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
    if floor and mcastd:
        fu, mu = step_at(floor["steps"], 0), step_at(mcastd["steps"], 0)
        if fu and mu and fu["answered_rate"]:
            add(
                "answered rate when saturated (unpaced step), mcastd vs floor",
                f"{mu['answered_rate']:,.0f}/s vs {fu['answered_rate']:,.0f}/s = "
                f"{mu['answered_rate'] / fu['answered_rate']:.2f}x",
                None,
            )
        for rate in (50_000, 100_000):
            fs, ms = step_at(floor["steps"], rate), step_at(mcastd["steps"], rate)
            if fs and ms and fs["cpu_us_per_answer"] and ms["cpu_us_per_answer"]:
                f, m = fs["cpu_us_per_answer"], ms["cpu_us_per_answer"]
                add(
                    f"responder CPU per answered datagram at {rate // 1000}k/s, mcastd vs floor",
                    f"{m:.2f} us vs {f:.2f} us = {m / f:.2f}x",
                    None,
                )
    hot = results.get("hotpath") or {}
    if isinstance(hot.get("mcastd"), float):
        add(
            "Python work per datagram in Channel.serve_batch (stub socket), mcastd vs the floor",
            f"{hot['mcastd']:.2f} us vs {hot['floor']:.2f} us",
            None,
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


def hotpath_texts(repo: Path, workdir: Path, prefix: str, names: tuple[str, str]) -> dict[str, str]:
    """The two configs whose Python work per datagram is measured, under `names`: the
    shipped one without the reply limit, and that without a log line per datagram."""
    variants = (UNLIMITED, {**UNLIMITED, "log_datagrams": False})
    return {
        name: configs.variant(repo, workdir, prefix + name, **top).read_text()
        for name, top in zip(names, variants, strict=True)
    }


def run(repo: Path, workdir: Path, binary: Path, count: int, smoke: bool) -> dict[str, Any]:
    bench = Bench(repo, workdir, binary, count, smoke)
    results: dict[str, Any] = {
        "machine": machine(),
        "mcastd": mcastd_version(repo),
        "count": count,
        "smoke": smoke,
        "rates": list(RATES),
        "responders": [],
        "notes": bench.notes,
    }
    rates = (1_000,) if smoke else RATES
    plan: list[Item] = [
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
        records = bench.sweep(plan, rates)
        if not smoke:
            bench.rtt_rounds(plan, records)
        results["responders"] = [Bench.finish(r) for r in records]
        if not smoke:
            log(f"mcastd with {', '.join(str(n) for n in SCALE_PAIRS)} (group, port) pairs:")
            results["scale"] = bench.scale()
            log("mcastd (reply_rate: 0) stopping under load:")
            results["sigterm"] = bench.sigterm_under_flood()
            zero = next(r for r in results["responders"] if r["name"] == "mcastd")
            rate = int(max(20_000, min(100_000, zero["zero_loss_rate"])))
            log(f"mcastd (shipped config as is) memory over {MEMORY_LARGE:,} datagrams:")
            results["memory"] = bench.memory_growth(rate)
            log("Python work per datagram in Channel.serve_batch (stub socket, no kernel):")
            texts = hotpath_texts(repo, workdir, "hot-", ("mcastd", "mcastd-nolog"))
            results["hotpath"] = hotpath.measure(repo, texts)
            for name, cost in results["hotpath"].items():
                log(f"  {name:<13} " + (f"{cost:.3f} us" if isinstance(cost, float) else cost))
            log("mcastd (reply_rate: 0) profile under load:")
            results["profile"] = bench.profile(PROFILE_RATE)
    finally:
        bench.close()
    results["retries"] = {
        "steps_repeated": bench.budget.used,
        "budget_exhausted": bench.budget.exhausted,
    }
    results["targets"] = [] if smoke else targets(results)
    return results


# -- A/B: the tree under test against a baseline tree, in one run ----------------------------

AB_HOTPATH_ROUNDS = 5  # hotpath measurements per tree, alternating; the minimum is kept


def hotpath_in_subprocess(repo: Path, texts: dict[str, str]) -> dict[str, Any]:
    """hotpath.measure for one tree in a fresh interpreter (two trees cannot share one)."""
    code = (
        "import json, sys; from pathlib import Path; from bench import hotpath; "
        "print(json.dumps(hotpath.measure(Path(sys.argv[1]), json.loads(sys.argv[2]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(repo), json.dumps(texts)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def ab(repo: Path, baseline: Path, workdir: Path, binary: Path, count: int) -> dict[str, Any]:
    """Candidate (`repo`) and baseline mcastd interleaved at every rate, plus hotpath A/B."""
    bench = Bench(repo, workdir, binary, count, smoke=False)
    results: dict[str, Any] = {
        "machine": machine(),
        "mcastd": mcastd_version(repo),
        "baseline": mcastd_version(baseline),
        "count": count,
        "rates": list(RATES),
        "notes": bench.notes,
    }
    plan: list[Item] = [
        floor_spec(),
        ("mcastd", "mcastd (shipped config, reply_rate: 0)", UNLIMITED),
        ("mcastd-baseline", "baseline mcastd (shipped config, reply_rate: 0)", UNLIMITED, baseline),
    ]
    try:
        records = bench.sweep(plan, RATES)
        results["responders"] = [Bench.finish(r) for r in records]
    finally:
        bench.close()
    log("Python work per datagram (stub socket, no kernel), alternating the trees:")
    costs: dict[str, dict[str, list[float]]] = {"mcastd": {}, "mcastd-baseline": {}}
    for _ in range(AB_HOTPATH_ROUNDS):
        for name, tree in (("mcastd", repo), ("mcastd-baseline", baseline)):
            texts = hotpath_texts(tree, workdir, f"hot-{name}-", ("log", "nolog"))
            for label, cost in hotpath_in_subprocess(tree, texts).items():
                if isinstance(cost, float):
                    costs[name].setdefault(label, []).append(cost)
    results["hotpath"] = {name: {k: min(v) for k, v in by.items()} for name, by in costs.items()}
    results["hotpath_rounds"] = costs
    results["retries"] = {
        "steps_repeated": bench.budget.used,
        "budget_exhausted": bench.budget.exhausted,
    }
    return results


def ab_verdict(results: dict[str, Any]) -> list[str]:
    """The two A/B rules: Python us per datagram within 5 %, zero-loss step not lower."""
    by_name = {r["name"]: r for r in results["responders"]}
    new, old = by_name["mcastd"]["zero_loss_rate"], by_name["mcastd-baseline"]["zero_loss_rate"]
    lines = [
        f"{'PASS' if new >= old else 'FAIL'}  zero-loss rate: {new:,.0f}/s (candidate) vs "
        f"{old:,.0f}/s (baseline), floor {by_name['floor']['zero_loss_rate']:,.0f}/s"
    ]
    hot = results["hotpath"]
    for label in ("log", "nolog"):
        a, b = hot["mcastd"].get(label), hot["mcastd-baseline"].get(label)
        if a is None or b is None:
            lines.append(f"FAIL  hotpath {label}: not measured ({a}, {b})")
            continue
        ratio = a / b
        floor = hot["mcastd"]["floor"]
        lines.append(
            f"{'PASS' if ratio <= 1.05 else 'FAIL'}  Python us per datagram ({label}): "
            f"{a:.3f} (candidate) vs {b:.3f} (baseline) = {ratio:.3f}x (floor {floor:.3f})"
        )
    return lines
