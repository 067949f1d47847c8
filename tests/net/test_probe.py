"""`mcastd probe` against real responders: a fleet on a bridge, one behind a real multicast
router, upstream `multicast` 2.1.1, nftables loss, and a thousand responders at once.

The fleet (tests/hosts.py `routed()`): the client's segment holds 10 mcastd responders (one
with `reply: group`) and one upstream HEAR responder; smcrouted forwards the group to a
second segment with one more mcastd. Every address exists only inside these namespaces.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import jsonschema
import pytest

from bench.probe import FanIn
from mcastd import prober
from mcastd.probe import ProbeSettings
from tests.hosts import PORT, Daemons, Host, Routed, routed, run, segment, upstream_hear
from tests.netns import REPO, NetNS, mcastd_argv, terminate

pytestmark = pytest.mark.net

GROUP = "239.0.0.9"
GROUP6 = "ff05::9"
SSM_GROUP = "232.78.0.1"
SCHEMA = json.loads((REPO / "docs" / "probe.schema.json").read_text())
UNICAST = "log_datagrams: false\ngroups: [239.0.0.9, ff05::9]\n"
GROUP_MODE = "log_datagrams: false\nreply: group\ngroups: [239.0.0.9, ff05::9]\n"
DROP_PERCENT = 20
LOSS_PROBES = 600


class Fleet(NamedTuple):
    net: Routed
    mcastd: list[Host]
    """The unicast mcastd responders on the client's segment."""
    grouped: Host
    """The mcastd with reply: group on the client's segment."""
    upstream: Host
    far: Host
    """The mcastd behind the router."""

    @property
    def client(self) -> Host:
        return self.net.client

    @property
    def everyone(self) -> list[Host]:
        return [*self.mcastd, self.grouped, self.upstream, self.far]


