"""The HEAR protocol, pure: one datagram in, a tuple of actions out. No socket, clock or logger.

Wire-compatible with the HEAR server of upstream `multicast` 2.1.1: the reply to a UTF-8
datagram is `HEAR [ {TEXT.upper()} SAID ('{ip}', {port}) ] from {group}`, the payload is
neither stripped nor normalised, and an empty datagram is answered. Unlike upstream, only a
datagram whose whole text (stripped) is `STOP` stops the server: `NONSTOP` or `BUS STOP` do not.

`decide` is the stateless core. `Rules` adds the defences of one endpoint, each with
the state it needs and the time passed in: who may send, who may STOP (and authenticated
STOP), per-source and global reply rates.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from mcastd.addresses import as_address, is_ipv6
from mcastd.config import Endpoint, Network, ReplyMode
from mcastd.stopauth import STOP_WORD, ReplayGuard, StopRefusal, looks_signed

# The largest UDP payload: 65,535 minus the UDP header (8) and, for IPv4, the IP header (20).
# IPv6's 40-byte header is not counted in its payload length.
MAX_PAYLOAD_IPV4 = 65_507
MAX_PAYLOAD_IPV6 = 65_527
# Read buffer: any datagram the kernel can deliver fits, so none is ever truncated.
RECEIVE_BUFFER = 65_536

# Every reply starts with this; in `reply: group` mode a datagram that does is another
# responder's reply (or our own, looped back) and answering it would never end.
REPLY_PREFIX = b"HEAR [ "
# A refused STOP is logged at most once a minute per source address.
REFUSAL_LOG_SECONDS = 60.0
# Memory bounds against floods from many (spoofed) sources.
MAX_TRACKED_SOURCES = 65_536


class DropReason(StrEnum):
    """Why a datagram got no answer. The values appear in logs and counters."""

    NOT_UTF8 = "not_utf8"
    REPLY_TOO_LARGE = "reply_too_large"
    AMPLIFYING = "amplifying"
    ECHO = "echo"
    NOT_ALLOWED = "not_allowed"
    RATE_LIMITED = "rate_limited"
    STOP_REFUSED = "stop_refused"


class Heard(NamedTuple):
    """A datagram that decoded as text (the loop logs it)."""

    text: str


class Reply(NamedTuple):
    """Send `data` to `destination` from the listening socket."""

    data: bytes
    destination: tuple[str, int]


class Stop(NamedTuple):
    """Stop the daemon, after the actions before this one."""

    source: tuple[str, int]


class Drop(NamedTuple):
    """No answer; count it under `reason`."""

    reason: DropReason


class Refused(NamedTuple):
    """A STOP that does not stop; count it, and log it when `log` is set."""

    reason: StopRefusal
    log: bool


Action = Heard | Reply | Stop | Drop | Refused

# A datagram that is a reply itself: one constant tuple, so that the loop can tell it from a
# request by identity (it is neither answered nor logged).
ECHOED: tuple[Action, ...] = (Drop(DropReason.ECHO),)


def is_stop(text: str) -> bool:
    """True when the text, stripped of surrounding white space, is exactly STOP."""
    return text.strip() == STOP_WORD


def decide(
    payload: bytes,
    source: tuple[str, int],
    group: str,
    port: int,
    reply: ReplyMode,
    now: float,
) -> tuple[Action, ...]:
    """What HEAR does with one datagram heard on (group, port) from `source`, no defences.

    `source` is the sender as the socket reports it; only its address and port are used.
    `now` (monotonic seconds) is unused by the bare protocol; Rules use it.
    """
    del now
    if reply == "group" and payload.startswith(REPLY_PREFIX):
        return ECHOED
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return (Drop(DropReason.NOT_UTF8),)
    heard = Heard(text)
    stop = STOP_WORD in text and is_stop(text)  # the substring test is the cheap one
    if reply == "none":
        return (heard, Stop(source)) if stop else (heard,)
    shout = text.upper().encode("utf-8")
    answer: Action
    if len(shout) > len(payload):
        # Upper-casing can make text longer (U+0149 becomes two letters, 3 bytes from 2): a
        # reply is never larger than the request plus the fixed HEAR text, so it cannot be
        # used to amplify traffic towards a forged source.
        answer = Drop(DropReason.AMPLIFYING)
    else:
        # upstream's reply to the byte (the source shown as a Python tuple), from the
        # upper-cased bytes already at hand
        data = b"".join(
            (b"HEAR [ ", shout, f" SAID ('{source[0]}', {source[1]}) ] from {group}".encode())
        )
        # (the family is looked at only for a reply too large for IPv4: not per datagram)
        if len(data) > MAX_PAYLOAD_IPV4 and len(data) > (
            MAX_PAYLOAD_IPV6 if is_ipv6(group) else MAX_PAYLOAD_IPV4
        ):
            answer = Drop(DropReason.REPLY_TOO_LARGE)  # no UDP datagram can carry it
        else:
            destination = (group, port) if reply == "group" else (source[0], source[1])
            answer = Reply(data, destination)
    return (heard, answer, Stop(source)) if stop else (heard, answer)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; pure (the caller passes `now`)."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def full(self, now: float) -> bool:
        return self.tokens + (now - self.stamp) * self.rate >= self.burst


class SourceLimiter:
    """One token bucket per source address, forgetting sources whose bucket is full again.

    Keyed by address, not port: a flood from one (possibly forged) host varies its ports.
    When more than MAX_TRACKED_SOURCES are being limited at once, newcomers share one bucket.
    """

    __slots__ = ("buckets", "burst", "overflow", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}
        self.overflow: TokenBucket | None = None

    def allow(self, address: str, now: float) -> bool:
        bucket = self.buckets.get(address)
        if bucket is None:
            # Full table: newcomers share one bucket until `prune` (once a second) makes room;
            # pruning here would cost a whole table scan per datagram of a spoofed flood.
            if len(self.buckets) >= MAX_TRACKED_SOURCES:
                if self.overflow is None:
                    self.overflow = TokenBucket(self.rate, self.burst, now)
                return self.overflow.take(now)
            bucket = self.buckets[address] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now)

    def prune(self, now: float) -> None:
        """Forget sources that could send a full burst again: they need no state."""
        self.buckets = {a: b for a, b in self.buckets.items() if not b.full(now)}


class AddressFilter:
    """Membership of source addresses in a list of networks, cached per address."""

    __slots__ = ("cache", "networks")

    def __init__(self, networks: tuple[Network, ...]) -> None:
        self.networks = networks
        self.cache: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        known = self.cache.get(address)
        if known is None:
            ip = as_address(address.split("%", 1)[0])
            if ip is None:
                known = False
            else:
                ip = getattr(ip, "ipv4_mapped", None) or ip
                known = any(ip in n for n in self.networks if n.version == ip.version)
            if len(self.cache) >= MAX_TRACKED_SOURCES:
                self.cache.clear()
            self.cache[address] = known
        return known


class Rules:
    """The protocol for one endpoint with its defences; `decide` for each datagram.

    (In the product a "responder" is a host that runs mcastd; these are the rules it applies.)
    """

    def __init__(
        self,
        endpoint: Endpoint,
        key: bytes | None = None,
        total: TokenBucket | None = None,
        started: float = 0.0,
    ) -> None:
        """`started`: unix time the daemon started; STOPs signed before it are refused."""
        s = endpoint.settings
        self.group = endpoint.group
        self.port = endpoint.port
        self.reply: ReplyMode = s.reply
        self.allowed = AddressFilter(s.allow_from) if s.allow_from is not None else None
        self.limiter = SourceLimiter(s.reply_rate, s.reply_burst) if s.reply_rate > 0 else None
        self.total = total
        self.stop = s.stop
        self.stop_allowed = (
            AddressFilter(s.stop.allow_from) if s.stop.allow_from is not None else None
        )
        self.guard = ReplayGuard(key, s.stop.replay_window, started) if key is not None else None
        self.judges_stop = (
            self.guard is not None or not s.stop.enabled or self.stop_allowed is not None
        )
        self.refusals_logged: dict[str, float] = {}
        self.limited = self.limiter is not None or total is not None
        self.undefended = not (self.limited or self.judges_stop or self.allowed is not None)

    def decide(
        self, payload: bytes, source: tuple[str, int], now: float, wall: float
    ) -> tuple[Action, ...]:
        """Actions for one datagram; `now` is monotonic seconds, `wall` unix time."""
        if self.undefended:
            return decide(payload, source, self.group, self.port, self.reply, now)
        address = source[0]
        if self.allowed is not None and address not in self.allowed:
            return (Drop(DropReason.NOT_ALLOWED),)
        actions = decide(payload, source, self.group, self.port, self.reply, now)
        heard = actions[0]
        if type(heard) is not Heard:
            return actions  # dropped before it was read as text
        text: str = heard.text
        if self.judges_stop and self._stop_requested(text):
            actions = self._judge_stop(actions, text, source, wall)
        if (
            self.limited
            and len(actions) > 1
            and type(actions[1]) is Reply
            and not self._may_reply(address, now)
        ):
            actions = (heard, Drop(DropReason.RATE_LIMITED), *actions[2:])
        return actions

    def _stop_requested(self, text: str) -> bool:
        return is_stop(text) or (self.guard is not None and looks_signed(text))

    def _judge_stop(
        self, actions: tuple[Action, ...], text: str, source: tuple[str, int], wall: float
    ) -> tuple[Action, ...]:
        reason: StopRefusal | None
        if not self.stop.enabled:
            reason = StopRefusal.DISABLED
        elif self.stop_allowed is not None and source[0] not in self.stop_allowed:
            reason = StopRefusal.NOT_ALLOWED
        elif self.guard is None:
            reason = None
        elif is_stop(text):
            reason = StopRefusal.UNAUTHENTICATED
        else:
            reason = self.guard.check(text, self.group, self.port, wall)
        heard = actions[0]
        answer = actions[1] if len(actions) > 1 and type(actions[1]) is not Stop else None
        if reason is None:
            return (heard, answer, Stop(source)) if answer is not None else (heard, Stop(source))
        refused = Refused(reason, self._log_refusal(source[0], wall))
        if answer is not None and not self.stop.answer_refused:
            answer = Drop(DropReason.STOP_REFUSED)
        return (heard, answer, refused) if answer is not None else (heard, refused)

    def _log_refusal(self, address: str, wall: float) -> bool:
        last = self.refusals_logged.get(address)
        if last is not None and wall - last < REFUSAL_LOG_SECONDS:
            return False
        if last is None and len(self.refusals_logged) >= MAX_TRACKED_SOURCES:
            return False  # a flood of refusals from many sources: counted, not each logged
        self.refusals_logged[address] = wall
        return True

    def _may_reply(self, address: str, now: float) -> bool:
        if self.limiter is not None and not self.limiter.allow(address, now):
            return False
        return self.total is None or self.total.take(now)

    def prune(self, now: float, wall: float) -> None:
        """Forget state that no longer matters (called about once a second)."""
        if self.limiter is not None:
            self.limiter.prune(now)
        if self.refusals_logged:
            self.refusals_logged = {
                a: t for a, t in self.refusals_logged.items() if wall - t < REFUSAL_LOG_SECONDS
            }
