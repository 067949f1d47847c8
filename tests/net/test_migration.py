"""Migrating from upstream `multicast` 2.1.1 HEAR: upstream's own server and clients against mcastd.

Two namespaces side by side: one runs upstream's `multicast --daemon HEAR --group G --port P`,
the other `mcastd run --group G --port P` (no configuration file). One client, bound to the same
address and port in both, sends every payload to both servers, so that the replies (which quote
the client as `SAID ('127.0.0.1', PORT)`) can be compared byte for byte. Upstream's SAY (its
CLI, its `--pipe` mode and its library) closes its socket as soon as it has sent, so its
replies are read from an AF_PACKET capture on `lo`. docs/migrating.md lists what differs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import pytest

from tests.hosts import Daemons, enable_ttl, environment, run
from tests.netns import REPO, NetNS, mcastd_argv

pytestmark = pytest.mark.net

GROUP = "239.0.0.9"
PORT = 59259
# One client port in both namespaces: the replies quote it, so they can be compared as bytes.
CLIENT = ("127.0.0.1", 50_009)
# What upstream HEAR reads of a datagram (socketserver.UDPServer.max_packet_size).
UPSTREAM_READ = 8192
PREFIX = "mc7-mig"
# linux/if_ether.h, linux/if_packet.h (the socket module names neither)
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4


def upstream_argv(*args: str) -> list[str]:
    # Upstream is installed in the test venv (pyproject's `test` extra: multicast==2.1.1).
    # It is only ever run as a process: importing it sets socket.setdefaulttimeout().
    return [sys.executable, "-m", "multicast", *args]


def hear(payload: bytes, group: str = GROUP, client: tuple[str, int] = CLIENT) -> bytes:
    """The HEAR reply to `payload` as both servers write it."""
    said = f" SAID ('{client[0]}', {client[1]}) ] from {group}"
    return b"HEAR [ " + payload.decode().upper().encode() + said.encode()


def hex_address(address: str, port: int) -> str:
    """`address:port` as /proc/net/udp and /proc/net/igmp print it (host-order hex)."""
    (word,) = struct.unpack("@I", socket.inet_aton(address))
    return f"{word:08X}:{port:04X}"


class Server(Protocol):
    def handled(self) -> None:
        """Return once the server can take the next datagram."""


class Upstream:
    """Upstream's HEAR server. It closes and re-binds its socket after every datagram and loses
    what arrives meanwhile, so `handled` waits (on /proc, not on a clock) until a new socket is
    bound and has joined the group again."""

    def __init__(
        self, netns: NetNS, workdir: Path, group: str = GROUP, port: int = PORT, wait: bool = True
    ) -> None:
        self.netns = netns
        self.local = hex_address(group, port)
        fd, name = tempfile.mkstemp(prefix="upstream-", dir=workdir)
        os.close(fd)
        self.stderr_path = Path(name)
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                netns.command(
                    upstream_argv("--daemon", "HEAR", "--group", group, "--port", str(port))
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.inode: int | None = None
        if wait:
            self.handled()

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def listening(self) -> int | None:
        """The inode of the socket bound to (group, port) once it has joined, else None."""
        with self.netns.entered():
            udp = Path("/proc/thread-self/net/udp").read_text()
            igmp = Path("/proc/thread-self/net/igmp").read_text()
        if self.local.split(":")[0] not in igmp:
            return None
        for line in udp.splitlines()[1:]:
            fields = line.split()
            if fields[1] == self.local:
                return int(fields[9])
        return None

    def handled(self, timeout: float = 10.0) -> None:
        """Return once a socket other than the last one seen is bound and has joined."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            inode = self.listening()
            if inode is not None and inode != self.inode:
                self.inode = inode
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"upstream HEAR exited {self.proc.returncode}: {self.stderr}")
            time.sleep(0.002)
        raise AssertionError("upstream HEAR did not open its socket again")

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Ours:
    """`mcastd run --group G --port P`: one socket for its whole life, nothing to wait for."""

    def __init__(self, daemons: Daemons, netns: NetNS, args: Sequence[str] = ()) -> None:
        self.daemon = daemons.start(
            netns, None, args or ["--group", GROUP, "--port", str(PORT)], env=plain_env()
        )

    def handled(self) -> None:
        pass


