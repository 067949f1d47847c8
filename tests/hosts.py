"""Several machines on Ethernet segments, and a multicast router between two of them; each
machine is a network namespace the test creates.

A segment is a bridge in a hub namespace of its own; every host is a namespace with `lo` and
an `eth0` whose veth peer is a port of that bridge. Addresses are private (10.77.0.0/24 and
fd77::/64 for `segment()`) and exist only inside these namespaces; multicast is routed to
`eth0`, so nothing leaves the segment. Every namespace name starts with `mcastd-h-`, and
`Segment.delete` removes them all. Namespaces and links are made by `scripts/netns` (the one
recipe shared with the demo, the autopkgtest and the bench); this module adds the topologies
and the processes that need an owner.

Routed (`routed()`): client segment "near" (10.78.1.0/24, fd78:1::/64) -- `Router` at .1 and
::1 on both -- responder segment "far" (10.78.2.0/24, fd78:2::/64). The router forwards
unicast (IPv4 and IPv6) and, with smcrouted from Debian (static `mroute` lines, its config,
PID file and control socket in a temp dir of its own, so routers run side by side), the
given groups both ways between `eth0` (near) and `eth1` (far). Every host has a default route
via the router. A datagram crosses the router only with a TTL / hop limit of 2 or more, and
arrives with one less:

    with routed() as net:               # net.client, net.router, net.responder(s)
        daemons.start(net.responder, "groups: [239.0.0.9]\n")
        sock = net.client.client(ttl=2) # bound to 10.78.1.2, multicasting out eth0
        extra = net.add_responder()     # another host behind the router (10.78.2.11)
        near = net.add_client("peer")   # another host beside the client (10.78.1.3)
        net.forward("239.1.2.3")        # one more group, at once

`Routed.add_responder(host=Host("box", pid=PID))` puts the namespace of a running process
(e.g. a booted container's init) behind the router as well. Routes: a (*,G) route per group
and direction, plus an (S,G) route for every host added, so that the first datagrams of a
host are forwarded too (see `Router.route`). For a manual try, `python3 -m tests.hosts
routed` builds the topology, prints the namespace names and deletes them on Ctrl-C.

Also here: daemons with a control socket, `mcastd say` inside a host, replies read together
with the TTL / hop limit they arrived with, and polls for "answered again".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
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
from typing import Any

from tests.netns import REPO, Daemon, NetNS, mcastd_argv, netns_script, sh, terminate

PREFIX = "mcastd-h"
PORT = 59259
# linux/in.h: the socket module of Python 3.11 does not name IP_RECVTTL.
IP_RECVTTL = 12
SUBNET4 = "10.77.0"
SUBNET6 = "fd77::"
# The routed topology: the client's segment, the router, the responders' segment.
NEAR = ("10.78.1", "fd78:1::")
FAR = ("10.78.2", "fd78:2::")
ROUTER_OCTET = 1
GROUPS = ("239.0.0.9", "ff05::9")


class Host(NetNS):
    """One machine: a namespace with only `lo` (up) until `Segment.plug` gives it `eth0`.

    With `pid`, the host is the network namespace of that running process (a booted
    container, say) under a name of its own; `delete` then removes only the name.
    """

    def __init__(self, role: str = "host", pid: int | None = None) -> None:
        # No veth pair or lo route of NetNS.
        self.name = f"{PREFIX}-{role}-{uuid.uuid4().hex[:6]}"
        self.v4: str | None = None
        self.v6: str | None = None
        self.owned = pid is None
        if pid is None:
            netns_script("add", self.name)
        else:
            sh("ip", "netns", "attach", self.name, str(pid))

    def index(self, link: str = "eth0") -> int:
        with self.entered():
            return socket.if_nametoindex(link)

    def has_link(self, link: str = "eth0") -> bool:
        try:
            self.index(link)
        except OSError:
            return False
        return True

    def client(
        self, family: int = socket.AF_INET, link: str = "eth0", ttl: int = 1
    ) -> socket.socket:
        """A UDP socket on this host, bound to its segment address, multicasting out `link`
        with TTL / hop limit `ttl` (2 or more to cross a router)."""
        sock = self.socket(family)
        if family == socket.AF_INET6:
            sock.bind((self.v6, 0))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index(link))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        else:
            sock.bind((self.v4, 0))
            request = bytes(4) + socket.inet_aton(str(self.v4)) + struct.pack("@i", 0)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, request)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
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
    """A bridge (in a hub namespace of its own) with hosts plugged into it; its subnet is
    SUBNET4.0/24 and SUBNET6/64 (10.77.0.0/24 and fd77::/64 unless given)."""

    def __init__(self, subnet4: str = SUBNET4, subnet6: str = SUBNET6) -> None:
        self.subnet4 = subnet4
        self.subnet6 = subnet6
        self.hub = Host("hub")
        self.hosts: list[Host] = []
        self.ports: dict[str, str] = {}  # host name -> its bridge port in the hub
        try:
            # No IGMP/MLD snooping: the bridge floods multicast like a hub, so what a host
            # hears depends on its own memberships only.
            netns_script("bridge", self.hub.name, "br0")
        except BaseException:
            self.hub.delete()
            raise

    def add(
        self, role: str, last_octet: int, plugged: bool = True, host: Host | None = None
    ) -> Host:
        """A new host (or `host`) at SUBNET4.N/24 and SUBNET6:N/64, on the segment unless not
        `plugged` (then `plug` connects it later)."""
        if host is None:
            host = Host(role)
        self.hosts.append(host)
        host.v4 = f"{self.subnet4}.{last_octet}"
        host.v6 = f"{self.subnet6}{last_octet:x}"
        if plugged:
            self.plug(host)
        return host

    def plug(self, host: Host, link: str = "eth0", addresses: bool = True) -> None:
        """Give `host` an interface `link` on the bridge (again, after `unplug`), with
        multicast routed to it."""
        port = f"p{len(self.ports)}-{uuid.uuid4().hex[:4]}"
        self.ports[host.name] = port
        netns_script("veth", self.hub.name, port, host.name, link)
        self.hub.ip("link", "set", port, "master", "br0")
        if addresses:
            self.address(host, link)
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


class Router(Host):
    """A host that forwards unicast (IPv4 and IPv6) and, once started, the multicast groups
    given to `forward`, with smcrouted (static `mroute` lines) running in its namespace.

    smcrouted's config, PID file, control socket and log are in a temp dir of this router, so
    several routers run side by side; `delete` stops it and removes them.
    """

    def __init__(self, role: str = "router") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcastd-r-"))  # short: AF_UNIX paths < 108
        self.routes: list[str] = []  # `mroute` lines
        self.smcrouted: subprocess.Popen[bytes] | None = None
        super().__init__(role)
        try:
            netns_script("router", self.name)
        except BaseException:
            self.delete()
            raise

    @property
    def control(self) -> Path:
        return self.dir / "smcroute.sock"

    def forward(self, group: str, links: tuple[str, str] = ("eth0", "eth1")) -> None:
        """Forward `group` from any source both ways between the two links."""
        first, second = links
        self.route(first, group, second)
        self.route(second, group, first)

    def route(self, inbound: str, group: str, outbound: str, source: str | None = None) -> None:
        """Forward `group` (from `source` only, if given) arriving on `inbound` to `outbound`,
        at once if smcrouted runs.

        A (*,G) route becomes a kernel route for each new source only when smcrouted answers
        the kernel's first datagram from it; until then the kernel queues at most 4 of them
        (ipmr's unresolved queue) and drops the rest. An (S,G) route is in the kernel at once.
        """
        match = [group] if source is None else [source, group]
        line = " ".join(["mroute from", inbound, *(["source", source] if source else []), "group"])
        self.routes.append(f"{line} {group} to {outbound}\n")
        if self.smcrouted is not None:
            self.smcroutectl("add", inbound, *match, outbound)

    def smcroutectl(self, *argv: str) -> str:
        """`smcroutectl ARGV...` against this router's smcrouted; its output."""
        done = subprocess.run(
            self.command(["smcroutectl", "-p", "-u", str(self.control), *argv]),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"smcroutectl {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, timeout: float = 10.0) -> None:
        """Run smcrouted with the routes so far; return once it answers on its socket."""
        config = self.dir / "smcroute.conf"
        config.write_text("".join(self.routes))
        argv = ["smcrouted", "-n", "-i", self.name, "-f", str(config), "-u", str(self.control)]
        argv += ["-P", str(self.dir / "smcroute.pid"), "-l", "info"]
        with open(self.dir / "log", "wb") as log:
            self.smcrouted = subprocess.Popen(
                self.command(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.smcrouted.poll() is not None:
                raise RuntimeError(f"smcrouted exited: {self.log}")
            with suppress(RuntimeError):
                self.smcroutectl("show", "routes")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"smcrouted did not answer within {timeout} s: {self.log}")
            time.sleep(0.05)

    @property
    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.smcrouted is not None:
            terminate(self.smcrouted)

    def delete(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
            super().delete()


class Routed:
    """client segment (near) -- router -- responder segment (far); see the module docstring.

    `client` and `responder` are the first host of each side; `clients` and `responders` all.
    """

    def __init__(self, groups: Sequence[str] = GROUPS) -> None:
        self.clients: list[Host] = []
        self.responders: list[Host] = []
        self.groups: list[str] = []
        self.near = Segment(*NEAR)
        try:
            self.far = Segment(*FAR)
            try:
                self.router = Router()
            except BaseException:
                self.far.delete()
                raise
        except BaseException:
            self.near.delete()
            raise
        try:
            for side, link in ((self.near, "eth0"), (self.far, "eth1")):
                side.plug(self.router, link, addresses=False)
                self.router.ip("addr", "add", f"{side.subnet4}.{ROUTER_OCTET}/24", "dev", link)
                v6 = f"{side.subnet6}{ROUTER_OCTET:x}/64"
                self.router.ip("addr", "add", v6, "dev", link, "nodad")
            self.router.v4 = f"{NEAR[0]}.{ROUTER_OCTET}"
            self.router.v6 = f"{NEAR[1]}{ROUTER_OCTET:x}"
            for group in groups:
                self.forward(group)
        except BaseException:
            self.delete()
            raise

    @property
    def client(self) -> Host:
        return self.clients[0]

    @property
    def responder(self) -> Host:
        return self.responders[0]

    def add_client(self, role: str = "client") -> Host:
        """A host on the client's segment (10.78.1.2, .3, ...): a client, or a responder
        one hop from the client."""
        host = self.near.add(role, 2 + len(self.clients))
        self.clients.append(host)
        self._connect(host, self.near)
        return host

    def add_responder(self, role: str = "responder", host: Host | None = None) -> Host:
        """A host (a new one, or `host`) behind the router (10.78.2.10, .11, ...)."""
        host = self.far.add(role, 10 + len(self.responders), host=host)
        self.responders.append(host)
        self._connect(host, self.far)
        return host

    def forward(self, group: str) -> None:
        """Forward `group` both ways: from any source, and at once from every host here."""
        self.groups.append(group)
        self.router.forward(group)
        for host in self.clients:
            self._forward_from(host, group, self.near)
        for host in self.responders:
            self._forward_from(host, group, self.far)

    def _connect(self, host: Host, side: Segment) -> None:
        host.ip("route", "add", "default", "via", f"{side.subnet4}.{ROUTER_OCTET}")
        host.ip("-6", "route", "add", "default", "via", f"{side.subnet6}{ROUTER_OCTET:x}")
        for group in self.groups:
            self._forward_from(host, group, side)

    def _forward_from(self, host: Host, group: str, side: Segment) -> None:
        """An (S,G) route from `host`: its first datagrams are forwarded too (see
        `Router.route`)."""
        inbound, outbound = ("eth0", "eth1") if side is self.near else ("eth1", "eth0")
        source = host.v6 if ":" in group else host.v4
        assert source is not None
        self.router.route(inbound, group, outbound, source)

    def delete(self) -> None:
        try:
            self.router.delete()
        finally:
            try:
                self.far.delete()
            finally:
                self.near.delete()


@contextmanager
def routed(
    groups: Sequence[str] = GROUPS, responders: int = 1, clients: int = 1
) -> Iterator[Routed]:
    """The routed topology with smcrouted forwarding `groups`, `clients` hosts on the near
    segment and `responders` behind the router; all stopped and deleted afterwards."""
    net = Routed(groups)
    try:
        for _ in range(clients):
            net.add_client()
        for _ in range(responders):
            net.add_responder()
        net.router.start()
        yield net
    finally:
        net.delete()


class Daemons:
    """Daemons started by one test, each with a control socket; all stopped at `close`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))  # short: AF_UNIX paths < 108
        self.started: list[Daemon] = []

    def start(
        self,
        host: NetNS,
        config: str | None,
        args: Sequence[str] = (),
        ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        daemon = Daemon(host, config, args, workdir=self.dir, env=env)
        self.started.append(daemon)
        if ready:
            daemon.wait_for("READY=1")
        return daemon

    def document(self, daemon: Daemon) -> dict[str, Any]:
        """This daemon's document of `mcastd status --json`."""
        out = subprocess.run(
            mcastd_argv("status", "--json", "--socket", str(daemon.control_socket)),
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        (document,) = json.loads(out.stdout)["daemons"]
        return document  # type: ignore[no-any-return]

    def status(self, daemon: Daemon) -> dict[tuple[str, int], dict[str, object]]:
        """The endpoints of `mcastd status --json` for this daemon, by (group, port)."""
        return {(e["group"], e["port"]): e for e in self.document(daemon)["endpoints"]}

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


def upstream_hear(host: NetNS, group: str, port: int = PORT) -> subprocess.Popen[bytes]:
    """Upstream `multicast` 2.1.1's HEAR server (installed in the test venv) inside `host`,
    its output dropped."""
    argv = [sys.executable, "-m", "multicast", "--daemon", "HEAR", "--group", group]
    return subprocess.Popen(
        host.command([*argv, "--port", str(port)]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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


def main(argv: Sequence[str] | None = None) -> int:
    """`python3 -m tests.hosts routed [--responders N]`: the routed topology for a manual try,
    until Ctrl-C or SIGTERM (then it is stopped and deleted, as after a test)."""
    parser = argparse.ArgumentParser(prog="python3 -m tests.hosts", description=main.__doc__)
    parser.add_argument("topology", choices=["routed"])
    parser.add_argument("--responders", type=int, default=1, choices=range(1, 200))
    parser.add_argument(
        "--group",
        action="append",
        help="a group to forward (default: both of " + " and ".join(GROUPS) + ")",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with routed(args.group or GROUPS, responders=args.responders) as net:
        for role, host in [("client", net.client), ("router", net.router)] + [
            ("responder", h) for h in net.responders
        ]:
            print(f"{role:<10} {host.name:<28} {host.v4:<11} {host.v6}")
        print(f"smcrouted forwards {', '.join(net.groups)}; Ctrl-C stops it and deletes all")
        sys.stdout.flush()
        with suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
