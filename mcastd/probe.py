"""`mcastd probe`, pure: who hears a group, with loss, round-trip time and hop distance.

No socket, clock or logger: `mcastd/prober.py` sends the probes and hands every datagram it
receives to `Train.heard` with the time it arrived; `Train.report(now)` sums up.

A probe is ordinary HEAR text, `mcastd-probe <id> <seq>`, so every HEAR responder (upstream
`multicast` 2.1.1 too) answers it unchanged: the reply carries it upper-cased,
`HEAR [ MCASTD-PROBE <ID> <SEQ> SAID ('ip', port) ] from GROUP`. The id is hex, chosen anew
for each run: replies to other clients' probes, our own probes looped back and group echoes
do not start with our id and are ignored. Neither hex digits nor the fixed words contain the
letters of STOP, which upstream obeys anywhere in a datagram.

Each responder is known by the source address of its replies. Per responder a probe is
`received` (first reply within `wait` of sending it), or the reply is a duplicate, late
(after `wait`), or reordered (received, but with a lower sequence number than one already
received from it). With a TTL sweep (`hops`), the smallest TTL of a probe it answered is its
hop distance, and only probes sent with at least that TTL count towards its loss.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from mcastd.addresses import as_address, canonical_address, format_address, is_ipv6, is_ssm

PROBE_WORD = "mcastd-probe"
# Probe ids: this many random bytes, written as lower-case hex (upper-cased in the reply).
ID_BYTES = 8
# Version of the `--json` document (docs/probe.md); raised when a field changes meaning.
SCHEMA_VERSION = 1

DEFAULT_COUNT = 5  # probes, like `ping -c 5`
DEFAULT_STEP_COUNT = 3  # probes per TTL step of a sweep, as traceroute sends 3 per hop
DEFAULT_INTERVAL = 1.0  # seconds between probes, as ping
DEFAULT_WAIT = 1.0  # seconds a reply may take before it is late
DEFAULT_MAX_LOSS = 1.0  # as ping's exit status: any reply at all is success
DEFAULT_HOPS = 8  # highest TTL of a sweep
# As iputils ping: users other than root may not send faster than this (a flood needs root).
USER_INTERVAL_FLOOR = 0.2
MAX_COUNT = 100_000
MAX_TTL = 255

REPLY_HEAD = b"HEAR [ "
SAID = b" SAID ('"


class Via(StrEnum):
    """How a reply reached us: sent to our own address, or to the group we joined."""

    UNICAST = "unicast"
    GROUP = "group"


class ReplyKind(StrEnum):
    """What one matched reply was, as the per-reply line says it."""

    RECEIVED = "received"
    REORDERED = "reordered"  # received, though a higher sequence came from it before
    DUPLICATE = "duplicate"
    LATE = "late"


class RosterError(ValueError):
    """An `--expect` list or file that cannot be read as addresses; one line, with its place."""


@dataclass(frozen=True)
class Roster:
    """The responders expected to answer (canonical addresses), with optional names."""

    entries: tuple[tuple[str, str | None], ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.entries)

    def name(self, address: str) -> str | None:
        return dict(self.entries).get(address)


@dataclass(frozen=True)
class ProbeSettings:
    """What to probe and how; the CLI and the exporter's modules fill it in."""

    group: str
    """Canonical group address."""
    port: int = 59259
    """Destination port of the probes (the responders' port)."""
    count: int | None = None
    """Probes to send (None: DEFAULT_COUNT); with `hops`, per TTL step (DEFAULT_STEP_COUNT)."""
    interval: float = DEFAULT_INTERVAL
    """Seconds between two probes."""
    wait: float = DEFAULT_WAIT
    """Seconds a reply may take; later ones are `late` and the probe counts as lost."""
    ttl: int = 1
    """TTL / hop limit of the probes (without `hops`)."""
    hops: int | None = None
    """Sweep the TTL from 1 to this and measure each responder's hop distance."""
    interface: str | None = None
    """Interface name or local address to send (and join) on; None: the routing table's."""
    source: str | None = None
    """Local address to send from (responders that joined (S,G) with S = this address)."""
    join: bool = False
    """Also join the group to hear responders that answer to the group (`reply: group`)."""
    roster: Roster | None = None
    """Expected responders; None: whoever answers."""
    max_loss: float = DEFAULT_MAX_LOSS
    """Highest loss ratio (0-1) at which a responder still counts as answering."""

    @property
    def family_v6(self) -> bool:
        return is_ipv6(self.group)