def plain_env() -> dict[str, str]:
    # An empty file: the built-in defaults for the rest, whatever the host's /etc/mcastd.yaml.
    return environment(MCASTD_CONFIG="/dev/null")


class Pair(NamedTuple):
    """Upstream and mcastd, each alone in a namespace of its own, serving GROUP:PORT."""

    theirs: NetNS
    ours: NetNS
    daemons: Daemons
    workdir: Path


@pytest.fixture
def pair() -> Iterator[Pair]:
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    daemons = Daemons()
    made: list[NetNS] = []
    try:
        made.append(NetNS(PREFIX))
        made.append(NetNS(PREFIX))
        yield Pair(made[0], made[1], daemons, workdir)
    finally:
        daemons.close()
        for netns in made:
            netns.delete()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def upstream(pair: Pair) -> Iterator[Upstream]:
    server = Upstream(pair.theirs, pair.workdir)
    try:
        yield server
    finally:
        server.close()


def client_socket(netns: NetNS) -> socket.socket:
    sock = netns.socket()
    sock.bind(CLIENT)
    return sock


def exchange(server: Server, sock: socket.socket, payload: bytes, marker: int) -> list[bytes]:
    """Every reply to `payload`: what arrives before the reply to a marker sent after it."""
    sock.sendto(payload, (GROUP, PORT))
    server.handled()
    tag = f"marker {marker}".encode()
    sock.sendto(tag, (GROUP, PORT))
    sock.settimeout(10)
    replies = []
    while not (data := sock.recv(70_000)).startswith(b"HEAR [ " + tag.upper() + b" SAID"):
        replies.append(data)
    server.handled()
    return replies


class Case(NamedTuple):
    name: str
    payload: bytes
    # None: both give the same replies, byte for byte (or both none); else the documented
    # difference: "truncated" (upstream reads 8,192 bytes) or "amplifying" (upper-casing makes
    # the text longer: upstream answers, mcastd does not).
    difference: str | None = None


CASES = [
    Case("ascii", b"hello world"),
    Case("empty datagram", b""),
    Case("one space", b" "),
    Case("trailing newline (not stripped)", b"line\n"),
    Case("CRLF lines", b"two\r\nlines\r\n"),
    Case("tab", b"a\tb"),
    Case("digits and punctuation", b"1234 !?#$&*()[]{}<>"),
    Case("format characters", b"%s %d %% {0} {}"),
    Case("quotes and backslash", b"'single' \"double\" \\back"),
    Case("NUL bytes", b"nul\x00byte\x00"),
    Case("looks like a reply", b"HEAR [ nested ] from 239.0.0.9"),
    Case("lower-case stop (no STOP for either)", b"stop"),
    Case("sharp s (ss)", "straße".encode()),
    Case("ligature fi (shorter upper case)", "ﬁsh".encode()),
    Case("dotless i", "\u0131i".encode()),
    Case("Greek with final sigma", "ελληνικά ς".encode()),
    Case("Cyrillic", "привет".encode()),
    Case("CJK", "日本語のテキスト".encode()),
    Case("emoji", "👋 wave".encode()),
    Case("combining accent", "e\u0301te\u0301".encode()),
    Case("right-to-left", "مرحبا".encode()),
    Case("digraph dz", "ǆ".encode()),
    Case("1,000 bytes", b"a" * 1000),
    Case("8,192 bytes (upstream's read size)", b"x" * UPSTREAM_READ),
    Case("invalid UTF-8 (no reply from either)", b"\xff\xfe bad"),
    Case("lone continuation byte", b"\x80abc"),
    Case("overlong encoding", b"\xc0\xaf"),
    Case("encoded surrogate", b"\xed\xa0\x80"),
    Case("8,193 bytes", b"x" * (UPSTREAM_READ + 1), "truncated"),
    Case("30,000 bytes", b"y" * 30_000, "truncated"),
    Case("character across byte 8,192", b"x" * (UPSTREAM_READ - 1) + "é".encode(), "truncated"),
    Case("n with apostrophe (3 bytes upper)", "ŉ".encode(), "amplifying"),
    Case("iota with dialytika and tonos", "ΐ".encode(), "amplifying"),
]


