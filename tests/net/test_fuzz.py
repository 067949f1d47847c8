"""Garbage at full speed, and reloads under fire: the daemon stays up, its memory stays flat,
its counters add up, and a group nobody touched loses nothing.

Both run in a network namespace of their own (`mcastd-h-...`), with bounded loads: 200,000
datagrams; 200 reloads.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.hosts import PORT, balanced, udp_drops, vm_rss_kib
from tests.net.conftest import Site
from tests.netns import NetNS, ask

pytestmark = pytest.mark.net

GROUP = "239.0.0.9"
WARM_UP = 20_000
TOTAL = 200_000
RSS_SLACK_KIB = 10 * 1024

# Run with `python -c` inside the namespace: COUNT datagrams to GROUP:PORT as fast as the
# kernel takes them, made from SEED. Sizes 0 to 65,507 (mostly small, so that 200,000 stay
# quick): random bytes, text full of control characters, NULs and letters that grow when
# upper-cased, the same text with an invalid UTF-8 sequence spliced in, NUL/control runs;
# and first a few fixed ones: empty, NULs, one 64 KiB line, the largest random datagram.
FUZZ = """
import json, random, socket, sys
group, port, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
MAX = 65_507
rng = random.Random(seed)
pool = rng.randbytes(1 << 17)
text = ("hi \\u00df \\u0149 \\ufb03 \\x00\\x01\\x07\\x1b[31m\\r\\n\\t\\x7f \\u2028 \\U0001f600 "
        * 3000).encode()
invalid = [b"\\xff", b"\\xc3\\x28", b"\\xed\\xa0\\x80", b"\\xc0\\xaf", b"\\xe2\\x82",
           b"\\xf4\\x90\\x80\\x80", b"\\x80", b"\\xfe\\xfe"]
fixed = [b"", b"\\x00" * 100, b"x" * (MAX - 1) + b"\\n", pool[:MAX], bytes(range(32)) * 4]

def size():
    r = rng.random()
    if r < 0.7:
        return rng.randrange(0, 513)
    if r < 0.95:
        return rng.randrange(0, 8193)
    return rng.randrange(0, MAX + 1)

def datagram(i):
    if i < len(fixed):
        return fixed[i]
    kind, n = i % 10, size()
    if kind < 5:
        start = rng.randrange(0, len(pool) - n + 1)
        return pool[start:start + n]
    start = rng.randrange(0, len(text) - n)
    cut = text[start:start + n]
    if kind < 7:
        return cut
    if kind < 9:
        at = rng.randrange(0, len(cut) + 1)
        return (cut[:at] + rng.choice(invalid) + cut[at:])[:MAX]
    return bytes(rng.randrange(0, 32) for _ in range(rng.randrange(0, 128)))

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sizes = []
for i in range(count):
    d = datagram(i)
    s.sendto(d, (group, port))
    sizes.append(len(d))
