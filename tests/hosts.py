"""Several machines on one Ethernet segment, each a network namespace the test creates.

A hub namespace holds a bridge; every host is a namespace with `lo` and an `eth0` whose veth
peer is a port of that bridge. Addresses are private (10.77.0.0/24, fd77::/64) and exist only
inside these namespaces; multicast is routed to `eth0`, so nothing leaves the segment. Every
namespace name starts with `mcastd-h-`, and `Segment.delete` removes them all.

Also here: daemons with a control socket, `mcastd say` inside a host, replies read together
with the TTL / hop limit they arrived with, and polls for "answered again".
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.netns import REPO, Daemon, NetNS, mcastd_argv, sh

PREFIX = "mcastd-h"
PORT = 59259
# linux/in.h: the socket module of Python 3.11 does not name IP_RECVTTL.
IP_RECVTTL = 12
SUBNET4 = "10.77.0"
SUBNET6 = "fd77::"


class Host(NetNS):
    """One machine: a namespace with only `lo` (up) until `Segment.plug` gives it `eth0`."""

    def __init__(self, role: str = "host") -> None:  # no veth pair or lo route of NetNS
        self.name = f"{PREFIX}-{role}-{uuid.uuid4().hex[:6]}"
        self.v4: str | None = None
        self.v6: str | None = None
        sh("ip", "netns", "add", self.name)
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    def index(self, link: str = "eth0") -> int:
        with self.entered():
            return socket.if_nametoindex(link)

    def has_link(self, link: str = "eth0") -> bool:
        try:
            self.index(link)
        except OSError:
            return False
        return True

    def client(self, family: int = socket.AF_INET, link: str = "eth0") -> socket.socket:
        """A UDP socket on this host, bound to its segment address, multicasting out `link`."""
        sock = self.socket(family)
        if family == socket.AF_INET6:
            sock.bind((self.v6, 0))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index(link))
        else:
            sock.bind((self.v4, 0))
            request = bytes(4) + socket.inet_aton(str(self.v4)) + struct.pack("@i", 0)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, request)
        return sock

    def member(self, group: str, port: int = PORT, link: str = "eth0") -> socket.socket:
        """A socket on this host that joined `group` on `link` and hears port `port`."""
        family = socket.AF_INET6 if ":" in group else socket.AF_INET
        sock = self.socket(family)
        index = self.index(link)
        if family == socket.AF_INET6:
            sock.bind((group, port))
            request = socket.inet_pton(family, group) + struct.pack("@I", index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, request)
        else:
            sock.bind((group, port))
            request = socket.inet_aton(group) + bytes(4) + struct.pack("@i", index)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, request)
        return sock


class Segment:
    """A bridge (in a hub namespace of its own) with hosts plugged into it."""

    def __init__(self) -> None:
        self.hub = Host("hub")
        self.hosts: list[Host] = []
        self.ports: dict[str, str] = {}  # host name -> its bridge port in the hub
        try:
            # No IGMP/MLD snooping: the bridge floods multicast like a hub, so what a host
            # hears depends on its own memberships only.
            self.hub.ip("link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            self.hub.ip("link", "set", "br0", "up")
        except BaseException:
            self.hub.delete()
            raise

    def add(self, role: str, last_octet: int, plugged: bool = True) -> Host:
        """A new host at 10.77.0.N/24 and fd77::N/64, on the segment unless not `plugged`
        (then `plug` connects it later)."""
        host = Host(role)
        self.hosts.append(host)
        host.v4 = f"{SUBNET4}.{last_octet}"
        host.v6 = f"{SUBNET6}{last_octet:x}"
        if plugged:
            self.plug(host)
        return host

    def plug(self, host: Host, link: str = "eth0", addresses: bool = True) -> None:
        """Give `host` an interface `link` on the bridge (again, after `unplug`)."""
        port = f"p{len(self.ports)}-{uuid.uuid4().hex[:4]}"
        self.ports[host.name] = port
        self.hub.ip("link", "add", port, "type", "veth", "peer", "name", link, "netns", host.name)
        self.hub.ip("link", "set", port, "master", "br0")
        self.hub.ip("link", "set", port, "up")
        # No duplicate address detection: addresses are usable at once.
        host.exec("sysctl", "-qw", f"net.ipv6.conf.{link}.accept_dad=0")
        # Keep the IPv6 address over down/up, as IPv4 does (a network manager would re-add it).
        host.exec("sysctl", "-qw", f"net.ipv6.conf.{link}.keep_addr_on_down=1")
        if addresses:
            self.address(host, link)
        host.ip("link", "set", link, "up")
        host.ip("route", "replace", "224.0.0.0/4", "dev", link)

    def address(self, host: Host, link: str = "eth0") -> None:
        host.ip("addr", "add", f"{host.v4}/24", "dev", link)
        host.ip("addr", "add", f"{host.v6}/64", "dev", link, "nodad")

    def unplug(self, host: Host, link: str = "eth0") -> None:
        """Delete the host's interface (its bridge-side peer goes with it)."""
        host.ip("link", "del", link)

    def delete(self) -> None:
        for host in self.hosts:
            host.delete()
        self.hub.delete()


