"""A hostile segment: forged and replayed STOPs, a reflection flood, kernel and process limits.

Each test runs mcastd in a network namespace of its own (`mcastd-h-...`); IPv4 multicast goes
over that namespace's `lo`, IPv6 over its veth pair.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

from mcastd.stopauth import sign
from tests.hosts import PORT, balanced, environment, flood, replies, say
from tests.net.conftest import Site
from tests.netns import Daemon, NetNS, ask, collect

pytestmark = pytest.mark.net

GROUP = "239.0.0.9"


def write_key(path: Path) -> bytes:
    key = secrets.token_hex(32).encode()
    path.write_bytes(key + b"\n")
    return key


def say_stop(site: Site, *args: str) -> str:
    """`mcastd say --stop ARGS` in the namespace; its stdout (the replies heard)."""
    done = say(site.netns, "--group", GROUP, "--stop", *args, wait=0.5)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


# -- authenticated STOP -----------------------------------------------------------------------


def test_only_a_valid_authenticated_stop_stops(site: Site):
    key = write_key(site.daemons.dir / "stop.key")
    write_key(site.daemons.dir / "other.key")
    daemon = site.daemons.start(
        site.netns, f"stop:\n  key_file: {site.daemons.dir / 'stop.key'}\ngroups: [{GROUP}]\n"
    )
    client = site.netns.socket()
    now = time.time()
    forged = {
        "unauthenticated": [b"STOP", b" STOP\n"],  # the plain upstream word
        "malformed": [b"STOP v1 12 34", b"STOP v1 " + b"1" * 13 + b" " + b"0" * 32 + b" " + b"0"],
        "bad_mac": [
            sign(b"not the key at all", GROUP, PORT, now).encode(),  # another key
            sign(key, "239.0.0.10", PORT, now).encode(),  # captured on another group
            sign(key, GROUP, PORT + 1, now).encode(),  # ... or another port
        ],
        "stale": [
            sign(key, GROUP, PORT, now - 3600).encode(),  # signed an hour ago
            sign(key, GROUP, PORT, now - 31).encode(),  # just outside the 30 s window
            sign(key, GROUP, PORT, now + 3600).encode(),  # from the future
        ],
    }
    for datagrams in forged.values():
        for datagram in datagrams:
            data, _ = ask(client, datagram, GROUP, PORT)  # answered: answer_refused: true
            assert data.startswith(b"HEAR [ ")
    # The wrong key file with `mcastd say` itself.
    assert say_stop(site, "--key-file", str(site.daemons.dir / "other.key")) != ""
    assert daemon.proc.poll() is None
    data, _ = ask(client, b"still here", GROUP, PORT)
    assert data.startswith(b"HEAR [ STILL HERE SAID")

    counters = site.daemons.status(daemon)[(GROUP, PORT)]
    refused = counters["stop_refused"]
    assert refused["unauthenticated"] == 2
    assert refused["malformed"] == 2
    assert refused["bad_mac"] == 4
    assert refused["stale"] == 3
    assert refused["replayed"] == 0
    assert counters["answered"] == 12
    assert balanced(counters)
    # Logged, but once a minute per source, not once per datagram.
    assert daemon.stderr.count("STOP from 127.0.0.1:") == 1
    assert "refused: unauthenticated" in daemon.stderr

    heard = say_stop(site, "--key-file", str(site.daemons.dir / "stop.key"))
    assert heard.startswith("127.0.0.1:59259 HEAR [ STOP V1 ")  # answered, then ...
    assert daemon.proc.wait(timeout=5) == 0  # ... stopped
    assert "STOP from 127.0.0.1:" in daemon.stderr.split("accepted")[0]
    assert "Traceback" not in daemon.stderr


def test_a_relative_key_file_is_a_systemd_credential(site: Site):
    credentials = site.daemons.dir / "credentials"
    credentials.mkdir()
    write_key(credentials / "mcastd-stop")
    daemon = site.daemons.start(
        site.netns,
        f"stop:\n  key_file: mcastd-stop\ngroups: [{GROUP}]\n",
        env=environment(CREDENTIALS_DIRECTORY=str(credentials)),
    )
    assert say_stop(site) != ""  # a plain STOP: answered, refused
    assert daemon.proc.poll() is None
    say_stop(site, "--key-file", str(credentials / "mcastd-stop"))
    assert daemon.proc.wait(timeout=5) == 0


def test_a_replayed_stop_does_not_stop_a_restarted_daemon(site: Site):
    """A valid STOP ends the daemon that checks it, so within one run nothing can be replayed
    to it: the replay that matters is the captured STOP sent again, within the replay window,
    to the daemon started after it (by an operator, a package upgrade, a reboot)."""
    key = write_key(site.daemons.dir / "stop.key")
    config = f"stop:\n  key_file: {site.daemons.dir / 'stop.key'}\ngroups: [{GROUP}]\n"
    first = site.daemons.start(site.netns, config)
    client = site.netns.socket()
    captured = sign(key, GROUP, PORT, time.time()).encode()
    ask(client, captured, GROUP, PORT)
    assert first.proc.wait(timeout=5) == 0
    second = site.daemons.start(site.netns, config)
    client.sendto(captured, (GROUP, PORT))
    collect(client, quiet=0.5)
    assert second.proc.poll() is None, "a replayed STOP stopped the restarted daemon"
    counters = site.daemons.status(second)[(GROUP, PORT)]
    assert counters["stop_refused"]["replayed"] == 1


@pytest.mark.parametrize(
    ("stop", "reason", "answered"),
    [
        ("disabled", "disabled", True),
        ("\n  answer_refused: false\n  allow_from: [10.0.0.0/8]", "not_allowed", False),
    ],
)
def test_stop_disabled_or_refused_silently(site: Site, stop: str, reason: str, answered: bool):
    daemon = site.daemons.start(site.netns, f"stop: {stop}\ngroups: [{GROUP}]\n")
    client = site.netns.socket()
    client.sendto(b"STOP", (GROUP, PORT))
    got = collect(client, quiet=0.5)
    assert len(got) == (1 if answered else 0)
    assert daemon.proc.poll() is None
    counters = site.daemons.status(daemon)[(GROUP, PORT)]
    assert counters["stop_refused"][reason] == 1
    assert counters["dropped"]["stop_refused"] == (0 if answered else 1)
    assert balanced(counters)


# -- reflection -------------------------------------------------------------------------------


def test_a_flood_from_one_source_is_answered_at_the_configured_rate(site: Site):
    rate, burst = 200, 100
    daemon = site.daemons.start(
        site.netns, f"reply_rate: {rate}\nreply_burst: {burst}\ngroups: [{GROUP}]\n"
    )
    started = time.monotonic()
    # 20,000 a second for 2 s from 127.0.0.2: a forged source being reflected at.
    sender = flood(site.netns, "127.0.0.2", GROUP, count=40_000, rate=20_000)
    try:
        client = site.netns.socket()
        client.bind(("127.0.0.1", 0))
        normal = 0
        for seq in range(20):  # a normal client meanwhile, one request every ~0.1 s
            time.sleep(0.08)
            data, _ = ask(client, b"normal %d" % seq, GROUP, PORT)
            normal += data.startswith(b"HEAR [ NORMAL %d SAID" % seq)
        out, _ = sender.communicate(timeout=30)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    counters = site.daemons.status(daemon)[(GROUP, PORT)]
    elapsed = time.monotonic() - started  # longer than the daemon could have been refilling
    result = json.loads(out)
    assert normal == 20
    assert burst <= result["replies"] <= burst + rate * elapsed, (result, elapsed)
    assert counters["answered"] == result["replies"] + normal
    assert counters["dropped"]["rate_limited"] >= result["sent"] - burst - rate * elapsed
    assert balanced(counters)


def test_the_total_reply_rate_caps_many_sources_together(site: Site):
    total = 100
    daemon = site.daemons.start(
        site.netns, f"reply_rate: 0\nreply_rate_total: {total}\ngroups: [{GROUP}]\n"
    )
    started = time.monotonic()
    senders = [flood(site.netns, f"127.0.0.{n}", GROUP, count=1000, rate=2000) for n in range(2, 6)]
    results = [json.loads(s.communicate(timeout=30)[0]) for s in senders]
    counters = site.daemons.status(daemon)[(GROUP, PORT)]
    elapsed = time.monotonic() - started
    answered = sum(r["replies"] for r in results)
    assert answered == counters["answered"]
    assert total <= answered <= total + total * elapsed
    assert counters["received"] == 4000
    assert balanced(counters)


# -- resource limits --------------------------------------------------------------------------


class Limited(NetNS):
    """`netns`, but every command runs under `prlimit --nofile=N` (a low `ulimit -n`)."""

    def __init__(self, netns: NetNS, nofile: int) -> None:  # shares the namespace
        self.name = netns.name
        self.nofile = nofile

    def command(self, argv: list[str]) -> list[str]:  # type: ignore[override]
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}", *super().command(argv)]


def fails_cleanly(daemon: Daemon, *expected: str) -> None:
    """Exit 69 with one ERROR line that says what is wrong (and no traceback)."""
    assert daemon.proc.wait(timeout=10) == 69, daemon.stderr
    errors = [line for line in daemon.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, daemon.stderr
    for text in expected:
        assert text in errors[0]
    assert "Traceback" not in daemon.stderr


def ready(daemon: Daemon) -> bool:
    """Wait for READY=1 (True) or the daemon's exit (False)."""
    try:
        daemon.wait_for("READY=1")
    except AssertionError:
        return False
    return True


