"""`mcastd probe` on the wire: send the train of probes, receive the replies, report.

`run` is the API (the exporter's `/probe` calls it too): settings in, a ProbeReport out.
The decisions are in mcastd.probe; here are only the sockets, the clock and the terminal.

Sockets: one sends the probes and hears unicast replies (bound to `--source` if given, so
that SSM responders that joined (S,G) with S = that address hear us); with `--join`, a second
one bound to (group, port) and joined hears responders that answer to the group. Both ask
for the TTL / hop limit of each datagram (IP_RECVTTL / IPV6_RECVHOPLIMIT) and get a receive
buffer large enough for a thousand replies arriving at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import NamedTuple, TextIO

from mcastd import net
from mcastd.config import Endpoint, Settings, format_address
from mcastd.errors import SocketSetupError, strerror
from mcastd.exitcodes import ExitCode, fail
from mcastd.probe import (
    ID_BYTES,
    Heard,
    ProbeReport,
    ProbeSettings,
    Roster,
    RosterError,
    Train,
    Via,
    new_probe_id,
    parse_roster,
    problems,
    render_heard,
    render_json,
    render_text,
    roster_from_list,
)
from mcastd.protocol import RECEIVE_BUFFER
from mcastd.wakeup import Wakeup

# linux/in.h and asm-generic/socket.h: the socket module of Python 3.11 names neither.
IP_RECVTTL = 12
SO_RCVBUFFORCE = 33
SO_RXQ_OVFL = 40  # each datagram then carries the socket's count of drops (buffer full)
# Room for a burst of replies: a thousand responders answering one probe at once need about
# 1 MB of socket memory (each small datagram costs a ~1 KiB buffer); the kernel doubles this.
PROBE_RECEIVE_BUFFER = 8 * 1024 * 1024
# Ancillary space for one int (the TTL / hop limit).
INT = struct.calcsize("@i")
# Ancillary space for the TTL / hop limit (an int) and the drop count (a u32).
ANCILLARY = socket.CMSG_SPACE(INT) + socket.CMSG_SPACE(4)
TTL_MESSAGES = (
    (socket.IPPROTO_IP, socket.IP_TTL),
    (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT),
)

OnReply = Callable[[Heard], None]


class Interrupt:
    """Ctrl-C while probing: SIGINT sets `is_set` and wakes the poll (mcastd.wakeup's pipe).

    The loop then stops and the summary so far is printed, as ping does. (A KeyboardInterrupt
    raised in the middle of counting a reply would leave the counts half-updated.)
    """

    def __init__(self) -> None:
        self.is_set = False
        self.wakeup = Wakeup({signal.SIGINT: self._interrupted})

    def _interrupted(self, signum: signal.Signals) -> None:
        self.is_set = True

    @property
    def fd(self) -> int:
        """Readable once a signal came."""
        return self.wakeup.fd

    def __enter__(self) -> Interrupt:
        self.wakeup.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wakeup.__exit__(None, None, None)


class ProbeSockets(NamedTuple):
    sender: socket.socket
    """Sends the probes; unicast replies come back to it."""
    listener: net.GroupSocket | None
    """Bound to (group, port) and joined, with --join."""


def _endpoint(settings: ProbeSettings) -> Endpoint:
    """The group as mcastd.net knows it; the interface defaults to the source's."""
    interface = settings.interface or settings.source
    return Endpoint(settings.group, settings.port, Settings(interface=interface))


def _receive_options(sock: socket.socket, v6: bool) -> None:
    if v6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    try:
        # Root (CAP_NET_ADMIN) may go above net.core.rmem_max; others get what it allows.
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, PROBE_RECEIVE_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PROBE_RECEIVE_BUFFER)


def send_error(settings: ProbeSettings, code: int) -> SocketSetupError:
    where = format_address(settings.group, settings.port)
    if code == errno.ENETUNREACH:
        message = "cannot send: no route for multicast (ip route add 224.0.0.0/4 dev IF, "
        message += "or --interface)"
    elif code == errno.EADDRNOTAVAIL and settings.source is not None:
        message = f"cannot send from {settings.source}: not an address of this host"
    elif code == errno.ENODEV:
        message = f"cannot send on interface {settings.interface}: no such interface"
    else:
        message = f"cannot send: {strerror(code)}"
    return SocketSetupError(where, code, message)