@contextmanager
def segment(*hosts: tuple[str, int]) -> Iterator[list[Host]]:
    """The hosts (role, last address octet) on a fresh segment, deleted afterwards."""
    seg = Segment()
    try:
        yield [seg.add(role, octet) for role, octet in hosts]
    finally:
        seg.delete()


class Daemons:
    """Daemons started by one test, each with a control socket; all stopped at `close`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))  # short: AF_UNIX paths < 108
        self.started: list[Daemon] = []
        self.sockets: dict[int, Path] = {}

    def start(
        self,
        host: NetNS,
        config: str | None,
        args: Sequence[str] = (),
        ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        control = self.dir / f"c{len(self.started)}.sock"
        daemon = Daemon(
            host, config, [*args, "--control-socket", str(control)], workdir=self.dir, env=env
        )
        self.started.append(daemon)
        self.sockets[id(daemon)] = control
        if ready:
            daemon.wait_for("READY=1")
        return daemon

    def status(self, daemon: Daemon) -> dict[tuple[str, int], dict[str, object]]:
        """The endpoints of `mcastd status --json` for this daemon, by (group, port)."""
        out = subprocess.run(
            mcastd_argv("status", "--json", "--socket", str(self.sockets[id(daemon)])),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        (document,) = json.loads(out.stdout)["daemons"]
        return {(e["group"], e["port"]): e for e in document["endpoints"]}

    def close(self) -> None:
        for daemon in self.started:
            with suppress(OSError):
                daemon.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def balanced(endpoint: dict[str, object]) -> bool:
    """received == answered + listened + every drop reason."""
    dropped = endpoint["dropped"]
    assert isinstance(dropped, dict)
    total = endpoint["answered"] + endpoint["listened"] + sum(dropped.values())  # type: ignore[operator]
    return endpoint["received"] == total


def enable_ttl(sock: socket.socket) -> None:
    """Ask for the TTL / hop limit of each datagram as ancillary data."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)


def receive_with_ttl(sock: socket.socket, timeout: float) -> tuple[bytes, str, int | None]:
    """One datagram, its sender address and the TTL / hop limit it arrived with."""
    sock.settimeout(timeout)
    data, ancillary, _, sender = sock.recvmsg(70_000, socket.CMSG_SPACE(4))
    ttl = None
    for level, kind, value in ancillary:
        if (level, kind) in (
            (socket.IPPROTO_IP, socket.IP_TTL),
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
        ):
            ttl = struct.unpack("@i", value[:4])[0]
    return data, sender[0], ttl