def test_replies_are_byte_identical_to_upstream_except_as_documented(
    pair: Pair, upstream: Upstream
):
    ours = Ours(pair.daemons, pair.ours)
    servers: list[tuple[Server, socket.socket]] = [
        (upstream, client_socket(pair.theirs)),
        (ours, client_socket(pair.ours)),
    ]
    identical = []
    for n, case in enumerate(CASES):
        theirs_got, ours_got = (exchange(s, sock, case.payload, n) for s, sock in servers)
        if case.difference is None:
            assert ours_got == theirs_got, case.name
            identical.append(case.name)
        elif case.difference == "truncated":
            head = case.payload[:UPSTREAM_READ]
            try:
                expected = [hear(head)]
            except UnicodeDecodeError:
                expected = []  # upstream cannot decode what it read: no reply
            assert theirs_got == expected, case.name
            assert ours_got == [hear(case.payload)], case.name
        else:
            assert case.difference == "amplifying"
            assert theirs_got == [hear(case.payload)], case.name
            assert len(theirs_got[0]) > len(hear(b"")) + len(case.payload)
            assert ours_got == [], case.name
    assert len(identical) == sum(case.difference is None for case in CASES)
    print(f"\nbyte-identical: {len(identical)} of {len(CASES)} payloads")
    assert upstream.proc.poll() is None
    assert ours.daemon.proc.poll() is None


@pytest.mark.parametrize(
    ("payload", "stops_mcastd"),
    [
        (b"STOP", True),
        (b"STOP\n", True),  # upstream's own MulticastUDPClient appends a newline
        (b"  STOP \r\n", True),
        (b"NONSTOP", False),
        (b"BUS STOP", False),
        (b"STOPPED", False),
    ],
)
def test_stop_is_the_whole_word_for_mcastd_and_any_substring_for_upstream(
    pair: Pair, upstream: Upstream, payload: bytes, stops_mcastd: bool
):
    ours = Ours(pair.daemons, pair.ours)
    socks = [client_socket(pair.theirs), client_socket(pair.ours)]
    replies = []
    for sock in socks:
        sock.settimeout(10)
        sock.sendto(payload, (GROUP, PORT))
        replies.append(sock.recv(70_000))
    assert replies[0] == replies[1] == hear(payload)  # both answer a STOP before stopping
    assert upstream.wait() == 0
    if stops_mcastd:
        assert ours.daemon.proc.wait(10) == 0
    else:
        assert exchange(ours, socks[1], b"still here", 0) == [hear(b"still here")]
        assert ours.daemon.proc.poll() is None


@pytest.mark.parametrize(
    ("signum", "upstream_exit"),
    [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM), (signal.SIGHUP, -signal.SIGHUP)],
)
def test_signals(pair: Pair, upstream: Upstream, signum: int, upstream_exit: int):
    ours = Ours(pair.daemons, pair.ours)
    upstream.proc.send_signal(signum)
    assert upstream.wait() == upstream_exit  # SIGTERM and SIGHUP kill it: no handler
    ours.daemon.signal(signum)
    if signum == signal.SIGHUP:
        ours.daemon.wait_for("RELOADING=1")  # mcastd reloads its configuration instead
        ours.daemon.wait_for("READY=1")
        assert exchange(ours, client_socket(pair.ours), b"reloaded", 0) == [hear(b"reloaded")]
    else:
        assert ours.daemon.proc.wait(10) == 0


def test_upstream_and_mcastd_cannot_serve_one_group_and_port_side_by_side(
    pair: Pair, upstream: Upstream
):
    # Upstream first: mcastd refuses to start, naming the port (exit 69), and upstream goes on.
    late = pair.daemons.start(
        pair.theirs, None, ["--group", GROUP, "--port", str(PORT)], ready=False, env=plain_env()
    )
    assert late.proc.wait(10) == 69
    assert f"{GROUP}:{PORT}: address already in use" in late.stderr
    sock = client_socket(pair.theirs)
    assert exchange(upstream, sock, b"still upstream", 0) == [hear(b"still upstream")]
    # mcastd first: upstream exits 70 without a word, and mcastd goes on.
    ours = Ours(pair.daemons, pair.ours)
    second = Upstream(pair.ours, pair.workdir, wait=False)
    try:
        assert second.wait() == 70
        assert second.stderr == ""
    finally:
        second.close()
    sock = client_socket(pair.ours)
    assert exchange(ours, sock, b"still mcastd", 0) == [hear(b"still mcastd")]