def open_sockets(settings: ProbeSettings) -> ProbeSockets:
    """The sender (and with `join` the group listener), or SocketSetupError with nothing open."""
    endpoint = _endpoint(settings)
    v6 = settings.family_v6
    sender: socket.socket | None = None
    listener: net.GroupSocket | None = None
    try:
        sender = socket.socket(endpoint.family, socket.SOCK_DGRAM)
        sender.setblocking(False)
        _, index = net.memberships(endpoint)
        if settings.source is not None:
            sender.bind((settings.source, 0))
        net.apply_interface(sender, endpoint, index)
        _receive_options(sender, v6)
        if settings.join:
            listener = net.open_group_socket(endpoint)
            _receive_options(listener.sock, v6)
    except SocketSetupError:
        if sender is not None:
            sender.close()
        raise
    except OSError as e:
        if sender is not None:
            sender.close()
        if listener is not None:
            net.close_group_socket(listener)
        raise send_error(settings, e.errno or errno.EINVAL) from e
    return ProbeSockets(sender, listener)


def close_sockets(sockets: ProbeSockets) -> None:
    sockets.sender.close()
    if sockets.listener is not None:
        net.close_group_socket(sockets.listener)


def _scoped(address: str, scope_id: int) -> str:
    """`fe80::1%eth0`: a link-local sender with its interface, as a roster would name it."""
    try:
        return f"{address}%{socket.if_indextoname(scope_id)}"
    except OSError:
        return f"{address}%{scope_id}"  # the interface is gone already


def _drain(sock: socket.socket, via: Via, train: Train, on_reply: OnReply | None) -> int:
    """Read every datagram waiting on `sock`, accounting for each as it is read; return the
    socket's drop count (buffer full) as last reported, 0 if none was."""
    recvmsg = sock.recvmsg
    clock = time.monotonic
    heard = train.heard
    drops = 0
    while True:
        try:
            data, ancillary, _, sender = recvmsg(RECEIVE_BUFFER, ANCILLARY)
        except BlockingIOError:
            return drops
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                continue  # an ICMP error for an earlier datagram, reported once: read on
            raise
        now = clock()
        ttl = None
        for level, kind, value in ancillary:
            if (level, kind) in TTL_MESSAGES:
                ttl = struct.unpack("@i", value[:INT])[0]
            elif (level, kind) == (socket.SOL_SOCKET, SO_RXQ_OVFL):
                drops = struct.unpack("@I", value[:4])[0]
        address = sender[0]
        if len(sender) == 4 and sender[3]:
            address = _scoped(address, sender[3])
        result = heard(data, address, via, ttl, now)
        if result is not None and on_reply is not None:
            on_reply(result)


def run(
    settings: ProbeSettings,
    deadline: float | None = None,
    on_reply: OnReply | None = None,
    interrupt: Interrupt | None = None,
) -> ProbeReport:
    """Send the probes, hear the replies, and return the report.

    `deadline` (time.monotonic()): stop sending early enough that every probe sent gets its
    full `wait` before it, and return by then (the exporter passes the scrape timeout).
    `on_reply` is called with each matched reply as it arrives. Raises SocketSetupError
    when the probes cannot be sent or the group cannot be joined.
    """
    sockets = open_sockets(settings)
    try:
        return _probe(settings, sockets, deadline, on_reply, interrupt)
    except SocketSetupError:
        raise
    except OSError as e:  # a socket that stopped working half-way (interface gone ...)
        raise send_error(settings, e.errno or errno.EIO) from e
    finally:
        close_sockets(sockets)


