"""The event loop: read datagrams, let `protocol.decide` choose, carry out its actions.

One thread, one epoll selector over finished sockets from `net`, a self-pipe for signals and
the read-only control socket. SIGTERM, SIGINT and an accepted STOP datagram set the one stop
reason; one `finally` sends STOPPING=1, leaves the groups and closes the sockets. SIGHUP asks
for a reload, done between batches: unchanged sockets stay open, so their datagrams wait in
the kernel buffer meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import NamedTuple

from mcastd import __version__, net
from mcastd.config import Config, Endpoint, format_address
from mcastd.control import ControlServer
from mcastd.errors import ConfigError, SocketSetupError
from mcastd.journal import DAEMON_LOGGER, LineBudget, group_logger
from mcastd.messages import MessageId, event
from mcastd.notify import Notifier
from mcastd.protocol import (
    RECEIVE_BUFFER,
    Action,
    Drop,
    DropReason,
    Heard,
    Refused,
    Reply,
    Responder,
    Stop,
    TokenBucket,
)
from mcastd.stopauth import StopRefusal

# Datagrams read from one socket before looking at signals, timers and other sockets again:
# large enough to amortise the selector call, small enough to stop within a millisecond.
BATCH = 64
# Longest text quoted in a per-datagram log line; the rest is summarised by its length.
LOGGED_TEXT = 200
LINES_PER_SECOND = 20
# STATUS= and suppressed-line summaries at most this often.
TICK_SECONDS = 1.0

SEND_FAILED = "send_failed"
RECEIVE_ERROR = "receive_error"
DROP_REASONS = (*(r.value for r in DropReason), SEND_FAILED, RECEIVE_ERROR)
STATUS_SCHEMA = 1


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
    stop_refused: Counter[str] = field(default_factory=Counter)
    last_source: tuple[str, int] | None = None
    last_heard: float | None = None

    def summary(self) -> str:
        drops = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()) if n)
        listened = f", {self.listened} listened" if self.listened else ""
        return (
            f"{self.received} received, {self.answered} answered{listened}, "
            f"{sum(self.dropped.values())} dropped" + (f" ({drops})" if drops else "")
        )


class Channel:
    """One served (group, port): its socket, settings, logger, line budget and counters."""

    __slots__ = (
        "budget",
        "counters",
        "endpoint",
        "key",
        "link",
        "listen_only",
        "listener",
        "log_heard",
        "logger",
        "name",
        "responder",
        "started",
    )

    def __init__(
        self,
        endpoint: Endpoint,
        listener: net.Listener,
        key: bytes | None,
        total: TokenBucket | None,
        started: float,
    ) -> None:
        self.listener = listener
        self.started = started
        self.name = str(endpoint)
        self.logger = group_logger(endpoint.group)
        self.budget = LineBudget(LINES_PER_SECOND)
        self.counters = Counters()
        # The configured interface as last seen by the poll (None: the kernel's choice).
        self.link: net.LinkState | None = None
        self.configure(endpoint, key, total)

    def configure(self, endpoint: Endpoint, key: bytes | None, total: TokenBucket | None) -> None:
        """Apply settings; the protocol state (rate limits, replay memory) starts afresh."""
        self.endpoint = endpoint
        self.key = key
        self.responder = Responder(endpoint, key, total, self.started)
        self.log_heard = endpoint.log_datagrams and self.logger.isEnabledFor(logging.INFO)
        self.listen_only = endpoint.reply == "none"

    def fields(
        self, source: tuple[str, int] | None = None, message_id: MessageId | None = None
    ) -> dict[str, object]:
        """Journal fields for a line about this channel (and a datagram's sender)."""
        extra: dict[str, object] = {
            "MCAST_GROUP": self.endpoint.group,
            "MCAST_PORT": self.endpoint.port,
        }
        if source is not None:
            extra["MCAST_SOURCE"] = format_source(source)
        if message_id is not None:
            extra |= event(message_id)
        return extra


def format_source(source: tuple[str, int] | tuple[str, int, int, int]) -> str:
    return format_address(source[0], source[1])


def must_wait(endpoint: Endpoint) -> bool:
    """`wait_for_interface` is set and the interface is not there (yet)."""
    return endpoint.settings.wait_for_interface and net.link_state(endpoint).ifindex == 0


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
        control_path: str | None = None,
        instance: str = "mcastd",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.reload_config = reload_config
        self.watchdog_interval = watchdog_interval
        self.control_path = control_path
        self.instance = instance
        self.clock = clock
        self.wall_clock = wall_clock
        self.log = logging.getLogger(DAEMON_LOGGER)
        self.channels: dict[tuple[str, int], Channel] = {}
        # Endpoints with `wait_for_interface` whose interface is not there yet.
        self.waiting: dict[tuple[str, int], Endpoint] = {}
        self.waiting_errors: dict[tuple[str, int], str] = {}
        self.control: ControlServer | None = None
        self.stop_reason: str | None = None
        self.reload_requested = False
        self.buffer_size = RECEIVE_BUFFER
        self.last_status = ""
        self.started = clock()
        self.started_wall = wall_clock()
        self.last_reload: dict[str, object] | None = None
        self.total = self._total_bucket(config)

    def _total_bucket(self, config: Config) -> TokenBucket | None:
        rate = config.reply_rate_total
        return TokenBucket(rate, max(rate, 1.0), self.clock()) if rate > 0 else None

    def _key(self, endpoint: Endpoint) -> bytes | None:
        name = endpoint.settings.stop.key_file
        return None if name is None else self.config.keys[name]

    # -- start and stop ---------------------------------------------------------------------

    def open(self) -> None:
        """Bind and join every endpoint, or none (raises SocketSetupError)."""
        endpoints = []
        for endpoint in self.config.endpoints():
            if must_wait(endpoint):
                self.wait_for(endpoint)
            else:
                endpoints.append(endpoint)
        net.check_descriptors(len(endpoints))
        listeners = net.open_all(endpoints)
        for endpoint in endpoints:
            self.add_channel(endpoint, listeners[endpoint.key])
        if self.control_path is not None:
            try:
                self.control = ControlServer(self.control_path, self.snapshot)
            except SocketSetupError as e:
                # Serving the groups matters more than being able to show their counters.
                self.log.warning("%s; `mcastd status` will not see this daemon", e)

    def sockets(self) -> list[socket.socket]:
        """Every socket the server has open (the groups' and the control socket)."""
        sockets = [c.listener.sock for c in self.channels.values()]
        if self.control is not None:
            sockets.append(self.control.sock)
        return sockets

    def add_channel(
        self,
        endpoint: Endpoint,
        listener: net.Listener,
        selector: selectors.BaseSelector | None = None,
    ) -> Channel:
        channel = Channel(endpoint, listener, self._key(endpoint), self.total, self.started_wall)
        if endpoint.interface is not None:
            channel.link = net.link_state(endpoint)
        self.channels[endpoint.key] = channel
        if selector is not None:
            selector.register(listener.sock, selectors.EVENT_READ, channel)
        self.log_joined(channel)
        return channel

    def wait_for(self, endpoint: Endpoint) -> None:
        self.waiting[endpoint.key] = endpoint
        self.log.warning(
            "%s: interface %s is not there: joining when it appears",
            endpoint,
            endpoint.interface,
            extra={"MCAST_GROUP": endpoint.group, "MCAST_PORT": endpoint.port},
        )

    def log_joined(self, channel: Channel) -> None:
        e = channel.endpoint
        channel.logger.info(
            "%s joined on %s (reply %s, ttl %d)",
            channel.name,
            e.interface or "the kernel's choice of interface",
            e.reply,
            e.ttl,
            extra=channel.fields(message_id=MessageId.GROUP_JOINED),
        )

    def close_channel(self, channel: Channel) -> None:
        self.flush_suppressed(channel, float("inf"))
        net.close_listener(channel.listener)
        channel.logger.info(
            "%s left: %s",
            channel.name,
            channel.counters.summary(),
            extra=channel.fields(message_id=MessageId.GROUP_LEFT),
        )

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def close(self) -> None:
        """Leave every group and close every socket (what `run` does when it stops)."""
        for channel in self.channels.values():
            self.close_channel(channel)
        self.channels.clear()
        if self.control is not None:
            self.control.close(None)

    def run(self) -> str:
        """Serve until STOP, SIGTERM or SIGINT; the sockets must be open (see `open`).

        Raises SocketSetupError (after closing everything) if the loop itself cannot be set
        up, which happens when the open-files limit was just enough for the groups.
        """
        # Made here, not in `open`: --detach closes every descriptor that is not a socket.
        try:
            wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self.close()
            raise net.setup_error("event loop", e) from e
        try:
            selector = selectors.DefaultSelector()
        except OSError as e:
            os.close(wake_read)
            os.close(wake_write)
            self.close()
            raise net.setup_error("event loop", e) from e
        previous = self._install_signals(wake_write)
        try:
            selector.register(wake_read, selectors.EVENT_READ, None)
            for channel in self.channels.values():
                selector.register(channel.listener.sock, selectors.EVENT_READ, channel)
            if self.control is not None:
                selector.register(self.control.sock, selectors.EVENT_READ, self.control)
            self.last_status = self.status_line()
            self.notifier.ready(self.last_status)
            self.log.info("ready: %s", self.last_status, extra=event(MessageId.READY))
            self._loop(selector, wake_read)
        finally:
            reason = self.stop_reason or "error"
            self.notifier.stopping(f"stopping: {reason}")
            self.log.info("stopping: %s", reason, extra=event(MessageId.SHUTDOWN))
            for channel in self.channels.values():
                selector.unregister(channel.listener.sock)
            self.close()
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
        next_tick = now + TICK_SECONDS
        while self.stop_reason is None:
            if self.watchdog_interval is not None and now >= next_watchdog:
                # Sent from the loop itself, so a loop that hangs is restarted by systemd.
                self.notifier.watchdog()
                next_watchdog = now + self.watchdog_interval
            timeout = next_tick - now
            if self.watchdog_interval is not None:
                timeout = min(timeout, next_watchdog - now)
            for key, events in select(max(timeout, 0.0)):
                data = key.data
                if data.__class__ is Channel:
                    self.serve(data, now)
                elif data is None:
                    _drain(wake_read)
                else:
                    data.handle(selector, events, now)
                if self.stop_reason is not None:
                    return
            now = clock()
            if self.reload_requested:
                self.reload_requested = False
                self.reload(selector)
            if now >= next_tick:
                self.tick(selector, now)
                next_tick = now + TICK_SECONDS

    def serve(self, channel: Channel, now: float) -> None:
        """Handle up to BATCH datagrams waiting on one socket."""
        sock = channel.listener.sock
        recvfrom, sendto = sock.recvfrom, sock.sendto
        counters = channel.counters
        decide = channel.responder.decide
        size = self.buffer_size
        wall = self.wall_clock()
        received = bytes_in = answered = bytes_out = 0
        source = None
        try:
            for _ in range(BATCH):
                try:
                    payload, source = recvfrom(size)
                except BlockingIOError:
                    return
                except OSError as e:
                    # A pending ICMP error or similar: counted, the socket stays in service.
                    counters.dropped[RECEIVE_ERROR] += 1
                    channel.logger.warning("%s: receive failed: %s", channel.name, e.strerror)
                    return
                received += 1
                bytes_in += len(payload)
                actions = decide(payload, source, now, wall)
                if len(actions) == 2 and actions[1].__class__ is Reply:
                    # The common case, (Heard, Reply), done here without further calls.
                    if channel.log_heard:
                        self.log_heard(channel, actions[0], source, now)  # type: ignore[arg-type]
                    data, destination = actions[1]
                    try:
                        sendto(data, destination)
                    except OSError as e:
                        self.send_failed(channel, destination, e, now)
                    else:
                        answered += 1
                        bytes_out += len(data)
                elif not self.carry_out(channel, actions, source, now):
                    return
        finally:
            # Counted per batch, not per datagram: the loop is the daemon's hot path.
            if received:
                counters.received += received
                counters.bytes_in += bytes_in
                counters.answered += answered
                counters.bytes_out += bytes_out
                counters.last_source = source
                counters.last_heard = now

    def log_heard(
        self, channel: Channel, heard: Heard, source: tuple[str, int], now: float
    ) -> None:
        if channel.budget.take(now):
            channel.logger.info(
                "%s heard %s from %s",
                channel.name,
                quote(heard.text),
                format_source(source),
                extra=channel.fields(source),
            )

    def carry_out(
        self, channel: Channel, actions: tuple[Action, ...], source: tuple[str, int], now: float
    ) -> bool:
        """Do what `decide` said for one datagram; False once the daemon is to stop."""
        counters = channel.counters
        for action in actions:
            kind = action.__class__
            if kind is Reply:
                self._send(channel, action, now)  # type: ignore[arg-type]
            elif kind is Heard:
                if channel.listen_only:
                    counters.listened += 1
                if channel.log_heard:
                    self.log_heard(channel, action, source, now)  # type: ignore[arg-type]
            elif kind is Drop:
                counters.dropped[action.reason.value] += 1  # type: ignore[union-attr]
            elif kind is Refused:
                self._refused(channel, action, source)  # type: ignore[arg-type]
            elif kind is Stop:
                channel.logger.warning(
                    "%s: STOP from %s accepted",
                    channel.name,
                    format_source(source),
                    extra=channel.fields(source, MessageId.STOP_ACCEPTED),
                )
                self.request_stop(f"STOP from {format_source(source)} on {channel.name}")
                return False
        return True

    def _refused(self, channel: Channel, refused: Refused, source: tuple[str, int]) -> None:
        channel.counters.stop_refused[refused.reason.value] += 1
        if refused.log:  # at most once a minute per source (Responder decides)
            channel.logger.warning(
                "%s: STOP from %s refused: %s",
                channel.name,
                format_source(source),
                refused.reason.value,
                extra=channel.fields(source, MessageId.STOP_REFUSED),
            )

    def _send(self, channel: Channel, reply: Reply, now: float) -> None:
        try:
            channel.listener.sock.sendto(reply.data, reply.destination)
        except OSError as e:
            self.send_failed(channel, reply.destination, e, now)
            return
        channel.counters.answered += 1
        channel.counters.bytes_out += len(reply.data)

    def send_failed(
        self, channel: Channel, destination: tuple[str, int], error: OSError, now: float
    ) -> None:
        # Full send buffer, unreachable sender, firewall: this reply is lost, not the daemon.
        channel.counters.dropped[SEND_FAILED] += 1
        if channel.budget.take(now):
            channel.logger.warning(
                "%s: reply to %s failed: %s",
                channel.name,
                format_source(destination),
                error.strerror or error,
                extra=channel.fields(destination),
            )

    def tick(self, selector: selectors.BaseSelector, now: float) -> None:
        """Once a second: summarise suppressed lines, refresh STATUS=, cut off slow clients."""
        wall = self.wall_clock()
        for channel in self.channels.values():
            self.flush_suppressed(channel, now)
            channel.responder.prune(now, wall)
        status = self.status_line()
        if status != self.last_status:
            self.last_status = status
            self.notifier.status(status)
        if self.control is not None:
            self.control.expire(selector, now)
        self.watch_interfaces(selector)

    def watch_interfaces(self, selector: selectors.BaseSelector) -> None:
        """Follow configured interfaces: join late ones, re-join after down/up or re-creation.

        A poll once a second (no netlink socket needed, so the sandbox stays AF_INET/AF_INET6/
        AF_UNIX only): an interface change is acted on within about a second.
        """
        seen: dict[str | None, net.LinkState] = {}

        def state(endpoint: Endpoint) -> net.LinkState:
            if endpoint.interface not in seen:
                seen[endpoint.interface] = net.link_state(endpoint)
            return seen[endpoint.interface]

        for key, endpoint in list(self.waiting.items()):
            if state(endpoint).ifindex == 0:
                continue
            try:
                listener = net.open_listener(endpoint)
            except SocketSetupError as e:
                if self.waiting_errors.get(key) != str(e):  # say it once, keep trying
                    self.waiting_errors[key] = str(e)
                    self.log.error("%s", e, extra=event(MessageId.SETUP_FAILED))
                continue
            del self.waiting[key]
            self.waiting_errors.pop(key, None)
            self.add_channel(endpoint, listener, selector)
        for channel in list(self.channels.values()):
            if channel.link is not None:
                self.follow_link(channel, state(channel.endpoint), selector)

    def rejoin(
        self, channel: Channel, endpoint: Endpoint, selector: selectors.BaseSelector
    ) -> None:
        """Join again on the endpoint's interface as it is now (raises SocketSetupError)."""
        old_index = channel.listener.ifindex
        if not net.bound_to_interface(endpoint) or net.memberships(endpoint)[1] == old_index:
            channel.listener = net.rejoin(channel.listener, endpoint)
            return
        # The socket is tied to the old interface index: it must be replaced, and the port
        # is ours (no SO_REUSEADDR), so the old one is closed first.
        selector.unregister(channel.listener.sock)
        net.close_listener(channel.listener)
        try:
            channel.listener = net.open_listener(endpoint)
        except SocketSetupError:
            # No socket now: serve it again like a group waiting for its interface.
            del self.channels[endpoint.key]
            self.waiting[endpoint.key] = endpoint
            raise
        selector.register(channel.listener.sock, selectors.EVENT_READ, channel)

    def follow_link(
        self, channel: Channel, now: net.LinkState, selector: selectors.BaseSelector
    ) -> None:
        before = channel.link
        if before is None or now == before:
            return
        iface = channel.endpoint.interface
        fields = channel.fields(message_id=MessageId.GROUP_JOINED)
        if now.ifindex == 0:
            channel.logger.warning("%s: interface %s went away", channel.name, iface, extra=fields)
        elif not now.up:
            channel.logger.warning("%s: interface %s is down", channel.name, iface, extra=fields)
        else:
            try:
                self.rejoin(channel, channel.endpoint, selector)
            except SocketSetupError as e:
                channel.logger.error("%s: re-joining failed: %s", channel.name, e.message)
                return  # `link` stays as it was: the next poll tries again
            channel.logger.info(
                "%s: interface %s is up (index %d): re-joined",
                channel.name,
                iface,
                now.ifindex,
                extra=fields,
            )
        channel.link = now

    def flush_suppressed(self, channel: Channel, now: float) -> None:
        held_back = channel.budget.take_suppressed(now)
        if held_back:
            channel.counters.suppressed_lines += held_back
            channel.logger.info(
                "%s: %d more datagram lines suppressed",
                channel.name,
                held_back,
                extra=channel.fields(),
            )

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

    def snapshot(self) -> dict[str, object]:
        """Everything `mcastd status` shows, as JSON-ready data (schema in docs/status.md)."""
        now, wall = self.clock(), self.wall_clock()

        def wall_time(moment: float | None) -> float | None:
            return None if moment is None else round(wall - (now - moment), 3)

        endpoints = []
        for channel in self.channels.values():
            c, e = channel.counters, channel.endpoint
            pending = channel.budget.suppressed
            endpoints.append(
                {
                    "group": e.group,
                    "port": e.port,
                    "interface": e.interface,
                    "reply": e.reply,
                    "ttl": e.ttl,
                    "received": c.received,
                    "answered": c.answered,
                    "listened": c.listened,
                    "dropped": {reason: c.dropped[reason] for reason in DROP_REASONS},
                    "stop_refused": {r.value: c.stop_refused[r.value] for r in StopRefusal},
                    "suppressed_lines": c.suppressed_lines + pending,
                    "bytes_in": c.bytes_in,
                    "bytes_out": c.bytes_out,
                    "last_source": None if c.last_source is None else format_source(c.last_source),
                    "last_heard": wall_time(c.last_heard),
                }
            )
        return {
            "schema": STATUS_SCHEMA,
            "instance": self.instance,
            "version": __version__,
            "pid": os.getpid(),
            "config": self.config.source,
            "started": wall_time(self.started),
            "uptime": round(now - self.started, 3),
            "status": self.status_line(),
            "waiting_for_interface": [str(e) for e in self.waiting.values()],
            "last_reload": self.last_reload,
            "endpoints": endpoints,
        }

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
            failed = event(MessageId.RELOAD_FAILED)
            for problem in e.problems:
                self.log.error("reload failed: %s", problem, extra=failed)
            self.log.error("reload failed: still serving the previous configuration", extra=failed)
            self.last_reload = self._reload_record([str(p) for p in e.problems])
            self.notifier.ready(f"reload failed; {self.status_line()}")
            return
        old_total = self.config.reply_rate_total
        self.config = new
        if new.reply_rate_total != old_total:
            self.total = self._total_bucket(new)
        wanted = {e.key: e for e in new.endpoints()}
        for key in [k for k in self.waiting if k not in wanted]:
            del self.waiting[key]
        for key in [k for k in self.channels if k not in wanted]:
            channel = self.channels.pop(key)
            selector.unregister(channel.listener.sock)
            self.close_channel(channel)
        errors = []
        for key, endpoint in wanted.items():
            try:
                self._apply(selector, key, endpoint)
            except SocketSetupError as e:
                errors.append(str(e))
                self.log.error("reload: %s", e, extra=event(MessageId.RELOAD_FAILED))
        self.last_reload = self._reload_record(errors)
        outcome = f"with {len(errors)} error(s)" if errors else "ok"
        self.log.info("reloaded %s: %s", new.source, outcome, extra=event(MessageId.RELOAD_OK))
        self.last_status = self.status_line()
        self.notifier.ready(self.last_status)

    def _reload_record(self, errors: list[str]) -> dict[str, object]:
        return {"time": round(self.wall_clock(), 3), "ok": not errors, "errors": errors}

    def _apply(
        self, selector: selectors.BaseSelector, key: tuple[str, int], endpoint: Endpoint
    ) -> None:
        channel = self.channels.get(key)
        if channel is None:
            self.waiting.pop(key, None)
            if must_wait(endpoint):
                self.wait_for(endpoint)
            else:
                self.add_channel(endpoint, net.open_listener(endpoint), selector)
            return
        old = channel.endpoint
        stop_key = self._key(endpoint)
        if old == endpoint and stop_key == channel.key and channel.responder.total is self.total:
            return
        if (old.interface, old.sources) != (endpoint.interface, endpoint.sources):
            self.rejoin(channel, endpoint, selector)
            channel.link = None if endpoint.interface is None else net.link_state(endpoint)
        if (old.ttl, old.unicast_ttl) != (endpoint.ttl, endpoint.unicast_ttl):
            net.apply_ttl(channel.listener.sock, endpoint)
        channel.configure(endpoint, stop_key, self.total)
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
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass
