"""`mcastd probe` on demand: fan-in capacity and RTT accuracy. `sudo python3 -m bench.probe`.

Runs in a network namespace of its own (it re-executes itself under `unshare --net`), with
IPv4 multicast routed to `lo`; nothing leaves it. Prints the figures for docs/benchmarks.md.

- Fan-in: FanIn answers each probe from 1,000 addresses (127.1.x.y) at once; `mcastd probe`
  is run at rising probe rates and must account for every reply (received, duplicate or
  late): the highest rate it does so is its zero-loss fan-in, in replies a second.
- RTT accuracy: one real `mcastd run`; `mcastd probe`'s median RTT against a bare-socket
  client's (sendto, blocking recv, perf_counter around both) in the same run, alternating.

FanIn is also the 1,000-responder peer of tests/net/test_probe.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import netns, run
from bench.cli import loadavg
from bench.responders import GROUP, PORT, Running, StartFailed, mcastd_spec

REPO = Path(__file__).resolve().parent.parent


def fan_in_address(index: int) -> str:
    """The address of responder `index` (0-based): 127.1.0.1 ... 127.1.3.232 for 1,000."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


class FanIn:
    """`count` HEAR responders in one thread: a socket that joined `group` hears each probe,
    and `count` sockets, each bound to its own 127.1.x.y, answer it at once (unicast).

    Create it with the calling thread inside the namespace wanted; the sockets stay there.
    """

    def __init__(self, count: int, group: str = GROUP, port: int = PORT) -> None:
        self.group = group
        self.port = port
        self.addresses = [fan_in_address(i) for i in range(count)]
        self.sent = 0
        self.heard = 0
        self.busy = 0.0  # seconds spent answering: near the train's length, it lags behind
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < count + 256:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(count + 256, hard), hard))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.senders: list[socket.socket] = []
        try:
            self.listener.bind((group, port))
            mreq = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
            self.listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for address in self.addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.senders.append(sock)
                sock.bind((address, 0))
                sock.setblocking(False)
        except BaseException:
            self.close()
            raise

    def start(self) -> FanIn:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.listener], [], [], 0.1)
            if not ready:
                continue
            data, source = self.listener.recvfrom(65_536)
            if data.startswith(b"HEAR ["):
                continue
            self.heard += 1
            began = time.perf_counter()
            reply = (
                f"HEAR [ {data.decode('utf-8', 'replace').upper()} "
                f"SAID ('{source[0]}', {source[1]}) ] from {self.group}"
            ).encode()
            for sock in self.senders:
                try:
                    sock.sendto(reply, source)
                except BlockingIOError:
                    continue  # counted as not sent: the client cannot be blamed for it
                self.sent += 1
            self.busy += time.perf_counter() - began

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self.senders:
            sock.close()
        self.listener.close()


def probe_json(*args: str, timeout: float = 120) -> tuple[dict[str, object], float]:
    """`mcastd probe --json ARGS` here: its document and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "mcastd", "probe", "--group", GROUP, "--json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"mcastd probe exited {done.returncode}: {done.stderr.strip()}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return json.loads(done.stdout), cpu


def fan_in(responders: int, rates: list[float], seconds: float) -> list[dict[str, float]]:
    """One step per probe rate: replies the responders sent vs replies the client accounted."""
    steps = []
    with tempfile.NamedTemporaryFile("w", suffix=".roster") as roster:
        fan = FanIn(responders).start()
        try:
            roster.write("\n".join(fan.addresses) + "\n")
            roster.flush()
            for rate in rates:
                count = max(int(rate * seconds), 5)
                sent_before, busy_before = fan.sent, fan.busy
                started = time.monotonic()
                document, cpu = probe_json(
                    "-c", str(count), "-i", str(1 / rate), "--expect", roster.name
                )
                elapsed = time.monotonic() - started
                sent = fan.sent - sent_before
                rows = document["responders"]
                assert isinstance(rows, list)
                accounted = sum(r["received"] + r["duplicates"] + r["late"] for r in rows)
                step = {
                    "rate": rate,
                    "probes": count,
                    "replies_sent": sent,
                    "accounted": accounted,
                    "late": sum(r["late"] for r in rows),
                    "overflow": document["overflow"],
                    "responder_busy": (fan.busy - busy_before) / (count / rate),
                    "train_seconds": count / rate,
                    "replies_per_second": accounted / (count / rate),
                    "client_cpu_seconds": cpu,
                    "wall_seconds": elapsed,
                }
                steps.append(step)
                step["cpu_us_per_reply"] = cpu / accounted * 1e6 if accounted else 0.0
                print(
                    f"fan-in {responders} x {rate:g}/s: {sent} replies sent, {accounted} "
                    f"accounted ({step['replies_per_second']:,.0f}/s), late {step['late']}, "
                    f"dropped by the client's socket {step['overflow']}, responders busy "
                    f"{step['responder_busy'] * 100:.0f} % of the train, client CPU {cpu:.2f} s "
                    f"({step['cpu_us_per_reply']:.1f} us per reply, process start included)",
                    flush=True,
                )
        finally:
            fan.close()
    return steps


REFERENCE = """
import socket, statistics, sys, time
group, port, count, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
rtts = []
for n in range(count):
    due = time.perf_counter() + interval
    t0 = time.perf_counter()
    s.sendto(b"reference %d" % n, (group, port))
    try:
        s.recv(65536)
    except TimeoutError:
        continue
    rtts.append(time.perf_counter() - t0)
    while time.perf_counter() < due:
        time.sleep(max(due - time.perf_counter(), 0))
