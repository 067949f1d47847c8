"""One served endpoint: its joined socket, its rules, counters and log-line budget.

`serve_batch` is the daemon's hot path: it reads up to BATCH datagrams, lets the rules
decide each one, and carries the actions out in one dispatch, counting as it goes.
"""

from __future__ import annotations

import logging

from mcastd.addresses import format_address
from mcastd.config import Endpoint
from mcastd.journal import LineBudget, group_logger
from mcastd.links import LinkState
from mcastd.messages import MessageId, endpoint_fields
from mcastd.net import GroupSocket, close_group_socket
from mcastd.protocol import (
    ECHOED,
    RECEIVE_BUFFER,
    Action,
    Drop,
    Heard,
    Refused,
    Reply,
    Rules,
    Stop,
    TokenBucket,
)
from mcastd.snapshot import RECEIVE_ERROR, SEND_FAILED, Counters

# Datagrams read from one socket before looking at signals, timers and other sockets again:
# large enough to amortise the selector call, small enough to stop within a millisecond.
BATCH = 64
# Longest text quoted in a per-datagram log line; the rest is summarised by its length.
LOGGED_TEXT = 200
LINES_PER_SECOND = 20

Source = tuple[str, int]


def quote(text: str) -> str:
    if len(text) <= LOGGED_TEXT:
        return repr(text)
    return f"{text[:LOGGED_TEXT]!r}... ({len(text)} characters)"


def outcome(actions: tuple[Action, ...], failure: OSError | None = None) -> str:
    """What became of one datagram, for its log line: `answered`, `dropped (rate_limited)` ...

    `failure` is the error of a reply that could not be sent.
    """
    said = []
    for action in actions:
        if type(action) is Reply:
            if failure is None:
                said.append("answered")
            else:
                said.append(f"reply failed: {failure.strerror or failure}")
        elif type(action) is Drop:
            said.append(f"dropped ({action.reason.value})")
        elif type(action) is Refused:
            said.append(f"STOP refused ({action.reason.value})")
        elif type(action) is Stop:
            said.append("STOP accepted")
    return ", ".join(said) or "not answered (reply: none)"