def new_probe_id(random_bytes: bytes) -> str:
    """The id of one run, from ID_BYTES random bytes the caller draws."""
    return random_bytes.hex()


def payload(probe_id: str, seq: int) -> bytes:
    """The text of probe `seq`: hex id and decimal number only, so never anything like STOP."""
    return f"{PROBE_WORD} {probe_id} {seq}".encode("ascii")


def schedule(settings: ProbeSettings) -> tuple[int, ...]:
    """The TTL of each probe in sending order: all `ttl`, or a sweep 1, 1, 1, 2, 2, 2 ..."""
    if settings.hops is None:
        return (settings.ttl,) * (settings.count or DEFAULT_COUNT)
    per_step = settings.count or DEFAULT_STEP_COUNT
    return tuple(ttl for ttl in range(1, settings.hops + 1) for _ in range(per_step))


def interval_floor(root: bool) -> float:
    return 0.0 if root else USER_INTERVAL_FLOOR


def problems(settings: ProbeSettings, root: bool) -> list[str]:
    """What is wrong with the settings for this user, one line each (empty: fine)."""
    found = []
    floor = interval_floor(root)
    if settings.interval < floor:
        found.append(f"--interval below {floor} s is a flood and needs root (as ping)")
    if settings.count is not None and settings.count < 1:
        found.append("--count must be at least 1")
    if settings.hops is not None and not 1 <= settings.hops <= MAX_TTL:
        found.append(f"--hops is a TTL (1-{MAX_TTL})")
    if settings.hops is not None and settings.ttl != 1:
        found.append("--hops sweeps the TTL itself: drop --ttl")
    if settings.source is not None and canonical_address(settings.source) is None:
        found.append(f"--source {settings.source} is not an IP address")
    elif settings.source is not None and is_ipv6(settings.source) != settings.family_v6:
        found.append(f"--source {settings.source} is not of the group's address family")
    if settings.join and is_ssm(settings.group):
        found.append("--join hears replies sent to an any-source group, not an SSM one")
    if not 0.0 <= settings.max_loss <= 1.0:
        found.append("--max-loss is a percentage (0-100)")
    if len(schedule(settings)) > MAX_COUNT:
        found.append(f"more than {MAX_COUNT} probes")
    return found


