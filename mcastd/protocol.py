"""The HEAR protocol, pure: one datagram in, a tuple of actions out. No socket, clock or logger.

Wire-compatible with the HEAR server of upstream `multicast` 2.1.1: the reply to a UTF-8
datagram is `HEAR [ {TEXT.upper()} SAID ('{ip}', {port}) ] from {group}`, the payload is
neither stripped nor normalised, and an empty datagram is answered. Unlike upstream, only a
datagram whose whole text (stripped) is `STOP` stops the server: `NONSTOP` or `BUS STOP` do not.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from mcastd.config import ReplyMode

# The largest UDP payload: 65,535 minus the UDP header (8) and, for IPv4, the IP header (20).
# IPv6's 40-byte header is not counted in its payload length.
MAX_PAYLOAD_IPV4 = 65_507
MAX_PAYLOAD_IPV6 = 65_527
# Read buffer: any datagram the kernel can deliver fits, so none is ever truncated.
RECEIVE_BUFFER = 65_536

STOP_WORD = "STOP"
# Every reply starts with this; in `reply: group` mode a datagram that does is another
# responder's reply (or our own, looped back) and answering it would never end.
REPLY_PREFIX = b"HEAR [ "


class DropReason(StrEnum):
    """Why a datagram got no answer. The values appear in logs and counters."""

    NOT_UTF8 = "not_utf8"
    REPLY_TOO_LARGE = "reply_too_large"
    ECHO = "echo"


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


Action = Heard | Reply | Stop | Drop


def is_stop(text: str) -> bool:
    """True when the text, stripped of surrounding white space, is exactly STOP."""
    return text.strip() == STOP_WORD


def reply_text(text: str, source: tuple[str, int], group: str) -> str:
    """Upstream's reply, to the byte: the source is shown as a Python (ip, port) tuple."""
    return f"HEAR [ {text.upper()} SAID ('{source[0]}', {source[1]}) ] from {group}"


def decide(
    payload: bytes,
    source: tuple[str, int],
    group: str,
    port: int,
    reply: ReplyMode,
    now: float,
) -> tuple[Action, ...]:
    """What to do with one datagram heard on (group, port) from `source` at time `now`.

    `source` is the sender as the socket reports it; only its address and port are used.
    `now` (monotonic seconds) is where time-based rules such as rate limits hook in.
    """
    del now  # no rule of the HEAR protocol depends on time yet
    if reply == "group" and payload.startswith(REPLY_PREFIX):
        return (Drop(DropReason.ECHO),)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return (Drop(DropReason.NOT_UTF8),)
    heard = Heard(text)
    stop = is_stop(text)
    if reply == "none":
        return (heard, Stop(source)) if stop else (heard,)
    data = reply_text(text, source, group).encode("utf-8")
    limit = MAX_PAYLOAD_IPV6 if ":" in group else MAX_PAYLOAD_IPV4
    if len(data) > limit:
        # Upper-casing can make text longer (e.g. U+0149 becomes two letters); a reply that
        # no UDP datagram can carry is not sent.
        answer: Action = Drop(DropReason.REPLY_TOO_LARGE)
    else:
        destination = (group, port) if reply == "group" else (source[0], source[1])
        answer = Reply(data, destination)
    return (heard, answer, Stop(source)) if stop else (heard, answer)
