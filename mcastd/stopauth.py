"""Authenticated STOP: `STOP v1 <unix time> <nonce> <HMAC-SHA256>`, pure.

The MAC covers the group and port the datagram is meant for, the time (to the millisecond)
and a random nonce, so a STOP captured on one group cannot stop another, an old one is
refused after the replay window, and a repeated one is refused within it. A STOP signed
before the daemon started is refused too: it was meant for an earlier run, and replaying it
to the next one (after a restart, within the window) must not work.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum

STOP_WORD = "STOP"
PREFIX = f"{STOP_WORD} v1 "
NONCE_HEX = 32
MAC_HEX = 64


class StopRefusal(StrEnum):
    """Why a STOP datagram did not stop the daemon (also its counter name)."""

    DISABLED = "disabled"
    NOT_ALLOWED = "not_allowed"
    UNAUTHENTICATED = "unauthenticated"
    MALFORMED = "malformed"
    BAD_MAC = "bad_mac"
    STALE = "stale"
    REPLAYED = "replayed"


def _mac(key: bytes, group: str, port: int, timestamp: str, nonce: str) -> str:
    message = f"mcastd-stop v1\n{group}\n{port}\n{timestamp}\n{nonce}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(key: bytes, group: str, port: int, timestamp: float, nonce: str | None = None) -> str:
    """The text of an authenticated STOP for (group, port) at `timestamp` (unix seconds)."""
    nonce = secrets.token_hex(NONCE_HEX // 2) if nonce is None else nonce
    stamp = f"{timestamp:.3f}"
    return f"{PREFIX}{stamp} {nonce} {_mac(key, group, port, stamp, nonce)}"


def stop_request(key: bytes | None, group: str, port: int, wall: float) -> str:
    """The STOP datagram's text for (group, port): signed at `wall` when there is a key."""
    return STOP_WORD if key is None else sign(key, group, port, wall)


def looks_signed(text: str) -> bool:
    return text.strip().startswith(PREFIX)


class ReplayGuard:
    """Verifies signed STOPs and remembers the nonces of valid ones for the replay window."""

    __slots__ = ("key", "not_before", "seen", "window")

    def __init__(self, key: bytes, window: float, not_before: float = 0.0) -> None:
        self.key = key
        self.window = window
        self.not_before = not_before
        self.seen: dict[str, float] = {}

    def check(self, text: str, group: str, port: int, wall: float) -> StopRefusal | None:
        """None if `text` is a valid, fresh, first-seen STOP for (group, port) at `wall`."""
        fields = text.strip().split(" ")
        if len(fields) != 5 or fields[:2] != [STOP_WORD, "v1"]:
            return StopRefusal.MALFORMED
        stamp, nonce, mac = fields[2:]
        seconds, _, millis = stamp.partition(".")
        if not (seconds.isdigit() and len(seconds) <= 12 and (millis.isdigit() or not millis)):
            return StopRefusal.MALFORMED
        if not (_is_hex(nonce, NONCE_HEX) and _is_hex(mac, MAC_HEX)):
            return StopRefusal.MALFORMED
        if not hmac.compare_digest(_mac(self.key, group, port, stamp, nonce), mac):
            return StopRefusal.BAD_MAC
        timestamp = float(stamp)
        if abs(wall - timestamp) > self.window:
            return StopRefusal.STALE
        if timestamp < self.not_before:
            return StopRefusal.REPLAYED  # signed before this run began: meant for an earlier one
        self.seen = {n: t for n, t in self.seen.items() if wall - t <= 2 * self.window}
        if nonce in self.seen:
            return StopRefusal.REPLAYED
        self.seen[nonce] = wall
        return None


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdef" for c in text)