print(statistics.median(rtts))
"""


def rtt_accuracy(rounds: int, count: int, interval: float) -> list[dict[str, float]]:
    """Median RTT of `mcastd probe` and of the bare-socket reference, alternating."""
    with tempfile.TemporaryDirectory(prefix="mcastd-bench-probe-") as tmp:
        workdir = Path(tmp)
        config = workdir / "mcastd.yaml"
        config.write_text(f"log_datagrams: false\ngroups:\n  - group: {GROUP}\n")
        daemon = Running(mcastd_spec("rtt", "mcastd", REPO, config), workdir, None)
        try:
            daemon.wait_ready()  # READY=1 and a probe answered
            return rtt_rounds(rounds, count, interval)
        except StartFailed as e:
            raise SystemExit(f"bench.probe: {e}") from None
        finally:
            daemon.stop(timeout=10)


def rtt_rounds(rounds: int, count: int, interval: float) -> list[dict[str, float]]:
    """`rounds` times: the reference's median RTT, then `mcastd probe`'s, to the one mcastd."""
    results = []
    for n in range(rounds):
        reference = subprocess.run(
            [sys.executable, "-c", REFERENCE, GROUP, str(PORT), str(count), str(interval)],
            capture_output=True,
            text=True,
            check=True,
        )
        ref = float(reference.stdout)
        document, _ = probe_json("-c", str(count), "-i", str(interval))
        rows = document["responders"]
        assert isinstance(rows, list)
        if len(rows) != 1 or rows[0]["rtt"] is None:
            raise SystemExit(f"expected one responder, got {rows}")
        probe = rows[0]["rtt"]["median"]
        results.append({"reference": ref, "probe": probe})
        print(
            f"rtt round {n + 1}: reference median {ref * 1e6:.1f} us, mcastd probe median "
            f"{probe * 1e6:.1f} us, difference {(probe - ref) * 1e6:+.1f} us",
            flush=True,
        )
    return results


BEGIN = "<!-- bench.probe: begin (written by python3 -m bench.probe --write) -->"
END = "<!-- bench.probe: end -->"
DOCS = REPO / "docs" / "benchmarks.md"


def machine() -> str:
    """The Markdown lines that say where and on what this run ran (bench.run's facts)."""
    facts = run.machine()
    return (
        f"- Date: {facts['date']}; CPU: {facts['cpu']}, nproc {facts['nproc']}; "
        f"kernel {facts['kernel']}; Python {facts['python']}\n"
        f"- mcastd: commit {run.mcastd_version(REPO)}\n"
        f"- Load average after the run: {loadavg()} (the machine is shared)\n"
    )


def section(
    responders: int,
    steps: list[dict[str, float]],
    best: dict[str, float] | None,
    rounds: list[dict[str, float]],
) -> str:
    """The Markdown of this bench's section of docs/benchmarks.md."""
    difference = statistics.median(r["probe"] - r["reference"] for r in rounds)
    fan = best["replies_per_second"] if best is not None else 0.0
    lines = [
        BEGIN,
        "## mcastd probe: fan-in and RTT accuracy",
        "",
        "Written by `sudo python3 -m bench.probe --write` (about 40 s, its own network "
        "namespace). Fan-in: one process answers each probe from 1,000 addresses at once "
        "(bench.probe.FanIn, the peer of the 1,000-responder test); `mcastd probe --expect` "
        "runs at rising probe rates and must account for every reply. RTT: one real "
        "`mcastd run`; `mcastd probe -c 300 -i 0.01`'s median RTT against a bare-socket "
        "client's (sendto, blocking recv, perf_counter around both), alternating.",
        "",
        machine(),
        "| target | figure | result |",
        "| --- | --- | ---: |",
        f"| fan-in: replies accounted per second with zero client loss >= 10,000/s | "
        f"{fan:,.0f}/s | **{'PASS' if fan >= 10_000 else 'FAIL'}** |",
        f"| RTT: probe median within 20 us of the reference (median of {len(rounds)} rounds) | "
        f"{difference * 1e6:+.1f} us | **{'PASS' if abs(difference) <= 20e-6 else 'FAIL'}** |",
        "",
        f"Fan-in steps ({responders} responders; a step is "
        f"{steps[0]['train_seconds']:g} s of probes):"
        if steps
        else "",
        "",
        "| probes/s | replies sent | accounted | per second | late | dropped by the client's "
        "socket | responder busy | client CPU per reply |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in steps:
        lines.append(
            f"| {s['rate']:g} | {s['replies_sent']:,} | {s['accounted']:,} | "
            f"{s['replies_per_second']:,.0f} | {s['late']:,} | {s['overflow']:,} | "
            f"{s['responder_busy'] * 100:.0f} % | {s['cpu_us_per_reply']:.1f} us |"
        )
    lines += [
        "",
        "Late replies are accounted (as late, not lost); client CPU includes starting the "
        "process. The responder is one Python thread: where it is busy for most of the train, "
        "its replies leave late and the step measures it, not the client.",
        "",
        "| RTT round | reference median | mcastd probe median | difference |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for n, r in enumerate(rounds, 1):
        lines.append(
            f"| {n} | {r['reference'] * 1e6:.1f} us | {r['probe'] * 1e6:.1f} us | "
            f"{(r['probe'] - r['reference']) * 1e6:+.1f} us |"
        )
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_section(text: str, path: Path = DOCS) -> None:
    """Replace this bench's section of the file (between its markers), or append it."""
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        new = head + text + ("\n" + tail if tail else "")
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.probe", description=__doc__)
    parser.add_argument("--responders", type=int, default=1000)
    parser.add_argument("--rates", default="10,20,40,80,160", help="probe rates, a second")
    parser.add_argument("--seconds", type=float, default=3.0, help="per fan-in step")
    parser.add_argument("--rounds", type=int, default=5, help="RTT rounds")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    netns.enter("bench.probe")
    started = time.time()
    rates = [float(r) for r in args.rates.split(",")]
    steps = fan_in(args.responders, rates, args.seconds)
    clean = [
        s
        for s in steps
        if s["accounted"] == s["replies_sent"] and not s["late"] and not s["overflow"]
    ]
    best = max(clean, key=lambda s: s["replies_per_second"]) if clean else None
    rounds = rtt_accuracy(args.rounds, 300, 0.01)
    differences = [r["probe"] - r["reference"] for r in rounds]
    print()
    if best is not None:
        print(
            f"fan-in: {best['replies_per_second']:,.0f} replies/s accounted with zero loss "
            f"({args.responders} responders x {best['rate']:g} probes/s); goal 10,000/s"
        )
    else:
        print("fan-in: no step without loss")
    print(
        f"rtt: mcastd probe median - reference median = "
        f"{statistics.median(differences) * 1e6:+.1f} us (median of {len(rounds)} rounds; "
        f"each {[round(d * 1e6, 1) for d in differences]}); goal within 20 us"
    )
    print(f"whole run: {time.time() - started:.0f} s")
    if args.write:
        write_section(section(args.responders, steps, best, rounds))
        print(f"wrote the probe section of {DOCS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