def sources(count: int, v6: bool = False) -> str:
    return ", ".join(f"fd00::{n:x}" if v6 else f"10.0.0.{n}" for n in range(1, count + 1))


def test_more_sources_than_igmp_max_msf_is_a_clear_error(site: Site):
    # net.ipv4.igmp_max_msf is 10 in a new namespace: 10 sources are fine, 11 are not.
    site.netns.exec("sysctl", "-qw", "net.ipv4.igmp_max_msf=10")
    ok = site.daemons.start(
        site.netns, f"groups:\n  - group: 232.1.1.1\n    sources: [{sources(10)}]\n"
    )
    ok.stop()
    too_many = site.daemons.start(
        site.netns, f"groups:\n  - group: 232.1.1.1\n    sources: [{sources(11)}]\n", ready=False
    )
    fails_cleanly(
        too_many, "232.1.1.1:59259: too many group memberships or sources", "igmp_max_msf"
    )


def test_more_ipv6_sources_than_mld_max_msf_is_a_clear_error(site: Site):
    # net.ipv6.mld_max_msf (64 by default) is not per namespace: read it, do not change it.
    limit = int(Path("/proc/sys/net/ipv6/mld_max_msf").read_text())
    many = sources(limit + 1, v6=True)
    config = f"interface: v6a\ngroups:\n  - group: ff3e::1\n    sources: [{many}]\n"
    daemon = site.daemons.start(site.netns, config, ready=False)
    fails_cleanly(daemon, "[ff3e::1]:59259: too many group memberships or sources", "mld_max_msf")


