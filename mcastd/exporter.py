"""`mcastd exporter`: Prometheus metrics of every mcastd on the host, and blackbox-style probes.

A separate process (the daemons' hot path is untouched): each scrape of /metrics asks every
control socket for its status, as `mcastd status` does, and answers with metric families built
afresh (no state kept between scrapes). /probe?module=NAME runs a probe module of the
configuration file within the scrape timeout Prometheus sends; a module has at most one probe
in flight and starts a new one at most every `min_interval` seconds.

Listening sockets come from systemd (socket activation: LISTEN_FDS) or from `listen:`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from mcastd import __version__, prober
from mcastd.addresses import family_of
from mcastd.errors import ConfigError, SocketSetupError
from mcastd.exitcodes import ExitCode, config_failed, fail
from mcastd.exporterconfig import ExporterConfig, ProbeModule, load
from mcastd.journal import setup_logging
from mcastd.metrics import (
    Families,
    ProbeResult,
    ResponderResult,
    daemon_families,
    exporter_families,
    exposition,
    probe_families,
)
from mcastd.probe import ProbeReport, ProbeSettings, Roster
from mcastd.status import gather

LOGGER = "mcastd.exporter"
# sd_listen_fds(3): passed descriptors start at 3.
LISTEN_FDS_START = 3
# Prometheus' default scrape timeout, used when a request does not say its own.
DEFAULT_SCRAPE_TIMEOUT = 10.0
# Kept back from the scrape timeout for writing the answer and the network on the way.
TIMEOUT_MARGIN = 0.5
# Requests served at once (a probe holds its thread for up to the scrape timeout); more are
# refused with 503 rather than queued without bound.
MAX_REQUESTS = 16
# A client gets this long to send its request line and headers.
REQUEST_SECONDS = 10.0

Prober = Callable[[ProbeModule, float], ProbeResult]


def activated_fds(environ: Mapping[str, str], pid: int) -> list[int]:
    """The listening descriptors systemd passed to process `pid` (the LISTEN_FDS protocol of
    sd_listen_fds(3)), or none when they were meant for another process."""
    if environ.get("LISTEN_PID", "") != str(pid):
        return []
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit():
        return []
    return list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))


def listen_fds() -> list[int]:
    """systemd.daemon.listen_fds() when systemd-python is installed, else the protocol read
    here; the variables are removed either way so that children do not inherit them."""
    try:
        from systemd.daemon import listen_fds as systemd_listen_fds
    except ImportError:
        fds = activated_fds(os.environ, os.getpid())
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        return fds
    return list(systemd_listen_fds(True))


def split_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


class StatusCollector(Collector):
    """Asks the daemons on every collect(); holds only where to find them."""

    def __init__(self, runtime_dir: str, sockets: Sequence[str] = ()) -> None:
        self.runtime_dir = runtime_dir
        self.sockets = list(sockets)

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        documents, problems = gather([], [self.runtime_dir])
        if self.sockets:
            seen = {d["socket"] for d in documents}
            extra, extra_problems = gather([s for s in self.sockets if s not in seen], [])
            documents += extra
            problems += extra_problems
        for problem in problems:
            logging.getLogger(LOGGER).debug("%s", problem)
        yield from daemon_families(documents)
        yield from exporter_families(len(documents), len(problems), time.monotonic() - started)


# What a scrape of a module does, decided from the module's state at `now`.
RUN = "run"  # start a probe
JOIN = "join"  # a probe is in flight: wait for its result
REUSE = "reuse"  # the last probe started less than min_interval ago: answer with its result


def decide(running: bool, last_started: float | None, min_interval: float, now: float) -> str:
    """One probe in flight per module, and starts at least `min_interval` seconds apart."""
    if running:
        return JOIN
    if last_started is not None and now - last_started < min_interval:
        return REUSE
    return RUN


@dataclass
class ModuleState:
    running: bool = False
    last_started: float | None = None  # time.monotonic()
    last: ProbeResult | None = None


class Probes:
    """The probe modules' state: one condition guards every module's (tiny) record."""

    def __init__(self, modules: Mapping[str, ProbeModule], prober: Prober) -> None:
        self.modules = modules
        self.prober = prober
        self.states = {name: ModuleState() for name in modules}
        self.changed = threading.Condition()

    def result(self, name: str, budget: float) -> ProbeResult:
        """The module's result, starting a probe if the spacing allows one."""
        module = self.modules[name]
        state = self.states[name]
        with self.changed:
            now = time.monotonic()
            action = decide(state.running, state.last_started, module.min_interval, now)
            if action == JOIN:
                self.changed.wait_for(lambda: not state.running, timeout=budget)
            if action in (JOIN, REUSE) and state.last is not None:
                return state.last
            if action != RUN:
                return ProbeResult.failed("another probe of this module is still running")
            state.running = True
            state.last_started = now
        try:
            result = self.prober(module, time.monotonic() + budget)
        except Exception as e:
            logging.getLogger(LOGGER).warning("probe %s failed: %s", name, e)
            result = ProbeResult.failed(str(e))
        with self.changed:
            state.running = False
            state.last = result
            self.changed.notify_all()
        return result


def scrape_budget(header: str | None) -> float:
    """Seconds a probe may take: Prometheus' scrape timeout less a margin."""
    try:
        timeout = float(header) if header else DEFAULT_SCRAPE_TIMEOUT
    except ValueError:
        timeout = DEFAULT_SCRAPE_TIMEOUT
    if not timeout > 0:  # also NaN
        timeout = DEFAULT_SCRAPE_TIMEOUT
    return max(min(timeout, 3600.0) - TIMEOUT_MARGIN, 0.2)


