"""The event loop: wait for ready sockets, let their channels serve, carry out plans.

One thread, one epoll selector over finished sockets from `net`, a self-pipe for signals
(`wakeup`) and the read-only control socket. SIGTERM, SIGINT and an accepted STOP datagram
set the one stop reason; one `finally` sends STOPPING=1, leaves the groups and closes the
sockets. SIGHUP asks for a reload, done between batches as `reload.plan` says. Once a second
the loop tries the groups not served yet and follows the configured interfaces. What a reload
or an interface change does to the channels is carried out by `steps`.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack

from mcastd import __version__, net, steps
from mcastd.backlog import Backlog
from mcastd.channel import Channel
from mcastd.config import Config, Endpoint
from mcastd.control import ControlServer
from mcastd.errors import ConfigError, SocketSetupError
from mcastd.journal import DAEMON_LOGGER
from mcastd.links import link_state, must_wait
from mcastd.messages import MessageId, event
from mcastd.notify import Notifier
from mcastd.protocol import TokenBucket
from mcastd.reload import Key, stop_key
from mcastd.retry import Verdict, verdict
from mcastd.snapshot import (
    Counters,
    Document,
    EndpointState,
    daemon_document,
    endpoint_document,
    reload_record,
    status_line,
)
from mcastd.steps import Opener
from mcastd.wakeup import Wakeup

# STATUS= and suppressed-line summaries at most this often, and interfaces polled as often.
TICK_SECONDS = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

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
        opener: Opener = net.open_group_socket,
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.reload_config = reload_config
        self.watchdog_interval = watchdog_interval
        self.control_path = control_path
        self.instance = instance
        self.clock = clock
        self.wall_clock = wall_clock
        self.opener = opener
        self.log = logging.getLogger(DAEMON_LOGGER)
        self.channels: dict[Key, Channel] = {}
        self.backlog = Backlog(self.log)
        self.control: ControlServer | None = None
        self.stop_reason: str | None = None
        self.reload_requested = False
        self.last_status = ""
        self.started = clock()
        self.started_wall = wall_clock()
        self.last_reload: Document | None = None
        self.total = self._total_bucket(config)

    def _total_bucket(self, config: Config) -> TokenBucket | None:
        rate = config.reply_rate_total
        return TokenBucket(rate, max(rate, 1.0), self.clock()) if rate > 0 else None

    # -- start and stop ---------------------------------------------------------------------

    def open(self) -> None:
        """Bind and join every endpoint that can be; the others are shown failing and tried
        again (`retry`). Raises SocketSetupError, with nothing left open, for a failure that
        cannot clear by itself, and when no endpoint at all can be served (unless some have
        `wait_for_interface`)."""
        endpoints = []
        for endpoint in self.config.endpoints():
            if must_wait(endpoint):
                self.backlog.wait(endpoint)
            else:
                endpoints.append(endpoint)
        net.check_descriptors(len(endpoints))
        opened: dict[Key, net.GroupSocket] = {}
        failed: list[tuple[Endpoint, SocketSetupError]] = []
        try:
            for endpoint in endpoints:
                try:
                    opened[endpoint.key] = self.opener(endpoint)
                except SocketSetupError as e:
                    if verdict(e.errno) is Verdict.FATAL:
                        raise
                    failed.append((endpoint, e))
            waits = any(e.settings.wait_for_interface for e in self.config.endpoints())
            if failed and not opened and not waits:
                raise failed[0][1]  # nothing to serve: fail loudly, as before
        except BaseException:
            for group_socket in opened.values():
                net.close_group_socket(group_socket)
            raise
        for endpoint in endpoints:
            if endpoint.key in opened:
                self.add_channel(endpoint, opened[endpoint.key])
        now = self.clock()
        for endpoint, error in failed:
            self.backlog.fail(endpoint, error, now)
        if self.control_path is not None:
            try:
                self.control = ControlServer(self.control_path, self.snapshot, self.log)
            except SocketSetupError as e:
                # Serving the groups matters more than being able to show their counters.
                self.log.warning("%s; `mcastd status` will not see this daemon", e)

    def sockets(self) -> list[socket.socket]:
        """Every socket the server has open (the groups' and the control socket)."""
        sockets = [c.group_socket.sock for c in self.channels.values()]
        if self.control is not None:
            sockets.append(self.control.sock)
        return sockets

    def add_channel(
        self,
        endpoint: Endpoint,
        group_socket: net.GroupSocket,
        selector: selectors.BaseSelector | None = None,
    ) -> Channel:
        channel = Channel(
            endpoint, group_socket, stop_key(self.config, endpoint), self.total, self.started_wall
        )
        if endpoint.interface is not None:
            channel.link = link_state(endpoint)
        self.channels[endpoint.key] = channel
        if selector is not None:
            selector.register(group_socket.sock, selectors.EVENT_READ, channel)
        channel.log_joined()
        return channel

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def close(self) -> None:
        """Leave every group and close every socket (what `run` does when it stops)."""
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()
        if self.control is not None:
            self.control.close(None)

    def run(self) -> str:
        """Serve until STOP, SIGTERM or SIGINT; the sockets must be open (see `open`).

        Raises SocketSetupError (after closing everything) if the loop itself cannot be set
        up, which happens when the open-files limit was just enough for the groups.
        """
        handlers = {signum: self._on_stop for signum in STOP_SIGNALS}
        handlers[signal.SIGHUP] = self._on_hangup
        with ExitStack() as stack:
            try:
                # Made here, not in `open`: --detach closes every descriptor but the sockets.
                wakeup = stack.enter_context(Wakeup(handlers))
                selector = stack.enter_context(selectors.DefaultSelector())
            except OSError as e:
                self.close()
                raise net.setup_error("event loop", e) from e
            try:
                selector.register(wakeup.fd, selectors.EVENT_READ, None)
                for channel in self.channels.values():
                    selector.register(channel.group_socket.sock, selectors.EVENT_READ, channel)
                if self.control is not None:
                    selector.register(self.control.sock, selectors.EVENT_READ, self.control)
                self.last_status = self.status_line()
                self.notifier.ready(self.last_status)
                self.log.info("ready: %s", self.last_status, extra=event(MessageId.READY))
                self._loop(selector, wakeup)
            finally:
                reason = self.stop_reason or "error"
                self.notifier.stopping(f"stopping: {reason}")
                self.log.info("stopping: %s", reason, extra=event(MessageId.SHUTDOWN))
                for channel in self.channels.values():
                    selector.unregister(channel.group_socket.sock)
                self.close()
        return reason

    def _on_stop(self, signum: signal.Signals) -> None:
        self.request_stop(signum.name)

    def _on_hangup(self, signum: signal.Signals) -> None:
        self.reload_requested = True

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self, selector: selectors.BaseSelector, wakeup: Wakeup) -> None:
        select = selector.select
        clock, wall_clock = self.clock, self.wall_clock
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
                ready = key.data
                if type(ready) is Channel:
                    stop = ready.serve_batch(now, wall_clock())
                    if stop is not None:
                        self.request_stop(stop)
                        return
                elif ready is None:
                    wakeup.drain()
                else:
                    ready.handle(selector, events, now)
                if self.stop_reason is not None:
                    return
            now = clock()
            if self.reload_requested:
                self.reload_requested = False
                self.reload(selector)
            if now >= next_tick:
                self.tick(selector, now)
                next_tick = now + TICK_SECONDS

    def tick(self, selector: selectors.BaseSelector, now: float) -> None:
        """Once a second: summarise suppressed lines, serve what can be served now, follow
        the interfaces, refresh STATUS=, cut off slow clients."""
        wall = self.wall_clock()
        for channel in self.channels.values():
            channel.prune(now, wall)
        self.recover(selector, now)
        status = self.status_line()
        # A STATUS= dropped on a full notify queue is sent again on the next tick.
        if status != self.last_status and self.notifier.status(status):
            self.last_status = status
        if self.control is not None:
            self.control.expire(selector, now)

    def recover(self, selector: selectors.BaseSelector, now: float) -> None:
        """Serve what can be served now, follow the interfaces (`steps.recover`)."""
        steps.recover(self, selector, now)

    # -- status -----------------------------------------------------------------------------

    def status_line(self) -> str:
        failing = len(self.backlog.in_state(EndpointState.FAILING))
        counters = (c.counters for c in self.channels.values())
        return status_line(counters, failing=failing, not_served=len(self.backlog))

    def snapshot(self) -> Document:
        """Everything `mcastd status` shows, as JSON-ready data (mcastd.snapshot)."""
        now, wall = self.clock(), self.wall_clock()

        def wall_time(moment: float | None) -> float | None:
            return None if moment is None else round(wall - (now - moment), 3)

        endpoints = [
            endpoint_document(c.endpoint, c.counters, wall_time, pending_lines=c.budget.suppressed)
            for c in self.channels.values()
        ]
        endpoints += [
            endpoint_document(p.endpoint, Counters(), wall_time, p.state, p.error)
            for p in self.backlog
        ]
        return daemon_document(
            instance=self.instance,
            version=__version__,
            pid=os.getpid(),
            config=self.config.source,
            started=wall_time(self.started),
            uptime=now - self.started,
            status=self.status_line(),
            waiting=self.backlog.in_state(EndpointState.WAITING),
            last_reload=self.last_reload,
            endpoints=endpoints,
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
            failed = event(MessageId.RELOAD_FAILED)
            for problem in e.problems:
                self.log.error("reload failed: %s", problem, extra=failed)
            self.log.error("reload failed: still serving the previous configuration", extra=failed)
            problems = [str(p) for p in e.problems]
            self.last_reload = reload_record(self.wall_clock(), problems)
            self.notifier.ready(f"reload failed; {self.status_line()}")
            return
        changes = steps.reload_plan(self, new)
        if new.reply_rate_total != self.config.reply_rate_total:
            self.total = self._total_bucket(new)
        self.config = new
        errors = steps.carry_out_plan(self, changes, selector, self.clock())
        # In force, even if some groups could not be joined: `errors` names them.
        self.last_reload = reload_record(self.wall_clock(), errors, ok=True)
        outcome = f"with {len(errors)} error(s): {'; '.join(errors)}" if errors else "ok"
        self.log.info("reloaded %s: %s", new.source, outcome, extra=event(MessageId.RELOAD_OK))
        self.last_status = self.status_line()
        self.notifier.ready(self.last_status)