print(json.dumps({"sent": count, "largest": max(sizes), "empty": sizes.count(0)}))
"""


def fuzz(netns: NetNS, count: int, seed: int) -> subprocess.Popen[str]:
    """Start the FUZZ sender inside `netns`."""
    argv = [sys.executable, "-c", FUZZ, GROUP, str(PORT), str(count), str(seed)]
    return subprocess.Popen(netns.command(argv), stdout=subprocess.PIPE, text=True)


def settled(site: Site, sent: int) -> dict[str, object]:
    """The endpoint's counters once every datagram sent is either received by the daemon or
    dropped by the kernel for a full receive buffer (waiting at most 30 s for the backlog)."""
    deadline = time.monotonic() + 30
    while True:
        counters = site.daemons.status(site.daemons.started[0])[(GROUP, PORT)]
        kernel = udp_drops(site.netns, GROUP, PORT)
        received = counters["received"]
        assert isinstance(received, int)
        if received + kernel >= sent or time.monotonic() > deadline:
            counters["kernel_drops"] = kernel
            return counters
        time.sleep(0.1)


def test_200000_datagrams_of_garbage_at_full_speed(site: Site):
    daemon = site.daemons.start(site.netns, f"groups: [{GROUP}]\n")
    pid = daemon.proc.pid
    assert fuzz(site.netns, WARM_UP, seed=1).wait(timeout=60) == 0
    settled(site, WARM_UP)
    warm = vm_rss_kib(pid)
    peak = warm
    sender = fuzz(site.netns, TOTAL - WARM_UP, seed=2)
    try:
        while sender.poll() is None:  # sample memory while the garbage arrives
            peak = max(peak, vm_rss_kib(pid))
            time.sleep(0.05)
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.wait()
    assert sender.returncode == 0
    counters = settled(site, TOTAL)
    peak = max(peak, vm_rss_kib(pid))

    assert daemon.proc.poll() is None
    assert peak - warm <= RSS_SLACK_KIB, f"RSS grew from {warm} KiB to {peak} KiB"
    # Every datagram sent was either received or dropped by the kernel (buffer full) ...
    assert counters["received"] + counters["kernel_drops"] == TOTAL, counters
    # ... and every one received is accounted for, by reason.
    assert balanced(counters), counters
    dropped = counters["dropped"]
    assert isinstance(dropped, dict)
    for reason in ("not_utf8", "amplifying", "rate_limited"):
        assert dropped[reason] > 0, counters
    assert counters["answered"] > 0
    assert dropped["receive_error"] == 0

    client = site.netns.socket()
    # Another source address: the fuzzer's (127.0.0.1) has used up its reply budget.
    client.bind(("127.0.0.2", 0))
    data, sender_address = ask(client, b"still sane? \xc3\xa9", GROUP, PORT)
    me = client.getsockname()
    assert data == f"HEAR [ STILL SANE? É SAID ('127.0.0.2', {me[1]}) ] from {GROUP}".encode()
    assert sender_address == ("127.0.0.1", PORT)
    assert "Traceback" not in daemon.stderr


# -- reload under fire ------------------------------------------------------------------------

# The group the stream goes to: every setting spelled out, so that no top-level change
# reaches it (allow_from: null overrides an inherited list).
STEADY = f"""  - group: {GROUP}
    ports: [{PORT}]
    ttl: 1
    reply: unicast
    reply_rate: 0
    allow_from: null
    stop: disabled
    log_datagrams: false
