"""The event loop: read datagrams, let `protocol.decide` choose, carry out its actions.

One thread, one epoll selector over finished sockets from `net`, a self-pipe for signals.
SIGTERM, SIGINT and an accepted STOP datagram set the one stop reason; one `finally` sends
STOPPING=1, leaves the groups and closes the sockets. SIGHUP asks for a reload, done between
batches: unchanged sockets stay open, so their datagrams wait in the kernel buffer meanwhile.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import NamedTuple

from mcastd import net
from mcastd.config import Config, Endpoint
from mcastd.errors import ConfigError, SocketSetupError
from mcastd.journal import DAEMON_LOGGER, LineBudget, group_logger
from mcastd.notify import Notifier
from mcastd.protocol import RECEIVE_BUFFER, Drop, Heard, Reply, Stop, decide

# Datagrams read from one socket before looking at signals, timers and other sockets again:
# large enough to amortise the selector call, small enough to stop within a millisecond.
BATCH = 64
# Longest text quoted in a per-datagram log line; the rest is summarised by its length.
LOGGED_TEXT = 200
LINES_PER_SECOND = 20
STATUS_INTERVAL = 1.0

SEND_FAILED = "send_failed"


@dataclass
class Counters:
    """What happened on one (group, port); received == answered + listened + sum(dropped)."""

    received: int = 0
    answered: int = 0
    listened: int = 0  # heard and logged, with `reply: none`
    dropped: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    suppressed_lines: int = 0
    last_source: tuple[str, int] | None = None
    last_heard: float | None = None

    def summary(self) -> str:
        drops = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()))
        return (
            f"{self.received} received, {self.answered} answered, "
            f"{sum(self.dropped.values())} dropped" + (f" ({drops})" if drops else "")
        )


class Channel:
    """One served (group, port): its socket, settings, logger, line budget and counters."""

    __slots__ = ("budget", "counters", "endpoint", "listener", "log_heard", "logger", "name")

    def __init__(self, endpoint: Endpoint, listener: net.Listener) -> None:
        self.endpoint = endpoint
        self.listener = listener
        self.name = str(endpoint)
        self.logger = group_logger(endpoint.group)
        self.budget = LineBudget(LINES_PER_SECOND)
        self.counters = Counters()
        self.log_heard = False
        self.configure(endpoint)

    def configure(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.log_heard = endpoint.log_datagrams and self.logger.isEnabledFor(logging.INFO)

    def fields(self, source: tuple[str, int] | None = None) -> dict[str, object]:
        """Journal fields for a line about this channel (and a datagram's sender)."""
        extra: dict[str, object] = {
            "MCAST_GROUP": self.endpoint.group,
            "MCAST_PORT": self.endpoint.port,
        }
        if source is not None:
            extra["MCAST_SOURCE"] = format_source(source)
        return extra


def format_source(source: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = source[0], source[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def quote(text: str) -> str:
    if len(text) <= LOGGED_TEXT:
        return repr(text)
    return f"{text[:LOGGED_TEXT]!r}... ({len(text)} characters)"


ConfigLoader = Callable[[], Config]


class Server:
    """Serves every endpoint of a config until stopped; `run` returns why it stopped."""

    def __init__(
        self,
        config: Config,
        notifier: Notifier,
        reload_config: ConfigLoader | None = None,
        watchdog_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.reload_config = reload_config
        self.watchdog_interval = watchdog_interval
        self.clock = clock
        self.log = logging.getLogger(DAEMON_LOGGER)
        self.channels: dict[tuple[str, int], Channel] = {}
        self.stop_reason: str | None = None
        self.reload_requested = False
        self.buffer_size = RECEIVE_BUFFER
        self.last_status = ""

    # -- start and stop ---------------------------------------------------------------------

    def open(self) -> None:
        """Bind and join every endpoint, or none (raises SocketSetupError)."""
        listeners = net.open_all(self.config.endpoints())
        endpoints = {e.key: e for e in self.config.endpoints()}
        for key, listener in listeners.items():
            channel = Channel(endpoints[key], listener)
            self.channels[key] = channel
            self.log_joined(channel)

    def log_joined(self, channel: Channel) -> None:
        e = channel.endpoint
        channel.logger.info(
            "%s joined on %s (reply %s, ttl %d)",
            channel.name,
            e.interface or "the kernel's choice of interface",
            e.reply,
            e.ttl,
            extra=channel.fields(),
        )

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def run(self) -> str:
        """Serve until STOP, SIGTERM or SIGINT; the sockets must be open (see `open`)."""
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        previous = self._install_signals(wake_write)
        # Made here, not earlier: --detach closes every descriptor that is not a socket of ours.
        selector = selectors.DefaultSelector()
        try:
            selector.register(wake_read, selectors.EVENT_READ, None)
            for channel in self.channels.values():
                selector.register(channel.listener.sock, selectors.EVENT_READ, channel)
            self.last_status = self.status_line()
            self.notifier.ready(self.last_status)
            self.log.info("ready: %s", self.last_status)
            self._loop(selector, wake_read)
        finally:
            reason = self.stop_reason or "error"
            self.notifier.stopping(f"stopping: {reason}")
            self.log.info("stopping: %s", reason)
            for channel in self.channels.values():
                channel.logger.info(
                    "%s left: %s", channel.name, channel.counters.summary(), extra=channel.fields()
                )
                net.close_listener(channel.listener)
            self.channels.clear()
            selector.close()
            restore_signals(previous)
            os.close(wake_read)
            os.close(wake_write)
        return reason

    def _install_signals(self, wake_write: int) -> SavedSignals:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            self.reload_requested = True

        wakeup = signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        handlers = {signum: signal.signal(signum, on_stop) for signum in STOP_SIGNALS}
        handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
        return SavedSignals(wakeup, handlers)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self, selector: selectors.BaseSelector, wake_read: int) -> None:
        select = selector.select
        clock = self.clock
        now = clock()
        next_watchdog = now
        next_status = now + STATUS_INTERVAL
        while self.stop_reason is None:
            if self.watchdog_interval is not None and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + self.watchdog_interval
            timeout = next_status - now
            if self.watchdog_interval is not None:
                timeout = min(timeout, next_watchdog - now)
            for key, _ in select(max(timeout, 0.0)):
                channel = key.data
                if channel is None:
                    _drain(wake_read)
                else:
                    self.serve(channel, now)
                if self.stop_reason is not None:
                    return
            now = clock()
            if self.reload_requested:
                self.reload_requested = False
                self.reload(selector)
            if now >= next_status:
                self.tick(now)
                next_status = now + STATUS_INTERVAL

    def serve(self, channel: Channel, now: float) -> None:
        """Handle up to BATCH datagrams waiting on one socket."""
        sock = channel.listener.sock
        recvfrom = sock.recvfrom
        counters = channel.counters
        endpoint = channel.endpoint
        group, port, reply = endpoint.group, endpoint.port, endpoint.reply
        size = self.buffer_size
        for _ in range(BATCH):
            try:
                payload, source = recvfrom(size)
            except BlockingIOError:
                return
            except OSError as e:
                # A pending ICMP error or similar: reported once, the socket stays in service.
                counters.dropped["receive_error"] += 1
                channel.logger.warning("%s: receive failed: %s", channel.name, e.strerror)
                return
            counters.received += 1
            counters.bytes_in += len(payload)
            counters.last_source = source
            counters.last_heard = now
            for action in decide(payload, source, group, port, reply, now):
                kind = type(action)
                if kind is Reply:
                    self._send(channel, action)  # type: ignore[arg-type]
                elif kind is Heard:
                    if reply == "none":
                        counters.listened += 1
                    if channel.log_heard and channel.budget.take(now):
                        channel.logger.info(
                            "%s heard %s from %s",
                            channel.name,
                            quote(action.text),  # type: ignore[union-attr]
                            format_source(source),
                            extra=channel.fields(source),
                        )
                elif kind is Drop:
                    counters.dropped[action.reason.value] += 1  # type: ignore[union-attr]
                elif kind is Stop:
                    self.request_stop(f"STOP from {format_source(source)} on {channel.name}")
                    return

    def _send(self, channel: Channel, reply: Reply) -> None:
        counters = channel.counters
        try:
            channel.listener.sock.sendto(reply.data, reply.destination)
        except OSError as e:
            # Full send buffer, unreachable sender, firewall: this reply is lost, not the daemon.
            counters.dropped[SEND_FAILED] += 1
            if channel.budget.take(self.clock()):
                channel.logger.warning(
                    "%s: reply to %s failed: %s",
                    channel.name,
                    format_source(reply.destination),
                    e.strerror or e,
                    extra=channel.fields(reply.destination),
                )
            return
        counters.answered += 1
        counters.bytes_out += len(reply.data)

    def tick(self, now: float) -> None:
        """Once a second: summarise suppressed log lines, refresh STATUS= if it changed."""
        for channel in self.channels.values():
            held_back = channel.budget.take_suppressed(now)
            if held_back:
                channel.counters.suppressed_lines += held_back
                channel.logger.info(
                    "%s: %d more datagram lines suppressed",
                    channel.name,
                    held_back,
                    extra=channel.fields(),
                )
        status = self.status_line()
        if status != self.last_status:
            self.last_status = status
            self.notifier.status(status)

    def status_line(self) -> str:
        received = answered = dropped = 0
        for channel in self.channels.values():
            c = channel.counters
            received += c.received
            answered += c.answered
            dropped += sum(c.dropped.values())
        n = len(self.channels)
        return (
            f"{n} group{'s' if n != 1 else ''}, {received} heard, "
            f"{answered} answered, {dropped} dropped"
        )

    # -- reload -----------------------------------------------------------------------------

    def reload(self, selector: selectors.BaseSelector) -> None:
        """Re-read the config; apply it if valid, keeping every unchanged socket open."""
        if self.reload_config is None:
            self.log.info("SIGHUP ignored: no configuration to reload")
            return
        self.notifier.reloading()
        try:
            new = self.reload_config()
        except ConfigError as e:
            for problem in e.problems:
                self.log.error("reload failed: %s", problem)
            self.log.error("reload failed: still serving the previous configuration")
            self.notifier.ready(f"reload failed; {self.status_line()}")
            return
        wanted = {e.key: e for e in new.endpoints()}
        for key in [k for k in self.channels if k not in wanted]:
            channel = self.channels.pop(key)
            selector.unregister(channel.listener.sock)
            net.close_listener(channel.listener)
            channel.logger.info(
                "%s left: %s", channel.name, channel.counters.summary(), extra=channel.fields()
            )
        failures = 0
        for key, endpoint in wanted.items():
            try:
                self._apply(selector, key, endpoint)
            except SocketSetupError as e:
                failures += 1
                self.log.error("reload: %s", e)
        self.config = new
        outcome = f"with {failures} error(s)" if failures else "ok"
        self.log.info("reloaded %s: %s", new.source, outcome)
        self.last_status = self.status_line()
        self.notifier.ready(self.last_status)

    def _apply(
        self, selector: selectors.BaseSelector, key: tuple[str, int], endpoint: Endpoint
    ) -> None:
        channel = self.channels.get(key)
        if channel is None:
            listener = net.open_listener(endpoint)
            channel = Channel(endpoint, listener)
            self.channels[key] = channel
            selector.register(listener.sock, selectors.EVENT_READ, channel)
            self.log_joined(channel)
            return
        old = channel.endpoint
        if old == endpoint:
            return
        if old.interface != endpoint.interface:
            channel.listener = net.change_interface(channel.listener, endpoint)
        if old.ttl != endpoint.ttl:
            net.apply_ttl(channel.listener.sock, endpoint)
        channel.configure(endpoint)
        channel.logger.info(
            "%s now: interface %s, reply %s, ttl %d",
            channel.name,
            endpoint.interface or "the kernel's choice",
            endpoint.reply,
            endpoint.ttl,
            extra=channel.fields(),
        )


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class SavedSignals(NamedTuple):
    """What `run` replaced, to put back when it returns."""

    wakeup_fd: int
    handlers: dict[signal.Signals, Handler]


def restore_signals(saved: SavedSignals) -> None:
    signal.set_wakeup_fd(saved.wakeup_fd)
    for signum, handler in saved.handlers.items():
        signal.signal(signum, handler)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