def parse_roster(text: str, source: str) -> Roster:
    """Read a roster: one `ADDRESS [NAME]` per line, `#` starts a comment, blank lines skipped."""
    entries: dict[str, str | None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        address = canonical_address(words[0])
        if address is None:
            raise RosterError(f"{source}:{number}: {words[0]!r} is not an IP address")
        if len(words) > 2:
            raise RosterError(f"{source}:{number}: expected `ADDRESS [NAME]`, got {line.strip()!r}")
        entries.setdefault(address, words[1] if len(words) == 2 else None)
    if not entries:
        raise RosterError(f"{source}: no addresses")
    return Roster(tuple(entries.items()))


def roster_from_list(text: str) -> Roster:
    """`--expect a,b,c`: addresses separated by commas."""
    return parse_roster(text.replace(",", "\n"), "--expect")


class Heard(NamedTuple):
    """One reply that answers one of our probes."""

    address: str
    seq: int
    rtt: float
    ttl: int | None
    via: Via
    kind: ReplyKind


class Rtt(NamedTuple):
    """Round-trip times in seconds; `mdev` as ping computes it (population deviation)."""

    min: float
    avg: float
    max: float
    mdev: float
    median: float


@dataclass(frozen=True)
class ResponderReport:
    """What one responder did, over the probes that count for it."""

    address: str
    name: str | None
    expected: bool
    sent: int
    """Probes that count: sent with a TTL that reaches it, and answered or waited for."""
    received: int
    duplicates: int
    late: int
    reordered: int
    unicast: int
    """Replies (any kind) that came to our own address."""
    group: int
    """Replies (any kind) that came to the group."""
    rtt: Rtt | None
    ttl_min: int | None
    """Lowest and highest TTL / hop limit the replies arrived with (None: not known)."""
    ttl_max: int | None
    hops: int | None
    """Smallest probe TTL it answered (only with a sweep)."""

    @property
    def loss(self) -> float:
        """Lost fraction of the probes that count; 1.0 when none counts yet."""
        return 1.0 - self.received / self.sent if self.sent else 1.0

    def ok(self, max_loss: float) -> bool:
        """It answered, and lost at most `max_loss` of the probes."""
        # Loss is a ratio of small integers: compare with a tolerance of one part in 1e9 so
        # that 1 - 99/100 counts as 1 %.
        return self.received > 0 and self.loss <= max_loss + 1e-9


@dataclass(frozen=True)
class ProbeReport:
    """The result of one run: every responder heard or expected, and the run's facts."""

    group: str
    port: int
    probe_id: str
    sent: int
    """Probes sent."""
    ttl: int | None
    """The probes' TTL (None with a sweep)."""
    hops: int | None
    """Highest TTL of the sweep (None without)."""
    interval: float
    wait: float
    duration: float
    interrupted: bool
    roster: Roster | None
    responders: tuple[ResponderReport, ...]
    ignored: int
    """Datagrams that were not replies to our probes (others' probes, echoes, noise)."""
    overflow: int = 0
    """Datagrams the kernel dropped because our receive buffer was full (SO_RXQ_OVFL)."""

    @property
    def expected(self) -> tuple[str, ...]:
        return self.roster.addresses if self.roster is not None else ()

    @property
    def missing(self) -> tuple[str, ...]:
        """Expected responders that never answered within `wait`."""
        return tuple(r.address for r in self.responders if r.expected and r.received == 0)

    @property
    def unexpected(self) -> tuple[str, ...]:
        """Responders that answered without being on the roster (none without a roster)."""
        if self.roster is None:
            return ()
        return tuple(r.address for r in self.responders if not r.expected)

    def success(self, max_loss: float) -> bool:
        """Every expected responder (without a roster: at least one) answered within max_loss."""
        if self.roster is None:
            return any(r.ok(max_loss) for r in self.responders)
        wanted = set(self.roster.addresses)
        return all(r.ok(max_loss) for r in self.responders if r.address in wanted)


class _Tally:
    """The running counts of one responder."""

    __slots__ = (
        "duplicates",
        "group",
        "highest",
        "late",
        "lowest_ttl",
        "received",
        "reordered",
        "rtts",
        "seen",
        "ttl_max",
        "ttl_min",
        "unicast",
    )

    def __init__(self) -> None:
        self.received: set[int] = set()
        self.seen: set[int] = set()  # received or late: a further reply is a duplicate
        self.rtts: list[float] = []
        self.duplicates = 0
        self.late = 0
        self.reordered = 0
        self.unicast = 0
        self.group = 0
        self.highest = -1
        self.ttl_min: int | None = None
        self.ttl_max: int | None = None
        self.lowest_ttl: int | None = None  # of the probes it answered in any way


def _sort_key(address: str) -> tuple[int, int, str]:
    ip = as_address(address)
    return (9, 0, address) if ip is None else (ip.version, int(ip), address)


class Train:
    """The state of one run: probes sent (seq -> TTL and time) and replies per responder."""

    def __init__(self, settings: ProbeSettings, probe_id: str, started: float) -> None:
        self.settings = settings
        self.probe_id = probe_id
        self.started = started
        self.ttls = schedule(settings)
        self.sent_at: list[float] = []
        self.tallies: dict[str, _Tally] = {}
        self.ignored = 0
        self.head = REPLY_HEAD + payload(probe_id, 0).upper()[:-1]  # up to the sequence number

    def next_probe(self) -> tuple[int, int, bytes] | None:
        """(seq, ttl, payload) of the next probe to send, None when the train is complete."""
        seq = len(self.sent_at)
        if seq >= len(self.ttls):
            return None
        return seq, self.ttls[seq], payload(self.probe_id, seq)

    def sent(self, seq: int, now: float) -> None:
        """Probe `seq` (the one `next_probe` gave) left at `now`."""
        if seq != len(self.sent_at):
            raise ValueError(f"probe {seq} sent out of order (next is {len(self.sent_at)})")
        self.sent_at.append(now)

    def match(self, data: bytes) -> int | None:
        """The sequence number of our probe that `data` answers, None if it answers none."""
        if not data.startswith(self.head):
            return None
        digits, said, tail = data[len(self.head) :].partition(SAID)
        if not said or not digits.isdigit() or len(digits) > 9 or b"] from " not in tail:
            return None
        seq = int(digits)
        return seq if seq < len(self.sent_at) else None

    def heard(
        self, data: bytes, address: str, via: Via, ttl: int | None, now: float
    ) -> Heard | None:
        """Account for one datagram received at `now` from `address` (None: not for us)."""
        seq = self.match(data)
        if seq is None:
            self.ignored += 1
            return None
        tally = self.tallies.get(address)
        if tally is None:
            tally = self.tallies[address] = _Tally()
        rtt = now - self.sent_at[seq]
        if via is Via.GROUP:
            tally.group += 1
        else:
            tally.unicast += 1
        if ttl is not None:
            tally.ttl_min = ttl if tally.ttl_min is None else min(tally.ttl_min, ttl)
            tally.ttl_max = ttl if tally.ttl_max is None else max(tally.ttl_max, ttl)
        probe_ttl = self.ttls[seq]
        if tally.lowest_ttl is None or probe_ttl < tally.lowest_ttl:
            tally.lowest_ttl = probe_ttl
        if seq in tally.seen:
            tally.duplicates += 1
            kind = ReplyKind.DUPLICATE
        elif rtt > self.settings.wait:
            tally.seen.add(seq)
            tally.late += 1
            kind = ReplyKind.LATE
        else:
            tally.seen.add(seq)
            tally.received.add(seq)
            tally.rtts.append(rtt)
            if seq < tally.highest:
                tally.reordered += 1
                kind = ReplyKind.REORDERED
            else:
                tally.highest = seq
                kind = ReplyKind.RECEIVED
        return Heard(address, seq, rtt, ttl, via, kind)

    def settled(self) -> bool:
        """With a roster, once every probe is sent: every expected responder has answered
        every probe, so waiting longer cannot change the verdict (the run may end early)."""
        roster = self.settings.roster
        if roster is None or len(self.sent_at) < len(self.ttls):
            return False
        wanted = len(self.sent_at)
        for address in roster.addresses:
            tally = self.tallies.get(address)
            if tally is None or len(tally.received) < wanted:
                return False
        return True

    def due(self) -> float | None:
        """When the last reply may still come in time (None before the first probe)."""
        return self.sent_at[-1] + self.settings.wait if self.sent_at else None

    def _counted(self, tally: _Tally | None, now: float) -> int:
        """Probes that count for one responder at `now`: its wait is over, or it answered."""
        wait = self.settings.wait
        floor = tally.lowest_ttl if tally is not None and self.settings.hops is not None else None
        count = 0
        for seq, at in enumerate(self.sent_at):
            if floor is not None and self.ttls[seq] < floor:
                continue  # sent with a TTL too small to reach it
            if at + wait <= now or (tally is not None and seq in tally.received):
                count += 1
        return count

    def _responder(self, address: str, tally: _Tally | None, now: float) -> ResponderReport:
        roster = self.settings.roster
        expected = roster is not None and address in roster.addresses
        name = roster.name(address) if roster is not None else None
        sent = self._counted(tally, now)
        if tally is None:
            return ResponderReport(
                address, name, expected, sent, 0, 0, 0, 0, 0, 0, None, None, None, None
            )
        rtt = None
        if tally.rtts:
            n = len(tally.rtts)
            avg = sum(tally.rtts) / n
            square = sum(r * r for r in tally.rtts) / n
            rtt = Rtt(
                min(tally.rtts),
                avg,
                max(tally.rtts),
                math.sqrt(max(square - avg * avg, 0.0)),
                statistics.median(tally.rtts),
            )
        return ResponderReport(
            address=address,
            name=name,
            expected=expected,
            sent=sent,
            received=len(tally.received),
            duplicates=tally.duplicates,
            late=tally.late,
            reordered=tally.reordered,
            unicast=tally.unicast,
            group=tally.group,
            rtt=rtt,
            ttl_min=tally.ttl_min,
            ttl_max=tally.ttl_max,
            hops=tally.lowest_ttl if self.settings.hops is not None else None,
        )

    def report(self, now: float, interrupted: bool = False, overflow: int = 0) -> ProbeReport:
        """The summary at `now`: probes still inside their wait count only if answered.

        `overflow`: replies the kernel dropped for want of receive buffer (shown as a warning:
        they are the client's loss, not the responders')."""
        roster = self.settings.roster
        addresses = set(self.tallies)
        if roster is not None:
            addresses.update(roster.addresses)
        responders = tuple(
            self._responder(a, self.tallies.get(a), now) for a in sorted(addresses, key=_sort_key)
        )
        s = self.settings
        return ProbeReport(
            group=s.group,
            port=s.port,
            probe_id=self.probe_id,
            sent=len(self.sent_at),
            ttl=s.ttl if s.hops is None else None,
            hops=s.hops,
            interval=s.interval,
            wait=s.wait,
            duration=max(now - self.started, 0.0),
            interrupted=interrupted,
            roster=roster,
            responders=responders,
            ignored=self.ignored,
            overflow=overflow,
        )


# Rendering -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def render_heard(heard: Heard) -> str:
    """A line per reply as it arrives, as ping prints them."""
    ttl = f" ttl={heard.ttl}" if heard.ttl is not None else ""
    mark = {
        ReplyKind.RECEIVED: "",
        ReplyKind.REORDERED: " (reordered)",
        ReplyKind.DUPLICATE: " (DUP!)",
        ReplyKind.LATE: " (late)",
    }[heard.kind]
    return f"{heard.address}: seq={heard.seq}{ttl} time={_ms(heard.rtt)} ms {heard.via}{mark}"


def _destination(report: ProbeReport) -> str:
    return format_address(report.group, report.port)


def _via(r: ResponderReport) -> str:
    if r.unicast and r.group:
        return "both"
    return "group" if r.group else "unicast" if r.unicast else "-"


def _ttl(r: ResponderReport) -> str:
    if r.ttl_min is None:
        return "-"
    return str(r.ttl_min) if r.ttl_min == r.ttl_max else f"{r.ttl_min}-{r.ttl_max}"


def render_text(report: ProbeReport, max_loss: float) -> str:
    """The summary: a table with one row per responder, then the verdict lines."""
    lines = [f"--- {_destination(report)} mcastd probe statistics ---"]
    how = f"ttl {report.ttl}" if report.hops is None else f"ttl 1-{report.hops}"
    answered = sum(1 for r in report.responders if r.received)
    lines.append(
        f"{report.sent} probe{'' if report.sent == 1 else 's'} sent ({how}), {answered} "
        f"responder{'' if answered == 1 else 's'} answered, {report.duration:.1f} s"
        + (", interrupted" if report.interrupted else "")
    )
    header = ["responder", "sent", "recv", "loss", "dup", "late", "reord"]
    header += ["rtt min/avg/max/mdev ms", "ttl", "via"]
    if report.hops is not None:
        header.append("hops")
    rows = [header]
    for r in report.responders:
        rtt = "/".join(_ms(v) for v in r.rtt[:4]) if r.rtt is not None else "-"
        label = r.address if r.name is None else f"{r.address} ({r.name})"
        if report.roster is not None and not r.expected:
            label += " unexpected"
        elif r.expected and r.received == 0:
            label += " MISSING"
        row = [label, str(r.sent), str(r.received), f"{r.loss * 100:.1f}%"]
        row += [str(r.duplicates), str(r.late), str(r.reordered), rtt, _ttl(r), _via(r)]
        if report.hops is not None:
            row.append(str(r.hops) if r.hops is not None else "-")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if report.missing:
        lines.append(f"missing: {', '.join(_named(report, a) for a in report.missing)}")
    if report.unexpected:
        lines.append(f"unexpected: {', '.join(report.unexpected)}")
    if report.overflow:
        lines.append(
            f"warning: {report.overflow} replies dropped here (receive buffer full): "
            "the loss shown is partly this host's"
        )
    if not any(r.received or r.late for r in report.responders):
        lines.append(hint(report))
    return "\n".join(lines)


def _named(report: ProbeReport, address: str) -> str:
    name = report.roster.name(address) if report.roster is not None else None
    return address if name is None else f"{address} ({name})"


def hint(report: ProbeReport) -> str:
    """What to try when nothing answered at all."""
    if report.hops is None and report.ttl is not None and report.ttl <= 1:
        return (
            "no replies: responders behind routers need --ttl N (or --hops), "
            "responders with reply: group need --join"
        )
    return "no replies: is a responder running, and do routers forward the group?"


def to_document(report: ProbeReport, max_loss: float) -> dict[str, object]:
    """The `--json` document (docs/probe.md, schema version SCHEMA_VERSION)."""
    return {
        "schema": SCHEMA_VERSION,
        "group": report.group,
        "port": report.port,
        "probe_id": report.probe_id,
        "sent": report.sent,
        "ttl": report.ttl,
        "hops": report.hops,
        "interval": report.interval,
        "wait": report.wait,
        "duration": round(report.duration, 3),
        "interrupted": report.interrupted,
        "max_loss": max_loss,
        "success": report.success(max_loss),
        "expected": list(report.expected),
        "missing": list(report.missing),
        "unexpected": list(report.unexpected),
        "ignored": report.ignored,
        "overflow": report.overflow,
        "responders": [_responder_document(r, max_loss) for r in report.responders],
    }


def _responder_document(r: ResponderReport, max_loss: float) -> dict[str, object]:
    return {
        "address": r.address,
        "name": r.name,
        "expected": r.expected,
        "ok": r.ok(max_loss),
        "sent": r.sent,
        "received": r.received,
        "loss": r.loss,
        "duplicates": r.duplicates,
        "late": r.late,
        "reordered": r.reordered,
        "via": {"unicast": r.unicast, "group": r.group},
        "rtt": {k: round(v, 7) for k, v in r.rtt._asdict().items()} if r.rtt is not None else None,
        "ttl": {"min": r.ttl_min, "max": r.ttl_max} if r.ttl_min is not None else None,
        "hops": r.hops,
    }


def render_json(report: ProbeReport, max_loss: float) -> str:
    return json.dumps(to_document(report, max_loss), indent=2)