"""

INVALID = [
    "groups: [239.1.0.1\n",  # YAML syntax
    "port: 70000\ngroups:\n" + STEADY,
    "ttl: 300\ngroups:\n" + STEADY,
    "reply: maybe\ngroups:\n" + STEADY,
    "colour: blue\ngroups:\n" + STEADY,
    "groups:\n" + STEADY + "  - group: 10.0.0.1\n",
    "groups:\n" + STEADY + STEADY,  # the same (group, port) twice
    "groups:\n" + STEADY + "  - group: 232.1.0.1\n",  # SSM without sources
    "stop:\n  key_file: /nonexistent/key\ngroups:\n" + STEADY,
    "groups:\n" + STEADY + "  - group: 239.1.0.2\n    sources: [ff05::1]\n",
    "groups: []\n",
    "\x00\x01\x02 binary",
    "groups:\n" + STEADY + "  - group: 239.1.0.3\n    reply_rate: -1\n",
]


def random_config(rng: random.Random) -> str:
    """A configuration with the steady group unchanged, and others that come and go."""
    if rng.random() < 0.3:
        return rng.choice(INVALID)
    top = []
    if rng.random() < 0.5:
        top.append(f"ttl: {rng.randrange(0, 256)}")
    if rng.random() < 0.3:
        top.append(f"allow_from: [10.{rng.randrange(256)}.0.0/16]")
    if rng.random() < 0.3:
        top.append("stop: disabled")
    if rng.random() < 0.3:
        top.append(f"reply_rate: {rng.randrange(1, 5000)}")
    entries = [STEADY]
    for n in rng.sample(range(1, 30), rng.randrange(0, 8)):
        entry = f"  - group: 239.1.0.{n}\n    ports: [{rng.choice([PORT, PORT + 1, 40000 + n])}]\n"
        entry += f"    reply: {rng.choice(['unicast', 'group', 'none'])}\n"
        if rng.random() < 0.2:
            entry += "    interface: nosuch0\n"  # valid file, the join fails: logged
        entries.append(entry)
    if rng.random() < 0.3:
        entries.append("  - group: 232.1.0.1\n    sources: [10.9.9.9, 10.9.9.10]\n")
    if rng.random() < 0.3:
        entries.append(f"  - group: ff05::1:{rng.randrange(1, 9)}\n    interface: v6a\n")
    rng.shuffle(entries)
    return "\n".join(top) + "\ngroups:\n" + "".join(entries)


class Stream:
    """Requests to the steady group, numbered, paced, from a thread; replies matched."""

    def __init__(self, netns: NetNS, rate: float) -> None:
        self.sock = netns.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.001)
        self.rate = rate
        self.sent = 0
        self.answered: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            if time.monotonic() >= start + self.sent / self.rate:
                self.sock.sendto(b"steady %d" % self.sent, (GROUP, PORT))
                self.sent += 1
            self.drain()

    def drain(self) -> None:
        try:
            while True:
                reply = self.sock.recv(2048)
                self.answered.add(int(reply.split()[3]))
        except (TimeoutError, BlockingIOError):
            pass

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.settimeout(0.5)
        deadline = time.monotonic() + 3
        while len(self.answered) < self.sent and time.monotonic() < deadline:
            try:
                reply = self.sock.recv(2048)
            except TimeoutError:
                continue
            self.answered.add(int(reply.split()[3]))


def test_200_random_reloads_under_a_steady_stream(site: Site):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    daemon = site.daemons.start(site.netns, "groups:\n" + STEADY)
    stream = Stream(site.netns, rate=400)
    stream.thread.start()
    failed = 0
    try:
        for n in range(200):
            text = random_config(rng)
            failed += text in INVALID
            daemon.config_path.write_text(text)
            daemon.signal(signal.SIGHUP)
            daemon.wait_for("READY=1")
            assert daemon.proc.poll() is None, f"seed {seed}, reload {n}:\n{text}"
            time.sleep(rng.uniform(0, 0.02))  # spread them over a few seconds of stream
    finally:
        stream.finish()
    assert daemon.proc.poll() is None
    missing = sorted(set(range(stream.sent)) - stream.answered)
    assert stream.sent > 500
    assert daemon.stderr.count("reloaded ") == 200 - failed
    assert missing == [], f"seed {seed}: {len(missing)} of {stream.sent} unanswered"
    assert daemon.stderr.count("reload failed: still serving the previous configuration") == failed
    assert "Traceback" not in daemon.stderr
    assert "internal error" not in daemon.stderr
    counters = site.daemons.status(daemon)[(GROUP, PORT)]
    # The steady group's socket and counters lived through every reload.
    assert counters["received"] == counters["answered"] == stream.sent


def answered_via(netns: NetNS, group: str, link: str) -> bytes:
    """One request to `group` sent out of `link` (of the namespace's veth pair); the reply."""
    sock = netns.socket(socket.AF_INET6)
    with netns.entered():
        index = socket.if_nametoindex(link)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    data, _ = ask(sock, b"which side", group, PORT)
    return data


def test_reload_moves_a_link_local_scope_group_to_another_interface(site: Site):
    """ff02:: groups are bound to their interface; a reload that changes it must not kill."""
    group = "ff02::1:77"
    daemon = site.daemons.start(site.netns, f"interface: v6a\ngroups: ['{group}']\n")
    assert answered_via(site.netns, group, "v6b").startswith(b"HEAR [ WHICH SIDE")  # to v6a
    daemon.config_path.write_text(f"interface: v6b\ngroups: ['{group}']\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("READY=1")
    assert daemon.proc.poll() is None
    assert answered_via(site.netns, group, "v6a").startswith(b"HEAR [ WHICH SIDE")  # to v6b
    assert "internal error" not in daemon.stderr
