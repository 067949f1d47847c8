"""`python3 -m bench [--smoke] [--count N] [--report-only]`: the one command that runs it all."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import bootstrap

START_ENV = "MCASTD_BENCH_STARTED"
LAST_RUN = bootstrap.VENV / "last-run.json"
QUIET_SHARE = 0.10  # of all CPUs busy with tasks: below this the machine counts as idle
DOCS = bootstrap.REPO / "docs"


def add_wait_quiet(parser: argparse.ArgumentParser, default: float) -> None:
    """--wait-quiet SECONDS, the limit handed to wait_for_quiet (python3 -m bench and
    bench.exporter)."""
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=default,
        metavar="SECONDS",
        help=f"first wait at most this long for the machine to be idle (default {default:g})",
    )


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__)
    p.add_argument(
        "--smoke",
        action="store_true",
        help="about 5 s: one 1,000/s step, floor and mcastd only; writes no report",
    )
    p.add_argument(
        "--count", type=int, default=10_000, help="datagrams per rate step (default 10,000)"
    )
    add_wait_quiet(p, 300.0)
    p.add_argument(
        "--mcastd-root",
        type=Path,
        metavar="DIR",
        help="benchmark the mcastd/ and etc/ under DIR (a candidate change) instead of this "
        "checkout's; prints the figures and writes no report",
    )
    p.add_argument(
        "--baseline-root",
        type=Path,
        metavar="DIR",
        help="A/B: run the mcastd under DIR (e.g. a `git worktree` of an older commit) beside "
        "this checkout's (or --mcastd-root's) at every rate, and both hot paths; prints the "
        "verdict, writes no report",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help=f"render docs/benchmarks.* again from {LAST_RUN.name} without running",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    raw = list(argv) if argv is not None else __import__("sys").argv[1:]
    os.environ.setdefault(START_ENV, str(time.time()))
    trees = (("--mcastd-root", args.mcastd_root), ("--baseline-root", args.baseline_root))
    for option, tree in trees:
        if tree is not None:
            # the re-executed bench runs from the repository root: pass the path absolute
            raw = [a for a in raw if not a.startswith(option)]
            raw = [a for a in raw if a != str(tree)]
            raw += [option, str(tree.resolve())]
    if args.report_only:
        if not bootstrap.in_venv():
            bootstrap.reexec(str(bootstrap.ensure_venv()), raw)
        from bench import report, run

        results = json.loads(LAST_RUN.read_text())
        results["targets"] = run.targets(results)  # the rules may have changed since the run
        report.write(results, DOCS)
        print(f"wrote {DOCS / 'benchmarks.md'} and {DOCS / 'benchmarks.png'}")
        return 0
    # The smoke run needs nothing from PyPI, so CI can run it with the system python.
    bootstrap.enter(raw, use_venv=not args.smoke)
    return inside(args)


def wait_for_quiet(limit: float) -> float:
    """Wait (at most `limit` s) until the machine is nearly idle; return the busy share seen.

    The VM is shared: a test suite running beside the bench shows in every figure.
    """
    from bench import procstat

    deadline = time.monotonic() + limit
    while True:
        before = procstat.cpu_busy(None)
        wall = time.monotonic()
        time.sleep(2.0)
        busy = procstat.cpu_busy(None)["task"] - before["task"]
        share = busy / ((time.monotonic() - wall) * (os.cpu_count() or 1))
        if share < QUIET_SHARE or time.monotonic() > deadline:
            return share
        print(f"bench: machine {share * 100:.0f} % busy, waiting for it to quiet down", flush=True)


def loadavg() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])


def inside(args: argparse.Namespace) -> int:
    """Runs in the bench's network namespace."""
    from bench import loadgen, netns, run

    netns.setup()
    workdir = Path(tempfile.mkdtemp(prefix="mcastd-bench-"))
    try:
        binary = loadgen.build(workdir)
        count = 2_000 if args.smoke else args.count
        busy = 0.0 if args.smoke else wait_for_quiet(args.wait_quiet)
        load_before = loadavg()
        root = args.mcastd_root.resolve() if args.mcastd_root else bootstrap.REPO
        if args.baseline_root is not None:
            results = run.ab(root, args.baseline_root.resolve(), workdir, binary, count)
            results["load_before"], results["load_after"] = load_before, loadavg()
            results["busy_before"] = busy
            out = bootstrap.VENV / "ab-run.json"
            out.write_text(json.dumps(results, indent=1))
            print()
            for line in run.ab_verdict(results):
                print(line)
            print(f"A/B run saved in {out}; docs/ left as they are")
            return 0
        results = run.run(root, workdir, binary, count, args.smoke)
        results["load_before"], results["load_after"] = load_before, loadavg()
        results["busy_before"] = busy
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["total_seconds"] = time.time() - float(os.environ[START_ENV])
    print()
    for t in results["targets"]:
        print(f"{t['result']:<4}  {t['target']}: {t['figure']}")
    print(f"whole run: {results['total_seconds']:.0f} s")
    if args.smoke:
        ok = (
            all(
                s["answered"] >= 0.95 * s["sent"] for r in results["responders"] for s in r["steps"]
            )
            and len(results["responders"]) == 2
        )
        for r in results["responders"]:
            for s in r["steps"]:
                print(f"smoke: {r['label']} answered {s['answered']} of {s['sent']}")
        print("smoke: ok" if ok else "smoke: FAILED")
        return 0 if ok else 1
    if args.mcastd_root:
        out = bootstrap.VENV / "candidate-run.json"
        out.write_text(json.dumps(results, indent=1))
        print(f"candidate run saved in {out}; docs/ left as they are")
        return 0
    from bench import report

    LAST_RUN.write_text(json.dumps(results, indent=1))
    report.write(results, DOCS)
    print(f"wrote {DOCS / 'benchmarks.md'} and {DOCS / 'benchmarks.png'}")
    return 0
