"""The daemon on real sockets, each test in a network namespace of its own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcastd.control import query
from tests.conftest import DaemonFactory
from tests.netns import REPO, NetNS, ask, collect, mcastd_argv

pytestmark = pytest.mark.net

SHIPPED = (REPO / "etc" / "mcastd.yaml").read_text()
ONE_GROUP = "groups:\n  - group: 239.0.0.9\n"
PORT = 59259


def expected(text: str, client: tuple[str, int], group: str) -> bytes:
    reply = f"HEAR [ {text} SAID ('{client[0]}', {client[1]}) ] from {group}"
    return reply.encode()


def link_local(netns: NetNS, link: str) -> str:
    out = subprocess.run(
        netns.command(["ip", "-6", "-o", "addr", "show", "dev", link, "scope", "link"]),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[3].split("/")[0]


def test_ipv4_reply_is_byte_identical_to_upstream(netns: NetNS, start_daemon: DaemonFactory):
    start_daemon(SHIPPED)
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    me = client.getsockname()
    cases = [
        (b"hi there", "HI THERE"),
        (b"hi\n", "HI\n"),  # not stripped, as upstream
        ("straße".encode(), "STRASSE"),  # full Unicode upper-casing
        (b"", ""),  # an empty datagram is answered
    ]
    for payload, shout in cases:
        data, sender = ask(client, payload, "239.0.0.9", PORT)
        assert data == expected(shout, me, "239.0.0.9")
        assert sender == ("127.0.0.1", PORT)  # the reply comes from the service port


def test_ipv6_reply_is_byte_identical(netns: NetNS, start_daemon: DaemonFactory):
    start_daemon(SHIPPED)
    address = link_local(netns, "v6a")
    client = netns.socket(socket.AF_INET6)
    with netns.entered():  # interface indexes are per namespace
        index = socket.if_nametoindex("v6a")
    client.bind((address, 0, 0, index))
    client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    port = client.getsockname()[1]
    data, sender = ask(client, b"hello six", "ff05::9", PORT)
    assert data == expected("HELLO SIX", (address, port), "ff05::9")
    assert sender[1] == PORT


def test_groups_on_one_port_do_not_hear_each_other(netns: NetNS, start_daemon: DaemonFactory):
    start_daemon("groups:\n  - group: 239.0.0.9\n  - group: 239.0.0.10\n")
    client = netns.socket()
    for group in ("239.0.0.9", "239.0.0.10"):
        client.sendto(b"which", (group, PORT))
        replies = collect(client, quiet=0.5)
        assert len(replies) == 1, replies
        assert replies[0].endswith(f"from {group}".encode())
    client.sendto(b"anyone?", ("239.0.0.11", PORT))  # same port, a group nobody serves
    assert collect(client, quiet=0.5) == []


def test_stop_is_answered_then_exits_0(netns: NetNS, start_daemon: DaemonFactory):
    daemon = start_daemon(ONE_GROUP)
    client = netns.socket()
    for not_stop in (b"NONSTOP", b"BUS STOP", b"stop"):
        data, _ = ask(client, not_stop, "239.0.0.9", PORT)
        assert data.startswith(b"HEAR [ " + not_stop.upper())
    assert daemon.proc.poll() is None
    data, _ = ask(client, b" STOP\n", "239.0.0.9", PORT)
    assert data.startswith(b"HEAR [  STOP\n SAID")
    assert daemon.proc.wait(timeout=5) == 0
    assert "STOPPING=1" in daemon.wait_for("STOPPING=1")
    assert "STOP from 127.0.0.1" in daemon.stderr
    assert "Traceback" not in daemon.stderr


def flood(netns: NetNS, group: str, seconds: float) -> subprocess.Popen[bytes]:
    """A sender that blasts datagrams at `group` for at most `seconds` (bounded load)."""
    code = (
        "import socket, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"end = time.monotonic() + {seconds}\n"
        "while time.monotonic() < end:\n"
        "    for _ in range(200):\n"
        f"        s.sendto(b'flood flood flood', ('{group}', {PORT}))\n"
    )
    return subprocess.Popen(netns.command([sys.executable, "-c", code]))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_flood_exits_0_within_a_second(
    netns: NetNS, start_daemon: DaemonFactory, signum: int
):
    daemon = start_daemon(ONE_GROUP)
    sender = flood(netns, "239.0.0.9", seconds=5)
    try:
        time.sleep(1.0)  # let the flood build up
        assert daemon.proc.poll() is None
        sent_at = time.monotonic()
        daemon.signal(signum)
        code = daemon.proc.wait(timeout=5)
        took = time.monotonic() - sent_at
    finally:
        sender.kill()
        sender.wait()
    assert code == 0
    assert took < 1.0, f"took {took:.3f} s to stop"
    assert "Traceback" not in daemon.stderr
    assert f"stopping: {signal.Signals(signum).name}" in daemon.stderr
    assert "left:" in daemon.stderr  # per-group counts at shutdown


def test_sighup_does_not_kill(netns: NetNS, start_daemon: DaemonFactory):
    daemon = start_daemon(ONE_GROUP)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("READY=1")  # reload done
    client = netns.socket()
    data, _ = ask(client, b"still there", "239.0.0.9", PORT)
    assert data.startswith(b"HEAR [ STILL THERE")


def test_10000_datagrams_at_5000_per_second_all_answered(netns: NetNS, start_daemon: DaemonFactory):
    # One source sending 5,000/s is what the per-source reply limit exists to stop; lift it.
    start_daemon(ONE_GROUP + "reply_rate: 0\n")
    client = netns.socket()
    client.setblocking(False)
    total, rate, burst = 10_000, 5_000, 25
    answered: set[int] = set()
    start = time.monotonic()
    for first in range(0, total, burst):
        due = start + first / rate
        while (now := time.monotonic()) < due:
            drain(client, answered)
            time.sleep(min(due - now, 0.001))
        for seq in range(first, first + burst):
            client.sendto(b"seq %d" % seq, ("239.0.0.9", PORT))
        drain(client, answered)
    deadline = time.monotonic() + 3
    while len(answered) < total and time.monotonic() < deadline:
        drain(client, answered)
        time.sleep(0.01)
    assert len(answered) == total, f"{total - len(answered)} of {total} unanswered"


def drain(sock: socket.socket, answered: set[int]) -> None:
    try:
        while True:
            reply = sock.recv(2048)
            answered.add(int(reply.split()[3]))
    except BlockingIOError:
        pass


def test_next_request_sent_on_reply_is_always_answered(netns: NetNS, start_daemon: DaemonFactory):
    """Upstream re-opens its socket after each reply and so misses about every second request."""
    start_daemon(ONE_GROUP)
    client = netns.socket()
    answered = 0
    for seq in range(1000):
        data, _ = ask(client, b"ping %d" % seq, "239.0.0.9", PORT, timeout=2.0)
        answered += data.startswith(b"HEAR [ PING %d SAID" % seq)
    assert answered == 1000


def test_group_is_joined_once_not_per_datagram(netns: NetNS, start_daemon: DaemonFactory):
    capture = subprocess.Popen(
        netns.command(["tcpdump", "-i", "lo", "-n", "-l", "igmp"]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert capture.stderr is not None
        capture.stderr.readline()  # "listening on lo": the capture is running
        daemon = start_daemon(ONE_GROUP)
        client = netns.socket()
        for seq in range(50):
            ask(client, b"ping %d" % seq, "239.0.0.9", PORT)
        assert daemon.stop() == 0
        time.sleep(0.5)  # the leave report
    finally:
        capture.terminate()
        out, _ = capture.communicate(timeout=5)
    reports = [line for line in out.splitlines() if "igmp" in line]
    # A join and a leave are each reported up to twice (robustness variable); upstream sends
    # a leave and a join for every datagram: about 100 reports for these 50.
    assert 1 <= len(reports) <= 6, reports


def test_port_in_use_exits_69_with_a_clear_line(netns: NetNS, start_daemon: DaemonFactory):
    holder = netns.socket()
    holder.bind(("239.0.0.9", PORT))
    daemon = start_daemon(ONE_GROUP, ready=False)
    assert daemon.proc.wait(timeout=10) == 69
    errors = [line for line in daemon.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1
    assert errors[0].endswith(
        "239.0.0.9:59259: address already in use "
        "(another mcastd, or another program, serves this port)"
    )
    assert "Traceback" not in daemon.stderr


def test_second_daemon_on_same_group_exits_69(netns: NetNS, start_daemon: DaemonFactory):
    first = start_daemon(ONE_GROUP)
    second = start_daemon(ONE_GROUP, ready=False)
    assert second.proc.wait(timeout=10) == 69
    assert "address already in use" in second.stderr
    assert first.proc.poll() is None


def test_missing_interface_exits_69(netns: NetNS, start_daemon: DaemonFactory):
    daemon = start_daemon("interface: eth7\ngroups: [239.0.0.9]\n", ready=False)
    assert daemon.proc.wait(timeout=10) == 69
    assert "interface eth7: does not exist" in daemon.stderr


def test_reload_adds_a_port_and_survives_a_broken_file(netns: NetNS, start_daemon: DaemonFactory):
    daemon = start_daemon(ONE_GROUP)
    client = netns.socket()
    daemon.config_path.write_text("groups:\n  - group: 239.0.0.9\n    ports: [59259, 59260]\n")
    daemon.signal(signal.SIGHUP)
    assert "MONOTONIC_USEC=" in daemon.wait_for("RELOADING=1")
    daemon.wait_for("READY=1")
    for port in (59259, 59260):
        data, _ = ask(client, b"after reload", "239.0.0.9", port)
        assert data.startswith(b"HEAR [ AFTER RELOAD")

    daemon.config_path.write_text("groups:\n  - group: 239.0.0.9\n    ports: [59259, 70000]\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    assert f"{daemon.config_path}:3:20: groups[0].ports[1]: 70000 is not a port" in daemon.stderr
    for port in (59259, 59260):  # the old configuration is still served
        data, _ = ask(client, b"still", "239.0.0.9", port)
        assert data.startswith(b"HEAR [ STILL")
    assert daemon.proc.poll() is None


def test_reload_removes_a_group_and_keeps_the_others(netns: NetNS, start_daemon: DaemonFactory):
    daemon = start_daemon("groups: [239.0.0.9, 239.0.0.10]\n")
    client = netns.socket()
    daemon.config_path.write_text("groups: [239.0.0.9]\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    client.sendto(b"gone?", ("239.0.0.10", PORT))
    assert collect(client, quiet=0.5) == []
    data, _ = ask(client, b"kept", "239.0.0.9", PORT)
    assert data.startswith(b"HEAR [ KEPT")


def test_invalid_utf8_and_huge_datagrams_never_kill_it(netns: NetNS, start_daemon: DaemonFactory):
    daemon = start_daemon(ONE_GROUP)
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    client.sendto(b"\xff\xfe not text", ("239.0.0.9", PORT))
    assert collect(client, quiet=0.3) == []  # dropped and counted, not answered
    big = b"a" * 65_000
    data, _ = ask(client, big, "239.0.0.9", PORT)  # read whole, unlike upstream's 8,192 bytes
    assert data == expected("A" * 65_000, client.getsockname(), "239.0.0.9")
    growing = "ŉ".encode() * 100  # upper-cased it is 1.5 times longer: never sent back
    client.sendto(growing, ("239.0.0.9", PORT))
    client.sendto(b"b" * 65_480, ("239.0.0.9", PORT))  # the reply would not fit in UDP
    assert collect(client, quiet=0.3) == []
    (counters,) = query(daemon.control_socket)["endpoints"]  # type: ignore[index]
    dropped = {reason: n for reason, n in counters["dropped"].items() if n}
    assert dropped == {"not_utf8": 1, "amplifying": 1, "reply_too_large": 1}
    assert (counters["received"], counters["answered"]) == (4, 1)
    assert daemon.stop() == 0
    # Each datagram's line says what became of it.
    me = f"127.0.0.1:{client.getsockname()[1]}"
    assert f"heard 11 bytes from {me}: dropped (not_utf8)" in daemon.stderr
    assert f"heard {'ŉ' * 100!r} from {me}: dropped (amplifying)" in daemon.stderr
    assert f"(65480 characters) from {me}: dropped (reply_too_large)" in daemon.stderr


def test_say_prints_each_reply_with_its_sender(netns: NetNS, start_daemon: DaemonFactory):
    start_daemon(SHIPPED)
    out = subprocess.run(
        netns.command(mcastd_argv("say", "hello", "world")),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0
    line = out.stdout.strip()
    assert line.startswith("127.0.0.1:59259 HEAR [ HELLO WORLD SAID ('127.0.0.1', ")
    assert line.endswith(") ] from 239.0.0.9")
    silent = subprocess.run(
        netns.command(mcastd_argv("say", "--group", "239.0.0.77", "--wait", "0.3", "anyone")),
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert silent.returncode == 1
    assert silent.stdout == ""


def test_detach_writes_pidfile_refuses_second_copy_and_stops_on_sigterm(
    netns: NetNS, tmp_path: Path
):
    pidfile = tmp_path / "mcastd.pid"
    config = tmp_path / "mcastd.yaml"
    config.write_text(ONE_GROUP)
    control = tmp_path / "control.sock"  # not the host's /run/mcastd
    argv = mcastd_argv(
        "run",
        "--config",
        str(config),
        "--detach",
        "--pidfile",
        str(pidfile),
        "--control-socket",
        str(control),
    )
    first = subprocess.run(
        netns.command(argv), capture_output=True, text=True, timeout=10, check=False
    )
    assert first.returncode == 0, first.stderr
    deadline = time.monotonic() + 5
    # The pidfile is created, then written: wait for its contents, not only for it.
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "no pid in the pidfile within 5 s"
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        client = netns.socket()
        data, _ = ask(client, b"detached", "239.0.0.9", PORT)
        assert data.startswith(b"HEAR [ DETACHED")

        second = subprocess.run(
            netns.command(argv), capture_output=True, text=True, timeout=10, check=False
        )
        assert second.returncode == 69
        assert f"already running as pid {pid}" in second.stderr

        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{pid}").exists()
        assert not pidfile.exists()  # removed on a graceful stop
    finally:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