def test_reply_source_port_and_ttl(pair: Pair, upstream: Upstream):
    Ours(pair.daemons, pair.ours)
    got = {}
    for side, netns in (("theirs", pair.theirs), ("ours", pair.ours)):
        sock = client_socket(netns)
        enable_ttl(sock)
        sock.settimeout(10)
        sock.sendto(b"ttl?", (GROUP, PORT))
        data, ancillary, _, sender = sock.recvmsg(70_000, socket.CMSG_SPACE(4))
        assert data == hear(b"ttl?")
        ((level, kind, value),) = ancillary
        assert (level, kind) == (socket.IPPROTO_IP, socket.IP_TTL)
        got[side] = (sender[1], struct.unpack("@i", value)[0])
        out = run(netns, ["sysctl", "-n", "net.ipv4.ip_default_ttl"])
        assert got[side][1] == int(out.stdout)  # unicast replies: the system default, both
    assert got["theirs"][0] != PORT  # upstream answers from a new socket (ephemeral port)
    assert got["ours"][0] == PORT  # mcastd answers from the group's port


class Capture:
    """UDP datagrams arriving on `lo` of a namespace, read with an AF_PACKET socket: the replies
    to upstream's SAY, which closes its socket before they come."""

    def __init__(self, netns: NetNS) -> None:
        with netns.entered():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self.sock.bind(("lo", ETH_P_IP))
        self.seen: list[tuple[int, tuple[str, int], bytes]] = []

    def read(self, timeout: float) -> bool:
        """Add the next UDP datagram (source port, destination, payload) to `seen`."""
        self.sock.settimeout(timeout)
        try:
            packet, address = self.sock.recvfrom(70_000)
        except TimeoutError:
            return False
        if address[2] == PACKET_OUTGOING or packet[9] != socket.IPPROTO_UDP:
            return True  # lo shows each packet twice: keep the received copy
        header = (packet[0] & 0x0F) * 4
        source, destination, length = struct.unpack("!HHH", packet[header : header + 6])
        address_to = socket.inet_ntoa(packet[16:20])
        payload = packet[header + 8 : header + length]
        self.seen.append((source, (address_to, destination), payload))
        return True

    def replies(self, count: int, group: str = GROUP, timeout: float = 10.0) -> list[bytes]:
        """The reply to each of `count` requests sent to (group, PORT), in order, once all are
        in, with the requester's port in `SAID (...)` written as PORT."""
        deadline = time.monotonic() + timeout
        while True:
            requests = [s for s, to, _ in self.seen if to == (group, PORT)]
            answers = {}
            for _, to, payload in self.seen:
                if to[1] in requests and payload.startswith(b"HEAR [ "):
                    answers[to[1]] = payload.replace(
                        f"SAID ('127.0.0.1', {to[1]}) ]".encode(), b"SAID ('127.0.0.1', PORT) ]"
                    )
            if len(requests) == count and len(answers) == count:
                return [answers[port] for port in requests]
            left = deadline - time.monotonic()
            if left <= 0 or not self.read(left):
                raise AssertionError(f"{len(requests)} requests, {len(answers)} replies")

    def close(self) -> None:
        self.sock.close()