def probe(host: Host | NetNS, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = run(host, mcastd_argv("probe", *args), timeout=timeout)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def document_of(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    """The validated --json document's responders by address."""
    document = json.loads(out.stdout)
    jsonschema.validate(document, SCHEMA)
    return {r["address"]: r for r in document["responders"]}


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with routed((GROUP, GROUP6)) as net:
        daemons = Daemons()
        upstream_proc = None
        try:
            near = [net.add_client(f"d{n}") for n in range(9)]
            grouped = net.add_client("grp")
            upstream = net.add_client("up")
            upstream_proc = upstream_hear(upstream, GROUP)
            started = [daemons.start(h, UNICAST, ready=False) for h in [*near, net.responder]]
            started.append(daemons.start(grouped, GROUP_MODE, ready=False))
            for daemon in started:
                daemon.wait_for("READY=1", timeout=30)
            fleet = Fleet(net, near, grouped, upstream, net.responder)
            wait_until_heard(fleet)
            yield fleet
        finally:
            if upstream_proc is not None:
                terminate(upstream_proc)
            daemons.close()


def wait_until_heard(fleet: Fleet, seconds: float = 10.0) -> None:
    """Until upstream (started first, but slow to import) and everyone else answer."""
    wanted = ",".join(h.v4 for h in fleet.everyone if h is not fleet.grouped)  # type: ignore[misc]
    deadline = time.monotonic() + seconds
    while True:
        out = probe(fleet.client, "--ttl", "2", "-c", "1", "-q", "--expect", wanted)
        if out.returncode == 0:
            return
        assert time.monotonic() < deadline, out.stdout + out.stderr


def test_every_responder_is_listed_with_its_forward_hop_distance(fleet: Fleet):
    out = probe(fleet.client, "--hops", "3", "-c", "3", "-i", "0.05", "--join", "--json")
    assert out.returncode == 0, out.stderr
    rows = document_of(out)
    assert set(rows) == {h.v4 for h in fleet.everyone}
    assert rows[fleet.far.v4]["hops"] == 2  # type: ignore[index]
    for host in fleet.everyone:
        if host is not fleet.far:
            assert rows[host.v4]["hops"] == 1, host.name  # type: ignore[index]
    # The router took one off the reply's TTL (the hosts' default, 64).
    assert rows[fleet.far.v4]["ttl"] == {"min": 63, "max": 63}  # type: ignore[index]
    assert rows[fleet.mcastd[0].v4]["ttl"] == {"min": 64, "max": 64}  # type: ignore[index]
    assert rows[fleet.grouped.v4]["via"]["unicast"] == 0  # type: ignore[index]
    assert rows[fleet.grouped.v4]["via"]["group"] > 0  # type: ignore[index]
    assert rows[fleet.upstream.v4]["via"]["group"] == 0  # type: ignore[index]


def test_ipv6_responders_and_their_hop_distance(fleet: Fleet):
    args = ["--group", GROUP6, "--interface", "eth0", "--hops", "2", "-c", "2", "-i", "0.05"]
    out = probe(fleet.client, *args, "--json")
    assert out.returncode == 0, out.stderr
    rows = document_of(out)
    assert set(rows) == {h.v6 for h in [*fleet.mcastd, fleet.far]}  # upstream is IPv4 only
    assert rows[fleet.far.v6]["hops"] == 2  # type: ignore[index]
    assert rows[fleet.far.v6]["ttl"] == {"min": 63, "max": 63}  # type: ignore[index]
    assert {rows[h.v6]["hops"] for h in fleet.mcastd} == {1}  # type: ignore[index]


def nft(host: Host, script: str) -> None:
    subprocess.run(host.command(["nft", "-f", "-"]), input=script, text=True, check=True)


def nft_packets(host: Host, counter: str) -> int:
    out = subprocess.run(
        host.command(["nft", "-j", "list", "counter", "inet", "mc5", counter]),
        capture_output=True,
        text=True,
        check=True,
    )
    for item in json.loads(out.stdout)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise AssertionError(out.stdout)


def binomial_bounds(n: int, p: float, confidence: float = 0.999) -> tuple[int, int]:
    """[lo, hi] holding a Binomial(n, p) draw with at least `confidence` (equal tails)."""
    tail = (1 - confidence) / 2
    cumulative, lo, hi = 0.0, None, n
    for k in range(n + 1):
        cumulative += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if lo is None and cumulative > tail:
            lo = k
        if cumulative >= 1 - tail:
            hi = k
            break
    assert lo is not None
    return lo, hi


def test_reported_loss_is_the_loss_on_the_wire(fleet: Fleet):
    dropper = fleet.mcastd[0]
    # One responder drops a known share of the probes at random (this kernel has no netem);
    # upstream's own losses are counted by what it really sends back.
    nft(
        dropper,
        "table inet mc5 {\n chain in {\n type filter hook input priority 0\n"
        f"udp dport {PORT} numgen random mod 100 < {DROP_PERCENT} drop\n}}\n}}\n",
    )
    nft(
        fleet.upstream,
        "table inet mc5 {\n counter replies {\n}\n chain out {\n"
        "type filter hook output priority 0\n"
        f'ip daddr {fleet.client.v4} meta l4proto udp counter name "replies"\n}}\n}}\n',
    )
    try:
        out = probe(fleet.client, "--ttl", "2", "-c", str(LOSS_PROBES), "-i", "0.005", "--json")
        upstream_replies = nft_packets(fleet.upstream, "replies")
    finally:
        for host in (dropper, fleet.upstream):
            subprocess.run(host.command(["nft", "delete", "table", "inet", "mc5"]), check=False)
    rows = document_of(out)
    dropped = rows[dropper.v4]
    assert dropped["sent"] == LOSS_PROBES
    lo, hi = binomial_bounds(LOSS_PROBES, DROP_PERCENT / 100)
    lost = LOSS_PROBES - dropped["received"]  # type: ignore[operator]
    assert lo <= lost <= hi, (lo, lost, hi)
    assert dropped["loss"] == pytest.approx(lost / LOSS_PROBES)
    up = rows[fleet.upstream.v4]
    assert up["received"] + up["duplicates"] + up["late"] == upstream_replies  # type: ignore[operator]
    assert up["loss"] == pytest.approx(1 - up["received"] / LOSS_PROBES)  # type: ignore[operator]
    for host in [*fleet.mcastd[1:], fleet.far]:
        assert rows[host.v4]["loss"] == 0, host.name


def test_a_missing_expected_responder_fails_the_run_and_is_named(fleet: Fleet, tmp_path: Path):
    roster = tmp_path / "fleet"
    lines = [f"{h.v4} {h.name.split('-')[2]}" for h in fleet.everyone]  # type: ignore[union-attr]
    roster.write_text("# the fleet\n" + "\n".join(lines) + "\n")
    common = ["--ttl", "2", "-c", "3", "-i", "0.05", "--join", "--expect", str(roster)]
    clean = probe(fleet.client, *common)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "missing" not in clean.stdout
    roster.write_text(roster.read_text() + "10.78.1.99 ghost\n")
    out = probe(fleet.client, *common, "-q")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "missing: 10.78.1.99 (ghost)" in out.stdout.splitlines()
    for host in fleet.everyone:
        assert host.v4 in out.stdout


def test_an_ssm_responder_hears_the_probe_sent_from_its_chosen_source():
    with segment(("ssm", 1), ("client", 2)) as (responder, client):
        source = "10.77.0.200"
        client.ip("addr", "add", f"{source}/24", "dev", "eth0")
        daemons = Daemons()
        try:
            config = f"groups:\n  - group: {SSM_GROUP}\n    sources: [{source}]\n"
            daemons.start(responder, config)
            args = ["--group", SSM_GROUP, "-c", "2", "-i", "0.05", "--expect", responder.v4]
            assert probe(client, *args, "--source", source).returncode == 0  # type: ignore[arg-type]
            assert probe(client, *args).returncode == 1  # from 10.77.0.2: not joined
        finally:
            daemons.close()


@contextmanager
def answering(netns: NetNS, count: int) -> Iterator[FanIn]:
    """`count` HEAR responders (bench.probe.FanIn) answering inside `netns` for the block."""
    with netns.entered():
        fan = FanIn(count)
    try:
        yield fan.start()
    finally:
        fan.close()


@pytest.fixture
def fan_in(netns: NetNS) -> Iterator[FanIn]:
    with answering(netns, 1000) as fan:
        yield fan


def test_a_thousand_responders_are_all_accounted_for(netns: NetNS, fan_in: FanIn, tmp_path: Path):
    roster = tmp_path / "thousand"
    roster.write_text("\n".join(fan_in.addresses) + "\n")
    out = probe(netns, "--group", GROUP, "-c", "10", "-i", "0.1", "--expect", str(roster), "--json")
    assert out.returncode == 0, out.stderr
    rows = document_of(out)
    assert json.loads(out.stdout)["overflow"] == 0  # the kernel dropped none for us
    assert set(rows) == set(fan_in.addresses)
    assert fan_in.sent == 10 * 1000
    assert all(r["received"] == 10 for r in rows.values())
    assert all(r["duplicates"] == r["late"] == 0 for r in rows.values())


def test_join_where_the_port_is_taken_is_exit_69(netns: NetNS, fan_in: FanIn):
    out = probe(netns, "-c", "1", "--join")
    assert out.returncode == 69
    assert out.stderr == (
        "mcastd: 239.0.0.9:59259: address already in use "
        "(another mcastd, or another program, serves this port)\n"
    )


def test_no_multicast_route_is_exit_69_with_what_to_do():
    host = Host("noroute")  # lo only: no route for the group
    try:
        out = probe(host, "-c", "1")
    finally:
        host.delete()
    assert out.returncode == 69
    assert out.stderr == (
        "mcastd: 239.0.0.9:59259: cannot send: no route for multicast "
        "(ip route add 224.0.0.0/4 dev IF, or --interface)\n"
    )


def test_nobody_answering_is_exit_1_with_a_hint(netns: NetNS):
    out = probe(netns, "-c", "1", "-W", "0.2", "-q")
    assert out.returncode == 1
    assert out.stdout.splitlines()[-1].startswith("no replies: responders behind routers need")


def test_ctrl_c_prints_the_summary_so_far(netns: NetNS):
    with answering(netns, 3):
        proc = subprocess.Popen(
            netns.command(mcastd_argv("probe", "-c", "1000", "-i", "0.05")),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        time.sleep(2.0)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = stdout.split("--- 239.0.0.9:59259 mcastd probe statistics ---\n", 1)[1]
    assert "interrupted" in summary.splitlines()[0]
    assert sum(line.startswith("127.1.0.") for line in summary.splitlines()) == 3


def test_run_keeps_to_its_deadline(netns: NetNS):
    settings = ProbeSettings(GROUP, count=1000, interval=0.05, wait=0.5)
    with answering(netns, 2), netns.entered():
        deadline = time.monotonic() + 1.5
        report = prober.run(settings, deadline=deadline)
        returned = time.monotonic()
    assert 0 < report.sent < 1000
    # Every probe sent had its whole wait before the deadline: none is left pending.
    assert [(r.sent, r.received) for r in report.responders] == [(report.sent, report.sent)] * 2
    assert returned < deadline + 1.0  # not the 50 s the whole train would take


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--interface", "nosuch0"], 69, "mcastd: interface nosuch0: does not exist"),
        (["--source", "10.9.9.9"], 69, "cannot send from 10.9.9.9: not an address of this host"),
        (["--expect", "10.0.0.1,nohost"], 2, "mcastd: probe: --expect:2: 'nohost' is not an IP"),
        (["--hops", "3", "--ttl", "4"], 2, "mcastd: probe: --hops sweeps the TTL itself"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    netns: NetNS, args: list[str], code: int, message: str
):
    out = probe(netns, "-c", "1", *args)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_users_other_than_root_may_not_flood(netns: NetNS):
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    out = run(netns, [*drop, *mcastd_argv("probe", "-c", "1", "-i", "0.01")])
    assert out.returncode == 2, out.stderr
    assert (
        out.stderr == "mcastd: probe: --interval below 0.2 s is a flood and needs root (as ping)\n"
    )