class Channel:
    """One served endpoint; the server owns it, `serve_batch` runs when its socket is ready."""

    __slots__ = (
        "budget",
        "counters",
        "endpoint",
        "group_socket",
        "link",
        "listen_only",
        "log_datagrams",
        "logger",
        "name",
        "rules",
        "started",
        "stop_key",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        group_socket: GroupSocket,
        stop_key: bytes | None,
        total: TokenBucket | None,
        started: float,
    ) -> None:
        """`started`: unix time the daemon started (STOPs signed before it are refused)."""
        self.group_socket = group_socket
        self.started = started
        self.name = str(endpoint)
        self.logger = group_logger(endpoint.group)
        self.budget = LineBudget(LINES_PER_SECOND)
        self.counters = Counters()
        # The configured interface as last seen by the poll (None: the kernel's choice).
        self.link: LinkState | None = None
        self.configure(endpoint, stop_key, total)

    def configure(
        self, endpoint: Endpoint, stop_key: bytes | None, total: TokenBucket | None
    ) -> None:
        """Apply settings; the protocol state (rate limits, replay memory) starts afresh."""
        self.endpoint = endpoint
        self.stop_key = stop_key
        self.rules = Rules(endpoint, stop_key, total, self.started)
        self.log_datagrams = endpoint.log_datagrams and self.logger.isEnabledFor(logging.INFO)
        self.listen_only = endpoint.reply == "none"

    def fields(
        self, source: Source | None = None, message_id: MessageId | None = None
    ) -> dict[str, object]:
        """Journal fields for a line about this channel (and a datagram's sender)."""
        return endpoint_fields(self.endpoint.group, self.endpoint.port, source, message_id)

    # -- the hot path -----------------------------------------------------------------------

    def serve_batch(self, now: float, wall: float) -> str | None:
        """Handle up to BATCH waiting datagrams; the stop reason once one was an accepted STOP.

        `now` is monotonic seconds (rate limits, log budget), `wall` unix time (signed STOP).
        """
        sock = self.group_socket.sock
        recvfrom, sendto = sock.recvfrom, sock.sendto
        decide = self.rules.decide
        counters = self.counters
        log_datagrams, listen_only = self.log_datagrams, self.listen_only
        take_line = self.budget.take
        received = bytes_in = answered = bytes_out = 0
        source = None
        stop = None
        try:
            for _ in range(BATCH):
                try:
                    payload, source = recvfrom(RECEIVE_BUFFER)
                except BlockingIOError:
                    return None
                except OSError as e:
                    # A pending ICMP error or similar: counted, the socket stays in service.
                    counters.dropped[RECEIVE_ERROR] += 1
                    self.logger.warning("%s: receive failed: %s", self.name, e.strerror)
                    return None
                received += 1
                bytes_in += len(payload)
                actions = decide(payload, source, now, wall)
                failure = None
                # The one dispatch of actions: every kind is carried out and counted here.
                for action in actions:
                    if type(action) is Heard:
                        if listen_only:
                            counters.listened += 1
                    elif type(action) is Reply:
                        data, destination = action
                        try:
                            sendto(data, destination)
                        except OSError as e:
                            # Full send buffer, unreachable sender, firewall: this reply is
                            # lost, not the daemon. Said in the datagram's line, or alone.
                            failure = e
                            counters.dropped[SEND_FAILED] += 1
                            if not log_datagrams and take_line(now):
                                self.log_send_failed(destination, e)
                        else:
                            answered += 1
                            bytes_out += len(data)
                    elif type(action) is Drop:
                        counters.dropped[action.reason.value] += 1
                    elif type(action) is Refused:
                        self.refused(action, source)
                    elif type(action) is Stop:
                        stop = self.stop_accepted(source)
                if log_datagrams and actions is not ECHOED and take_line(now):
                    self.log_datagram(actions, source, len(payload), failure)
                if stop is not None:
                    return stop
            return None
        finally:
            # Counted per batch, not per datagram: this is the daemon's hot path.
            if received:
                counters.received += received
                counters.bytes_in += bytes_in
                counters.answered += answered
                counters.bytes_out += bytes_out
                counters.last_source = source
                counters.last_heard = now

    # -- what the hot path logs -------------------------------------------------------------

    def log_datagram(
        self,
        actions: tuple[Action, ...],
        source: Source,
        size: int,
        failure: OSError | None,
    ) -> None:
        """The line about one datagram (the budget allowed it): what it said, what became of it.

        Not for an echo (a reply: ours, looped back, or another responder's), which is no request.
        """
        first = actions[0]
        level = logging.INFO if failure is None else logging.WARNING
        what = quote(first.text) if type(first) is Heard else f"{size} bytes"
        self.logger.log(
            level,
            "%s heard %s from %s: %s",
            self.name,
            what,
            format_address(source[0], source[1]),
            outcome(actions, failure),
            extra=self.fields(source),
        )

    def log_send_failed(self, destination: Source, error: OSError) -> None:
        """Without per-datagram lines, a failed reply still gets one (the budget allowed it)."""
        self.logger.warning(
            "%s: reply to %s failed: %s",
            self.name,
            format_address(destination[0], destination[1]),
            error.strerror or error,
            extra=self.fields(destination),
        )

    def refused(self, refused: Refused, source: Source) -> None:
        self.counters.stop_refused[refused.reason.value] += 1
        if refused.log:  # at most once a minute per source (the rules decide)
            self.logger.warning(
                "%s: STOP from %s refused: %s",
                self.name,
                format_address(source[0], source[1]),
                refused.reason.value,
                extra=self.fields(source, MessageId.STOP_REFUSED),
            )

    def stop_accepted(self, source: Source) -> str:
        sender = format_address(source[0], source[1])
        self.logger.warning(
            "%s: STOP from %s accepted",
            self.name,
            sender,
            extra=self.fields(source, MessageId.STOP_ACCEPTED),
        )
        return f"STOP from {sender} on {self.name}"

    def flush_suppressed(self, now: float) -> None:
        """Say how many datagram lines the budget held back, once their second is over."""
        held_back = self.budget.take_suppressed(now)
        if held_back:
            self.counters.suppressed_lines += held_back
            self.logger.info(
                "%s: %d more datagram lines suppressed", self.name, held_back, extra=self.fields()
            )

    def prune(self, now: float, wall: float) -> None:
        """Once a second: log suppressed lines, let the rules forget what no longer matters."""
        self.flush_suppressed(now)
        self.rules.prune(now, wall)

    # -- joining and leaving ----------------------------------------------------------------

    def log_joined(self) -> None:
        e = self.endpoint
        self.logger.info(
            "%s joined on %s (reply %s, ttl %d)",
            self.name,
            e.interface or "the kernel's choice of interface",
            e.reply,
            e.ttl,
            extra=self.fields(message_id=MessageId.GROUP_JOINED),
        )

    def close(self) -> None:
        """Leave the group, close the socket and log the final counts."""
        self.flush_suppressed(float("inf"))
        close_group_socket(self.group_socket)
        self.logger.info(
            "%s left: %s",
            self.name,
            self.counters.summary(),
            extra=self.fields(message_id=MessageId.GROUP_LEFT),
        )