def _probe(
    settings: ProbeSettings,
    sockets: ProbeSockets,
    deadline: float | None,
    on_reply: OnReply | None,
    interrupt: Interrupt | None,
) -> ProbeReport:
    destination = (settings.group, settings.port)
    sender = sockets.sender
    readers: dict[int, tuple[socket.socket, Via]] = {sender.fileno(): (sender, Via.UNICAST)}
    if sockets.listener is not None:
        readers[sockets.listener.sock.fileno()] = (sockets.listener.sock, Via.GROUP)
    poller = select.poll()
    for fd in readers:
        poller.register(fd, select.POLLIN)
    if interrupt is not None:
        poller.register(interrupt.fd, select.POLLIN)
    start = time.monotonic()
    train = Train(settings, new_probe_id(secrets.token_bytes(ID_BYTES)), start)
    ttl_set: int | None = None
    drops: dict[int, int] = {}  # per socket: the kernel's count, cumulative
    sending = True
    while True:
        now = time.monotonic()
        if interrupt is not None and interrupt.is_set:
            return train.report(now, interrupted=True, overflow=sum(drops.values()))
        probe = train.next_probe() if sending else None
        if probe is not None and deadline is not None and now + settings.wait > deadline:
            probe = None  # its reply could not come back in time
        if probe is None:
            sending = False
            end = train.due() or now
            if deadline is not None:
                end = min(end, deadline)
        else:
            seq, ttl, data = probe
            end = start + seq * settings.interval
            if now >= end:
                if ttl != ttl_set:
                    net.set_multicast_ttl(sender, ttl)
                    ttl_set = ttl
                sent_at = time.monotonic()
                sender.sendto(data, destination)  # an OSError becomes run's SocketSetupError
                train.sent(seq, sent_at)
                continue
        if not sending and (now >= end or train.settled()):
            return train.report(now, overflow=sum(drops.values()))
        for fd, _ in poller.poll(max(end - now, 0.0) * 1000):
            if fd in readers:
                sock, via = readers[fd]
                drops[fd] = max(drops.get(fd, 0), _drain(sock, via, train, on_reply))
            elif interrupt is not None:
                interrupt.wakeup.drain()


# The command -------------------------------------------------------------------------------


def load_roster(value: str) -> Roster:
    """`--expect`: a file of `ADDRESS [NAME]` lines if one has this name, else `a,b,c`."""
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise RosterError(f"{value}: cannot read: {e}") from e
        return parse_roster(text, value)
    return roster_from_list(value)


def settings_from(args: argparse.Namespace) -> ProbeSettings:
    """ProbeSettings from `mcastd probe`'s options (RosterError for a bad --expect)."""
    return ProbeSettings(
        group=args.group,
        port=args.port,
        count=args.count,
        interval=args.interval,
        wait=args.wait,
        ttl=args.ttl,
        hops=args.hops,
        interface=args.interface,
        source=args.source,
        join=args.join,
        roster=load_roster(args.expect) if args.expect is not None else None,
        max_loss=args.max_loss / 100.0,
    )


def _printer(out: TextIO) -> OnReply:
    def show(heard: Heard) -> None:
        print(render_heard(heard), file=out, flush=True)

    return show


def main(args: argparse.Namespace) -> int:
    """`mcastd probe`: 0 when the responders answered (see docs/probe.md), 1 when not."""
    try:
        settings = settings_from(args)
    except RosterError as e:
        return fail(f"probe: {e}", ExitCode.USAGE)
    found = problems(settings, root=os.geteuid() == 0)
    if found:
        return fail(f"probe: {found[0]}", ExitCode.USAGE)
    out = sys.stdout
    quiet = args.quiet or args.json
    if not quiet:
        how = f"ttl {settings.ttl}" if settings.hops is None else f"ttl 1-{settings.hops}"
        print(f"PROBE {format_address(settings.group, settings.port)} {how}", file=out)
    try:
        with Interrupt() as interrupt:
            report = run(settings, on_reply=None if quiet else _printer(out), interrupt=interrupt)
    except SocketSetupError as e:
        return fail(str(e), ExitCode.UNAVAILABLE)
    if args.json:
        print(render_json(report, settings.max_loss), file=out)
    else:
        if not quiet:
            print(file=out)
        print(render_text(report, settings.max_loss), file=out)
    return ExitCode.OK if report.success(settings.max_loss) else ExitCode.NO_REPLY