INDEX = """<html><head><title>mcastd exporter</title></head><body>
<h1>mcastd exporter {version}</h1>
<p><a href="/metrics">/metrics</a>: every mcastd on this host</p>
<p>/probe?module=NAME: a probe module of {source}: {modules}</p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server: HttpServer
    timeout = REQUEST_SECONDS
    server_version = f"mcastd-exporter/{__version__}"

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/metrics":
            body, kind = exposition(self.server.collector, self.headers.get("Accept"))
            self.answer(200, body, kind)
        elif url.path == "/probe":
            self.probe(urllib.parse.parse_qs(url.query))
        elif url.path == "/":
            modules = ", ".join(sorted(self.server.config.modules)) or "none configured"
            page = INDEX.format(
                version=__version__, source=self.server.config.source, modules=modules
            )
            self.answer(200, page.encode(), "text/html; charset=utf-8")
        else:
            self.answer(404, b"not found: try /metrics or /probe?module=NAME\n")

    def probe(self, query: dict[str, list[str]]) -> None:
        modules = self.server.config.modules
        names = query.get("module", [])
        if len(names) != 1 or names[0] not in modules:
            known = ", ".join(sorted(modules)) or "none (add modules: to the configuration)"
            shown = repr(names[0][:64]) if names else "none"
            message = f"unknown module {shown}: known modules are {known}\n"
            if len(names) > 1:
                message = "give one module=NAME\n"
            self.answer(400, message.encode())
            return
        budget = scrape_budget(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        result = self.server.probes.result(names[0], budget)
        module = modules[names[0]]
        families = probe_families(module.expect, module.hops, result)
        body, kind = exposition(Families(families), self.headers.get("Accept"))
        self.answer(200, body, kind)

    def answer(self, code: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logging.getLogger(LOGGER).debug("%s " + format, self.address_string(), *args)


class HttpServer(ThreadingHTTPServer):
    """An HTTP server on one listening socket (made here or passed by systemd)."""

    daemon_threads = True

    def __init__(
        self,
        sock: socket.socket,
        config: ExporterConfig,
        collector: StatusCollector,
        probes: Probes,
        slots: threading.BoundedSemaphore,
    ) -> None:
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.address_family = sock.family
        self.config = config
        self.collector = collector
        self.probes = probes
        self.slots = slots

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def bind(address: str) -> socket.socket:
    """A listening TCP socket on host:port."""
    host, port = split_listen(address)
    family = family_of(host)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def result_of(report: ProbeReport, max_loss: float, started: float) -> ProbeResult:
    """What the metrics need of `mcastd probe`'s report."""
    return ProbeResult(
        success=report.success(max_loss),
        sent=report.sent,
        responders=tuple(
            ResponderResult(
                address=r.address,
                sent=r.sent,
                answered=r.received,
                rtt_median=r.rtt.median if r.rtt else None,
                rtt_max=r.rtt.max if r.rtt else None,
                hops=r.hops,
            )
            for r in report.responders
        ),
        duration=report.duration,
        started=started,
    )


def run_module(module: ProbeModule, deadline: float) -> ProbeResult:
    """Run the module's probe with `mcastd probe`'s own code, returning by `deadline`
    (time.monotonic())."""
    roster = Roster(tuple((a, None) for a in module.expect)) if module.expect else None
    settings = ProbeSettings(
        group=module.group,
        port=module.port,
        count=module.count,
        interval=module.interval,
        wait=module.wait,
        ttl=1 if module.hops else module.ttl,
        hops=module.max_hops if module.hops else None,
        interface=module.interface,
        roster=roster,
        max_loss=module.max_loss,
    )
    started = time.time()
    try:
        report = prober.run(settings, deadline=deadline)
    except SocketSetupError as e:
        logging.getLogger(LOGGER).warning("probe %s: %s", module.name, e)
        return ProbeResult.failed(str(e), started)
    return result_of(report, module.max_loss, started)


def serve(
    sockets: Sequence[socket.socket],
    config: ExporterConfig,
    stop: threading.Event,
    prober: Prober = run_module,
) -> None:
    """Answer scrapes on `sockets` until `stop` is set; then close them."""
    collector = StatusCollector(config.runtime_dir, config.sockets)
    probes = Probes(config.modules, prober)
    slots = threading.BoundedSemaphore(MAX_REQUESTS)
    servers = [HttpServer(s, config, collector, probes, slots) for s in sockets]
    started: list[HttpServer] = []
    try:
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
            started.append(server)
        stop.wait()
    finally:
        for server in started:
            server.shutdown()
        for server in servers:
            server.server_close()


def main(args: argparse.Namespace) -> int:
    """`mcastd exporter`: serve /metrics and /probe until SIGTERM or SIGINT."""
    try:
        config = load(args.config)
    except ConfigError as e:
        return config_failed(e)
    setup_logging(args.log_level)
    log = logging.getLogger(LOGGER)
    sockets = [socket.socket(fileno=fd) for fd in listen_fds()]
    if not sockets:
        addresses = args.listen or config.listen
        try:
            for address in addresses:
                sockets.append(bind(address))
        except OSError as e:
            for sock in sockets:
                sock.close()
            return fail(f"exporter: cannot listen on {address}: {e.strerror}", ExitCode.UNAVAILABLE)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    where = ", ".join(str(s.getsockname()[:2]) for s in sockets)
    log.info("mcastd exporter %s listening on %s with %s", __version__, where, config.source)
    serve(sockets, config, stop)
    return ExitCode.OK
