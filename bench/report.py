"""Render a bench run: docs/benchmarks.md (tables) and docs/benchmarks.png (matplotlib)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.run import (
    FLOOD_RATE,
    GROUPS_BURST,
    MEMORY_LARGE,
    MEMORY_SMALL,
    PROBE_COUNT,
    RTT_RATE,
    RTT_REPEATS,
    STEP_SECONDS,
    UNPACED_COUNT,
)

COMMAND = "sudo python3 -m bench"  # from the repository root


def _rate(rate: float) -> str:
    return f"{rate:,.0f}/s" if rate else "unpaced"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None or value < 0 else format(value, fmt)


def table(header: list[str], rows: list[list[str]], align: str = "") -> list[str]:
    marks = [("---:" if (align[i : i + 1] or "r") == "r" else "---") for i in range(len(header))]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def markdown(results: dict[str, Any], png: str) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Answered rate, loss, latency and memory of mcastd against the floor (a bare CPython",
        "`recvfrom` / `.upper()` / `sendto` loop) and upstream `multicast` 2.1.1 `HEAR`, all",
        "measured in the same run. Written by `bench/` from a real run; run it again with",
        f"`{COMMAND}` from the repository root (about "
        f"{results.get('total_seconds', 0) / 60:.0f} minutes, needs root for its network",
        "namespace, makes `bench/.venv` on first use).",
        "",
        f"- Date: {m['date']}; whole run {results.get('total_seconds', 0):.0f} s",
        f"- CPU: {m['cpu']}, nproc {m['nproc']}; kernel {m['kernel']}",
        f"- Python: {m['python']}",
        f"- mcastd: commit {results.get('mcastd', 'unknown')}",
        f"- Machine {results.get('busy_before', 0) * 100:.0f} % busy just before the run; "
        f"load average {results.get('load_before', '?')} before it, "
        f"{results.get('load_after', '?')} after (the machine is shared)",
        f"- Steps measured again because the machine disturbed them: "
        f"{results.get('retries', {}).get('steps_repeated', 0)}"
        + (
            " (the retry budget ran out)"
            if results.get("retries", {}).get("budget_exhausted")
            else ""
        ),
        f"- Each step: {results['count']:,} datagrams of 64 bytes, or {STEP_SECONDS:g} s of "
        f"them if that is more; unpaced: {UNPACED_COUNT:,}"
        + (f"; {PROBE_COUNT:,} for the low-rate probe steps" if _probed(results) else ""),
        "",
        "## Targets",
        "",
    ]
    lines += table(
        ["target", "figure", "result"],
        [
            [t["target"], t["figure"], f"**{t['result']}**" if t["result"] != "figure" else ""]
            for t in results["targets"]
        ],
        "llr",
    )
    lines += ["## Summary", ""]
    rows = []
    for r in results["responders"]:
        rows.append(
            [
                r["label"],
                _rate(r["zero_loss_rate"]) if r["zero_loss_rate"] else "none",
                f"{max((s['answered_rate'] for s in r['steps']), default=0.0):,.0f}/s",
                _opt(r.get("rtt_p99_median"), ".0f"),
                _ms(r["ready_seconds"]),
                _mib(r["peak_rss_kib"]),
                _ms(r["exit_seconds"]),
                ", ".join(f"{b:,}" for b in r.get("receive_buffers", [])) or "-",
            ]
        )
    lines += table(
        [
            "responder",
            "highest zero-loss rate",
            "best answered rate",
            f"RTT p99 at {RTT_RATE // 1000}k/s, us",
            "start to ready",
            "peak RSS",
            "SIGTERM to exit",
            "socket receive buffer, bytes",
        ],
        rows,
        "lrrrrrrr",
    )
    lines += [
        "Highest zero-loss rate: the highest offered rate at which that step and every lower",
        "one got every datagram answered. Start to ready: to `READY=1` for floor and mcastd,",
        "to the first answered probe for upstream (which has no readiness signal).",
        f"RTT p99: median over {RTT_REPEATS} steps at {RTT_RATE:,}/s. Receive buffer: what the",
        "kernel gave the responder's IPv4 socket (`ss -m`, rb); upstream's is whatever socket",
        "it had open at the end.",
        "",
        f"![answered rate against offered rate]({png})",
        "",
        "## Every step",
        "",
    ]
    rows = []
    for r in results["responders"]:
        for s in r["steps"]:
            rows.append(
                [
                    r["name"],
                    _rate(s["rate"]),
                    f"{s['offered_rate']:,.0f}/s",
                    f"{s['answered']:,}/{s['sent']:,}",
                    f"{s['loss'] * 100:.2f} %",
                    f"{s['answered_rate']:,.0f}/s",
                    _opt(s["rtt_p50_us"], ".0f"),
                    _opt(s["rtt_p99_us"], ".0f"),
                    f"{s['cpu_seconds']:.2f}",
                    _opt(s["cpu_us_per_answer"], ".1f"),
                    "-" if s["rcvbuf_drops"] is None else f"{s['rcvbuf_drops']:,}",
                    f"{s.get('other_cpu_seconds', 0):.2f}",
                    f"{s.get('attempts', 1)}"
                    + (" (still disturbed)" if s.get("disturbed") else ""),
                ]
            )
    lines += table(
        [
            "responder",
            "step",
            "offered",
            "answered",
            "loss",
            "answered rate",
            "RTT p50 us",
            "RTT p99 us",
            "CPU s",
            "CPU us/answer",
            "rcvbuf drops",
            "others' CPU s",
            "tries",
        ],
        rows,
        "lrrrrrrrrrrrr",
    )
    lines += [
        "Offered: the rate the generator actually sent. Answered rate: replies over the time",
        "from the first datagram to the last reply. RTT: from just before `sendto` to the",
        "kernel's receive timestamp of the reply (SO_TIMESTAMPNS), so generator scheduling",
        "is not counted. CPU: the responder's utime + stime over the step (/proc, 10 ms",
        "ticks). rcvbuf drops: datagrams the kernel dropped because the responder's socket",
        "buffer was full (the responder's own counter in /proc/net/udp; upstream re-creates",
        "its socket per datagram, so its counter is not meaningful there). Others' CPU: time",
        "the responder's CPU spent on anything but the responder (user, system, irq and",
        "steal, softirq left out) during the step: a large figure marks a disturbed step.",
        "Every step starts the responder afresh; at each rate the responders take turns. A step",
        "in which others took more than 5 % of the responder's CPU, or in which the generator",
        "fell more than 3 % behind its rate, was measured again, up to 3 tries (*tries*).",
        "",
    ]
    lines += _generator(results)
    lines += _upstream(results)
    lines += _scale(results)
    lines += _hotpath(results)
    lines += _redesign_ab()
    lines += _profile(results)
    if results.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    lines += _method()
    return "\n".join(lines).rstrip() + "\n"


def _probed(results: dict[str, Any]) -> bool:
    return any(s["count"] != results["count"] for r in results["responders"] for s in r["steps"])


def _generator(results: dict[str, Any]) -> list[str]:
    floor = next((r for r in results["responders"] if r["name"] == "floor"), None)
    if floor is None:
        return []
    unpaced = next((s for s in floor["steps"] if s["rate"] == 0), None)
    drops = sum(s["client_drops"] for r in results["responders"] for s in r["steps"])
    dups = sum(s["duplicates"] for r in results["responders"] for s in r["steps"])
    lines = ["## The load generator is not the bottleneck", ""]
    if unpaced:
        lines += [
            "Unpaced, the generator (C, `bench/loadgen.c`, one thread, pinned to its own CPU)",
            f"offered {unpaced['offered_rate']:,.0f}/s and the floor answered",
            f"{unpaced['answered']:,} of {unpaced['sent']:,} ({unpaced['loss'] * 100:.1f} % lost, "
            f"{unpaced['rcvbuf_drops'] or 0:,} dropped at the floor's full socket buffer):",
            "the generator drives even the bare CPython loop into loss. Every paced step was",
            "sent at its nominal rate (the *offered* column). Replies dropped at the",
            f"generator's own sockets over the whole run: {drops}; duplicate replies: {dups}.",
            "",
        ]
    return lines


def _upstream(results: dict[str, Any]) -> list[str]:
    up = next((r for r in results["responders"] if r["name"] == "upstream"), None)
    if up is None:
        return []
    lossy = [s for s in up["steps"] if s["answered"] < s["sent"]]
    if not lossy:
        return []
    first = lossy[0]
    worst = max(up["steps"], key=lambda s: s["loss"])
    return [
        "## What upstream does",
        "",
        f"Upstream `HEAR` first lost datagrams at {_rate(first['rate'])} "
        f"({first['loss'] * 100:.2f} %), lost {worst['loss'] * 100:.0f} % at "
        f"{_rate(worst['rate'])}, and never answered more than "
        f"{max(s['answered_rate'] for s in up['steps']):,.0f}/s: it closes and re-joins its",
        "socket after every datagram, so whatever arrives meanwhile finds no member socket",
        "(which is also why its socket's drop counter says nothing), and it answers each",
        "datagram from a new socket. It used "
        f"{max(s['cpu_us_per_answer'] or 0 for s in up['steps'] if s['rate'] == 1_000):.0f} "
        "us of CPU per answered datagram at 1,000/s.",
        "",
    ]


def _scale(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    scale = results.get("scale")
    if scale:
        lines += ["## Many (group, port) pairs", ""]
        rows = []
        for n, p in scale["pairs"].items():
            rate = scale["answered_rate_median"].get(n)
            cpu = scale["cpu_us_per_answer_median"].get(n)
            rows.append(
                [
                    f"{int(n):,}",
                    _ms(p["ready_median"]),
                    ", ".join(f"{x * 1000:.0f}" for x in p["ready_seconds"]),
                    _mib(p["rss_kib"]),
                    _mib(p["peak_rss_kib"]),
                    "-" if rate is None else f"{rate:,.0f}/s",
                    "-" if cpu is None else f"{cpu:.1f}",
                ]
            )
        lines += table(
            [
                "pairs",
                "start to READY=1 (median)",
                "each run, ms",
                "RSS at ready",
                "peak RSS",
                "answered rate on 239.0.0.9",
                "CPU us/answer",
            ],
            rows,
        )
        lines += [
            "Configs: the shipped top-level settings with 239.0.0.9 plus 239.1.x.y groups, all",
            f"on port 59259. Answered rate: median of unpaced bursts of {GROUPS_BURST:,} to",
            "239.0.0.9 while every other pair is joined too.",
            "",
        ]
    memory = results.get("memory")
    if memory:
        lines += [
            "## Memory over a million datagrams",
            "",
            f"mcastd (the shipped config as it is: per-datagram logging and per-source reply "
            f"limits on, load from {memory.get('sources', 1)} source addresses): RSS "
            f"{_mib(memory['rss_small_kib'])} after {MEMORY_SMALL:,} datagrams, "
            f"{_mib(memory['rss_large_kib'])} after {MEMORY_LARGE:,} "
            f"({memory['growth'] * 100:+.2f} %), sent at {memory['rate']:,}/s, "
            f"{memory['answered']:,} of {memory['sent']:,} answered.",
            "",
        ]
    sigterm = results.get("sigterm")
    if sigterm:
        lines += [
            "## Stopping under load",
            "",
            f"SIGTERM while a {FLOOD_RATE:,}/s flood runs: mcastd exited with code "
            f"{sigterm['exit_code']} {_ms(sigterm['exit_seconds'])} after the signal "
            f"(timed on a pidfd), having answered {sigterm['answered_before']:,} datagrams.",
            "",
        ]
    return lines


def _hotpath(results: dict[str, Any]) -> list[str]:
    hot = results.get("hotpath")
    if not hot:
        return []

    def fmt(value: Any) -> str:
        return f"{value:.2f} us" if isinstance(value, float) else str(value)

    return [
        "## mcastd's own Python work per datagram",
        "",
        "`Channel.serve_batch` driven with a stand-in socket (`recvfrom` hands out the 64-byte",
        "datagram, `sendto` does nothing), so that only the daemon's Python work is timed:",
        "the decision, the dispatch of its actions, the counters. Unlike the rate steps,",
        "this figure hardly moves between runs on a shared machine (`bench/hotpath.py`).",
        "",
        *table(
            ["code", "Python work per datagram"],
            [
                ["mcastd, shipped config with reply_rate: 0", fmt(hot.get("mcastd"))],
                ["mcastd, log_datagrams: false too", fmt(hot.get("mcastd-nolog"))],
                ["the floor's loop (`bytes.upper()`)", fmt(hot.get("floor"))],
            ],
            "lr",
        ),
        "How the hot path got there (same measurement, shipped config with reply_rate: 0,",
        "each figure the mean of two runs on this machine with mcastd at the commit named):",
        "",
        *table(
            ["change", "Python work per datagram"],
            [[change, figure] for change, figure in HOT_PATH_HISTORY],
            "lr",
        ),
    ]


# Before/after figures of the profile-driven changes to mcastd's hot path (bench/hotpath.py).
HOT_PATH_HISTORY = (
    ("before the profile-driven changes (723d2ee)", "1.87 us"),
    (
        "counters per batch, one upper-casing per reply, no rate-limit call without limits "
        "(2d7c5dc)",
        "1.53 us",
    ),
    (
        "(Heard, Reply) sent inline in serve; an undefended Responder goes straight to "
        "decide (aec92fa)",
        "1.25 us",
    ),
    (
        "the redesign: Channel.serve_batch, one dispatch of actions, each datagram's line "
        "says what became of it (b5dea80; see Redesign A/B)",
        "1.035x the baseline's, in one A/B run",
    ),
)

# The redesign A/B (issue 9): one `python3 -m bench --mcastd-root NEW --baseline-root OLD`
# run, the two trees interleaved at every rate step and their hot paths alternated.
REDESIGN_AB = {
    "command": "python3 -m bench --mcastd-root /tmp/mc2-new --baseline-root /tmp/mc2-old",
    "candidate": "b5dea80 (Server split into server/channel/reload/links/wakeup/snapshot)",
    "baseline": "9ba0d3a (before the redesign)",
    "machine": "AMD EPYC 2596 MHz, nproc 2, shared: load average 1.65-1.96 during the run, "
    "12 steps measured again, retry budget used up",
}
REDESIGN_AB_ROWS = (
    ("Python us per datagram, shipped config, reply_rate: 0", "1.024", "0.989", "1.035x"),
    ("Python us per datagram, log_datagrams: false too", "0.917", "0.909", "1.009x"),
    ("highest zero-loss rate (floor: 150,000/s)", "100,000/s", "50,000/s", "not lower"),
)


def _redesign_ab() -> list[str]:
    ab = REDESIGN_AB
    return [
        "## Redesign A/B",
        "",
        "The redesign of issue 9 (the loop apart from one channel per (group, port), a pure",
        "reload plan, pure link transitions) against the tree before it, in one run:",
        f"`{ab['command']}`.",
        f"Candidate {ab['candidate']}; baseline {ab['baseline']}. {ab['machine']}.",
        "Python work: the minimum of 5 measurements per tree, alternating, each in a fresh",
        "interpreter. Rates: each step with a freshly started responder, the trees taking",
        "turns at each rate. Rules: Python work within 5 %, zero-loss step not lower.",
        "",
        *table(
            ["figure", "candidate", "baseline", "ratio"],
            [list(row) for row in REDESIGN_AB_ROWS],
            "lrrr",
        ),
        "On this shared machine the rate steps above 50,000/s move by tens of percent",
        "from step to step (the baseline lost datagrams at 100,000/s and none at",
        '150,000/s): the zero-loss figures say no more than "not lower"; the Python',
        "work is the figure that holds still.",
        "",
    ]


def _profile(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    if not prof:
        return []
    lines = [
        "## Where mcastd's time goes",
        "",
        f"py-spy, {prof['samples']:,} samples while the generator offered {prof['rate']:,}/s "
        f"({prof['answered']:,} of {prof['sent']:,} answered). Self: the function was the",
        "innermost frame; total: it was anywhere on the stack. A C call (`recvfrom`,",
        "`sendto`, the kernel work behind them) counts as self time of the Python function",
        "that made it. `EpollSelector.select` is time spent waiting; `<lambda> (<string>)`",
        "is the `__new__` of the NamedTuple actions (`Heard`, `Reply`).",
        "",
    ]
    lines += table(
        ["function", "self", "total"],
        [
            [f"`{r['function']}`", f"{r['self'] * 100:.1f} %", f"{r['total'] * 100:.1f} %"]
            for r in prof["self"]
        ],
        "lrr",
    )
    return lines


def _method() -> list[str]:
    return [
        "## How it is measured",
        "",
        "- `python3 -m bench` makes `bench/.venv` (system site packages, plus `multicast==2.1.1`,",
        "  matplotlib and py-spy from PyPI), re-executes itself in it under `unshare --net`,",
        "  brings up `lo` with `224.0.0.0/4` routed to it and a veth pair for the shipped",
        "  config's IPv6 group; nothing leaves that namespace, which vanishes with the bench.",
        "- The generator is compiled with gcc at bench time. It sends 64-byte datagrams",
        "  (`seq=NNNNNNNNNN` padded) to 239.0.0.9:59259 on a fixed schedule, drains replies",
        "  while it waits, and matches each reply to its sequence number.",
        "- Each responder is started afresh for every step, on the same group and port,",
        "  pinned to the other CPU; at each rate (1k to 200k/s, then unpaced) the responders",
        "  take turns, so that outside load on this shared VM hits one step of one responder",
        "  rather than every later step of whichever ran then. Before it starts, the bench",
        "  waits (at most 5 minutes) for the machine to be idle.",
        "- mcastd runs as `PYTHONPATH=. python -m mcastd run --config etc/mcastd.yaml` (or a",
        "  temporary copy with one key changed), readiness taken from its `READY=1`.",
        "- Upstream runs as `python -m multicast --daemon HEAR --port 59259 --group 239.0.0.9`.",
        "",
    ]


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 5))
    styles = {"floor": "k-o", "mcastd": "C0-s", "mcastd-nolog": "C2--^", "upstream": "C3-v"}
    top = 0.0
    for r in results["responders"]:
        steps = [s for s in r["steps"] if s["sent"]]
        xs = [s["offered_rate"] for s in steps]
        ys = [max(s["answered_rate"], 1.0) for s in steps]
        top = max(top, *xs)
        style = styles.get(r["name"], "-o")
        ax.plot(xs, ys, style, label=r["label"], markersize=4)
        loss_ax.plot(xs, [s["loss"] * 100 for s in steps], style, label=r["label"], markersize=4)
    ax.plot([50, top], [50, top], ":", color="grey", label="every datagram answered")
    for a in (ax, loss_ax):
        a.set_xscale("log")
        a.set_xlabel("offered rate (datagrams/s)")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("answered rate (replies/s)")
    ax.set_title("Answered rate against offered rate")
    loss_ax.set_ylabel("loss (%)")
    loss_ax.set_title("Loss")
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(
        f"mcastd bench, {results['machine']['date']}: {results['count']:,} datagrams or "
        f"{STEP_SECONDS:g} s per step, whichever is more",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# A section another bench writes into docs/benchmarks.md (bench.probe --write, bench.exporter):
# `<!-- NAME: begin ... -->` up to `<!-- NAME: end -->`, each on a line of its own.
SECTION = re.compile(r"^<!-- (\S+): begin\b[^\n]*-->$.*?^<!-- \1: end -->$", re.M | re.S)


def keep_sections(old: str, new: str) -> str:
    """`new`, followed by every marked section of `old` that `new` has not got itself, in
    their order: a run of the main bench must not erase what the others wrote."""
    have = {m.group(1) for m in SECTION.finditer(new)}
    kept = [m.group(0) for m in SECTION.finditer(old) if m.group(1) not in have]
    if not kept:
        return new
    return new.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"


def write(results: dict[str, Any], docs: Path) -> None:
    docs.mkdir(exist_ok=True)
    plot(results, docs / "benchmarks.png")
    path = docs / "benchmarks.md"
    old = path.read_text() if path.exists() else ""
    path.write_text(keep_sections(old, markdown(results, "benchmarks.png")))