def replies(sock: socket.socket, quiet: float = 0.5) -> list[tuple[bytes, str, int | None]]:
    """Every datagram (with sender and TTL) until none has come for `quiet` seconds."""
    got = []
    with suppress(TimeoutError):
        while True:
            got.append(receive_with_ttl(sock, quiet))
    return got


def answered_within(
    sock: socket.socket, group: str, seconds: float, port: int = PORT, text: bytes = b"back?"
) -> bool:
    """Ask every 0.1 s until a reply comes, for at most `seconds` (the behaviour asked for)."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.1)
    while time.monotonic() < deadline:
        with suppress(OSError):  # ENETUNREACH while the route is gone, and the like
            sock.sendto(text, (group, port))
        with suppress(TimeoutError, OSError):
            while True:
                if sock.recv(70_000).startswith(b"HEAR [ " + text.upper()):
                    return True
    return False


def run(netns: NetNS, argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """A command run to its end inside `netns`."""
    return subprocess.run(
        netns.command(argv), capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False
    )


def say(netns: NetNS, *args: str, wait: float = 1.0) -> subprocess.CompletedProcess[str]:
    """`mcastd say --wait WAIT ARGS...` run inside `netns` (a host)."""
    return run(netns, mcastd_argv("say", "--wait", str(wait), *args))


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def udp_drops(netns: NetNS, address: str, port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to address:port (receive buffer
    full), from the last column of /proc/net/udp (or udp6) inside the namespace."""
    v6 = ":" in address
    table = "/proc/net/udp6" if v6 else "/proc/net/udp"
    text = subprocess.run(
        netns.command(["cat", table]), capture_output=True, text=True, check=True
    ).stdout
    packed = socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, address)
    # The kernel prints the address as host-order 32-bit words in hex.
    words = struct.unpack(f"@{len(packed) // 4}I", packed)
    wanted = "".join(f"{w:08X}" for w in words) + f":{port:04X}"
    drops = [int(line.split()[-1]) for line in text.splitlines()[1:] if line.split()[1] == wanted]
    assert len(drops) == 1, f"{len(drops)} sockets on {address}:{port}:\n{text}"
    return drops[0]


def environment(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


# Run with `python -c` inside a namespace: send COUNT datagrams `<tag> <n>` from SOURCE to
# GROUP:PORT at RATE a second (bounded: it stops after COUNT), count the replies that come
# back meanwhile and for 0.5 s after, and print {"sent", "replies", "seconds"} as JSON.
FLOOD = """
import json, socket, sys, time
source, group, port, count, rate, tag = sys.argv[1:7]
port, count, rate = int(port), int(count), float(rate)
family = socket.AF_INET6 if ":" in group else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM)
s.bind((source, 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.setblocking(False)
got = 0
def drain():
    global got
    try:
        while True:
            s.recv(70000)
            got += 1
    except BlockingIOError:
        pass
start = time.monotonic()
batch = 20
for first in range(0, count, batch):
    due = start + first / rate
    while time.monotonic() < due:
        drain()
        time.sleep(0.0005)
    for n in range(first, min(first + batch, count)):
        s.sendto(b"%s %d" % (tag.encode(), n), (group, port))
elapsed = time.monotonic() - start
s.settimeout(0.5)
try:
    while True:
        s.recv(70000)
        got += 1
except TimeoutError:
    pass
print(json.dumps({"sent": count, "replies": got, "seconds": elapsed}))
"""


def flood(
    netns: NetNS,
    source: str,
    group: str,
    count: int,
    rate: float,
    port: int = PORT,
    tag: str = "flood",
) -> subprocess.Popen[str]:
    """Start the FLOOD sender inside `netns`; `.communicate()` gives its JSON line."""
    argv = [sys.executable, "-c", FLOOD, source, group, str(port), str(count), str(rate), tag]
    return subprocess.Popen(netns.command(argv), stdout=subprocess.PIPE, text=True)