def test_more_memberships_than_igmp_max_memberships_is_a_clear_error(site: Site):
    site.netns.exec("sysctl", "-qw", "net.ipv4.igmp_max_memberships=0")
    daemon = site.daemons.start(site.netns, f"groups: [{GROUP}, 239.0.0.10]\n", ready=False)
    fails_cleanly(daemon, f"{GROUP}:59259: too many group memberships", "igmp_max_memberships")
    # Nothing is left joined or bound: a daemon can start once the limit is raised.
    site.netns.exec("sysctl", "-qw", "net.ipv4.igmp_max_memberships=20")
    site.daemons.start(site.netns, f"groups: [{GROUP}, 239.0.0.10]\n")
    data, _ = ask(site.netns.socket(), b"joined", GROUP, PORT)
    assert data.startswith(b"HEAR [ JOINED")


def test_a_low_open_files_limit_with_many_groups_is_a_clear_error(site: Site):
    groups = 40
    config = "groups: [" + ", ".join(f"239.0.1.{n}" for n in range(1, groups + 1)) + "]\n"
    outcomes = {}
    # From far too few descriptors to enough: each limit either starts or fails cleanly.
    # mcastd checks up front that the groups leave headroom for its own descriptors
    # (event loop, control socket, sd_notify), so the boundary lies some way above `groups`.
    limits = [*range(groups - 10, groups + 10), groups + 20, groups + 30, groups + 40]
    for nofile in limits:
        daemon = site.daemons.start(Limited(site.netns, nofile), config, ready=False)
        if ready(daemon):
            assert daemon.stop() == 0
            outcomes[nofile] = "ready"
        else:
            last = daemon.stderr.splitlines()[-1:]
            assert daemon.proc.returncode == 69, f"ulimit -n {nofile}: {last}"
            fails_cleanly(daemon, "too many open files: raise LimitNOFILE=")
            outcomes[nofile] = "69"
    assert outcomes[groups - 10] == "69"
    assert outcomes[groups + 40] == "ready"
    # Once a limit is enough, every higher one is too.
    assert list(outcomes.values()) == sorted(outcomes.values())


def test_many_groups_with_enough_descriptors_all_answer(site: Site):
    groups = [f"239.0.2.{n}" for n in range(1, 61)]
    site.daemons.start(site.netns, "groups: [" + ", ".join(groups) + "]\n")
    client = site.netns.socket()
    for group in groups:
        client.sendto(b"roll call", (group, PORT))
    got = replies(client)
    assert sorted(data.rsplit(b" ", 1)[1].decode() for data, _, _ in got) == sorted(groups)