def send_with(netns: NetNS, argv: Sequence[str], stdin: str | None = None) -> None:
    """Run one of upstream's clients to its end inside `netns`; it must exit 0."""
    out = subprocess.run(
        netns.command(list(argv)), input=stdin, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr


LIBRARY_SAY = """
import sys
from multicast.send import McastSAY
McastSAY().doStep(group=sys.argv[1], port=int(sys.argv[2]), data=sys.argv[3])
"""


def test_upstream_say_cli_pipe_and_library_get_upstreams_replies(pair: Pair, upstream: Upstream):
    ours = Ours(pair.daemons, pair.ours)
    target = ["--group", GROUP, "--port", str(PORT)]
    senders: list[tuple[list[str], str | None]] = [
        (upstream_argv("SAY", *target, "--message", "hello", "from", "SAY"), None),
        (upstream_argv("SAY", *target, "-m", "ünïcödé", "straße"), None),
        (upstream_argv("SAY", *target, "--pipe"), "line one\nline two\n"),
        ([sys.executable, "-c", LIBRARY_SAY, GROUP, str(PORT), "from the library"], None),
    ]
    got = []
    for netns, server in ((pair.theirs, upstream), (ours.daemon.netns, ours)):
        capture = Capture(netns)
        try:
            for count, (argv, stdin) in enumerate(senders, start=1):
                send_with(netns, argv, stdin)
                capture.replies(count)  # in before the next sender: upstream takes one at a time
                server.handled()
            got.append(capture.replies(len(senders)))
        finally:
            capture.close()
    theirs, mine = got
    assert len(mine) == len(senders)
    assert mine == theirs
    piped = b"HEAR [ LINE ONE\nLINE TWO\n SAID ('127.0.0.1', PORT) ] from 239.0.0.9"
    assert mine[2] == piped  # one datagram, newlines kept


def test_a_long_pipe_is_one_datagram_per_1316_characters_each_answered(pair: Pair):
    Ours(pair.daemons, pair.ours)
    text = "".join(f"{n:05d} ünïcödé\n" for n in range(200))  # 3,000 characters: 3 datagrams
    capture = Capture(pair.ours)
    try:
        send_with(
            pair.ours, upstream_argv("SAY", "--group", GROUP, "--port", str(PORT), "--pipe"), text
        )
        replies = capture.replies(3)
    finally:
        capture.close()
    assert len(replies) == 3
    said = b" SAID ('127.0.0.1', PORT) ] from " + GROUP.encode()
    assert all(r.startswith(b"HEAR [ ") and r.endswith(said) for r in replies)
    shouted = b"".join(r[len(b"HEAR [ ") : -len(said)] for r in replies)
    assert shouted == text.upper().encode()


def test_upstream_default_group_is_not_served_until_named(pair: Pair):
    # mcastd's built-in groups are 239.0.0.9 and ff05::9; upstream's default is 224.0.0.1.
    ours = Ours(pair.daemons, pair.ours, ["--log-level", "info"])
    capture = Capture(pair.ours)
    try:
        send_with(pair.ours, upstream_argv("SAY", "--message", "anyone"))
        # The reply to a datagram sent after the SAY is in: one to the SAY would be in too.
        assert exchange(ours, client_socket(pair.ours), b"after", 0) == [hear(b"after")]
        while capture.read(0.2):
            pass
        sent = [p for _, to, p in capture.seen if to[1] == PORT]
        assert sent == [b"anyone", b"after", b"marker 0"]
        assert not [p for _, _, p in capture.seen if p.startswith(b"HEAR [ ANYONE")]
        ours.daemon.stop()
        Ours(pair.daemons, pair.ours, ["--group", "224.0.0.1"])  # served when named
        send_with(pair.ours, upstream_argv("SAY", "--message", "anyone"))
        capture.seen.clear()
        assert capture.replies(1, "224.0.0.1") == [
            b"HEAR [ ANYONE SAID ('127.0.0.1', PORT) ] from 224.0.0.1"
        ]
    finally:
        capture.close()


def test_run_group_port_serves_exactly_that_and_say_takes_upstreams_message_option(pair: Pair):
    # As `multicast --daemon HEAR --group 239.0.0.9 --port 40000`, with no file.
    Ours(pair.daemons, pair.ours, ["--group", GROUP, "--port", "40000"])
    said = run(
        pair.ours,
        mcastd_argv("say", "--group", GROUP, "--port", "40000", "--wait", "2", "-m", "hi", "all"),
    )
    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith("127.0.0.1:40000 HEAR [ HI ALL SAID ('127.0.0.1', ")
    for group, port in ((GROUP, PORT), ("ff05::9", PORT)):  # not the built-in endpoints
        unheard = run(
            pair.ours,
            mcastd_argv("say", "--group", group, "--port", str(port), "--wait", "0.5", "-m", "x"),
        )
        assert (unheard.returncode, unheard.stdout) == (1, "")


@pytest.mark.timeout(600)  # pip fetches setuptools and the dependencies: ~10 s here
def test_pip_install_in_a_plain_venv_needs_no_libsystemd(tmp_path: Path):
    # Upstream is pure Python; so is mcastd without the [systemd] extra (systemd-python builds
    # from source and needs libsystemd's headers). Then logs go to stderr and sd_notify is
    # sent by mcastd itself.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "mcastd", source / "mcastd", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.pop("MCASTD_CONFIG", None)
    env.pop("JOURNAL_STREAM", None)
    venv = tmp_path / "venv"
    bin_dir = venv / "bin"

    def command(*argv: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,  # not the source tree: `import mcastd` must find the installed one
            env=env,
            check=False,
        )

    # Debian's python3 as a user would run it: without --system-site-packages, so that
    # Debian's python3-systemd is out of sight.
    made = command("/usr/bin/python3", "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    pip = command(bin_dir / "pip", "install", "--disable-pip-version-check", "-q", source)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    frozen = command(bin_dir / "pip", "list", "--format=freeze").stdout.splitlines()
    installed = {line.split("==")[0].lower() for line in frozen}
    assert {"mcastd", "pyyaml", "python-daemon"} <= installed
    assert "systemd-python" not in installed
    assert command(bin_dir / "python", "-c", "import systemd.daemon").returncode == 1

    netns = NetNS(PREFIX)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    proc = None
    try:
        notify.bind(str(tmp_path / "notify"))
        stderr_path = tmp_path / "stderr"
        with open(stderr_path, "wb") as stderr:
            # stderr as systemd's journal stream would be: mcastd wants the JournalHandler
            # there, and without systemd-python falls back to plain lines.
            stat = os.fstat(stderr.fileno())
            journal = f"{stat.st_dev}:{stat.st_ino}"
            proc = subprocess.Popen(
                netns.command(
                    [
                        str(bin_dir / "mcastd"),
                        *("run", "--group", GROUP, "--port", str(PORT)),
                        *("--control-socket", str(tmp_path / "control.sock")),
                    ]
                ),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=tmp_path,
                env={**env, "NOTIFY_SOCKET": str(tmp_path / "notify"), "JOURNAL_STREAM": journal},
            )
        notify.settimeout(0.5)
        deadline = time.monotonic() + 30
        while True:
            try:
                message = notify.recv(4096).decode()  # sent by notify.socket_notify
                break
            except TimeoutError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = stderr_path.read_text()
                    raise AssertionError(f"no READY=1, exit {proc.poll()}:\n{log}") from None
        assert message.startswith("READY=1\n"), message
        said = command(
            *netns.command([str(bin_dir / "mcastd"), "say", "--group", GROUP, "-m", "from pip"]),
            timeout=30,
        )
        assert said.returncode == 0, said.stderr
        assert said.stdout.startswith(f"127.0.0.1:{PORT} HEAR [ FROM PIP SAID ('127.0.0.1', ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        # Logged to stderr (no JournalHandler); no file on a fresh machine: built-in defaults.
        source_of = (
            "/etc/mcastd.yaml" if Path("/etc/mcastd.yaml").exists() else "<built-in defaults>"
        )
        assert f"starting with {source_of}" in stderr_path.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
        netns.delete()


def test_upstreams_environment_variables_are_not_read():
    upstream_env = {
        "MULTICAST_PORT": "50000",
        "MULTICAST_GROUP": "239.1.2.3",
        "MULTICAST_TTL": "5",
        "MULTICAST_BUFFER_SIZE": "100",
    }
    checked = subprocess.run(
        mcastd_argv("check"),
        capture_output=True,
        text=True,
        timeout=30,
        env={**plain_env(), **upstream_env, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    first, second = checked.stdout.splitlines()[:2]  # the built-in groups, port and ttl
    assert first.startswith("239.0.0.9 port 59259: ")
    assert ", ttl 1," in first
    assert second.startswith("ff05::9 port 59259: ")
    assert ", ttl 1," in second
