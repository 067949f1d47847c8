"""The Python part of mcastd's per-datagram cost, without the kernel and without the noise.

`Channel.serve_batch` (`Server.serve` before the redesign) is driven with a stand-in socket
whose `recvfrom` hands out the same 64-byte datagram and whose `sendto` is a C builtin that
does nothing, so the time measured is the daemon's own Python work per datagram: the
decision, the dispatch of its actions, the counters. The floor's equivalent (`bytes.upper()`
in a loop) is measured the same way. On a shared VM, where the rate steps move by tens of
percent from run to run, this figure moves by a few percent: it is the one to watch when
changing the hot path.

It reaches into mcastd's internals (Channel, net.GroupSocket); if they change shape,
`measure` says so instead of failing the run.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
import timeit
from pathlib import Path
from typing import Any

DATAGRAM = b"seq=0000000001 " + b"x" * 49
SOURCE = ("127.0.0.1", 40000)
BATCHES = 3_000
REPEATS = 7


class StubSocket:
    """Only what `serve` uses: recvfrom (replaced per run) and sendto (a no-op builtin)."""

    def __init__(self) -> None:
        self.sink: dict[bytes, object] = {}
        self.sendto = self.sink.get
        self.recvfrom: Any = None


def _per_datagram(run: Any, count: int) -> float:
    return min(timeit.repeat(run, number=1, repeat=REPEATS)) / count * 1e6


def _call_overhead(count: int) -> float:
    """What the stub's Python-level recvfrom adds per call (subtracted)."""

    def run() -> None:
        take = itertools.repeat((DATAGRAM, SOURCE)).__next__

        def recvfrom(size: int) -> tuple[bytes, tuple[str, int]]:
            return take()

        for _ in range(count):
            recvfrom(65536)

    return _per_datagram(run, count)


def floor_cost(count: int = 64 * BATCHES) -> float:
    def run() -> None:
        take = itertools.repeat((DATAGRAM, SOURCE)).__next__
        sink: dict[bytes, object] = {}
        sendto = sink.get
        for _ in range(count):
            data, source = take()
            sendto(data.upper(), source)

    return _per_datagram(run, count)


def _serve_function(repo: Path, config_text: str, sock: StubSocket) -> tuple[Any, int]:
    """(serve(now), datagrams per batch) for the first endpoint, in either tree's shape.

    Since the redesign a Channel serves its own batches (`Channel.serve_batch`); before it,
    `Server.serve(channel, now)` did. Both are measured, so that an A/B run can compare them.
    """
    sys.path.insert(0, str(repo))
    try:
        from mcastd import config, net

        try:
            from mcastd import channel as channel_module
        except ImportError:
            channel_module = None
        from mcastd import server
        from mcastd.notify import Notifier
    finally:
        sys.path.remove(str(repo))
    cfg = config.parse(config_text, "bench.yaml")
    endpoint = next(iter(cfg.endpoints()))
    if channel_module is not None:
        chan = channel_module.Channel(endpoint, net.GroupSocket(sock, (), 0), None, None, 0.0)
        wall = time.time

        def serve_batch(now: float) -> None:
            chan.serve_batch(now, wall())

        return serve_batch, channel_module.BATCH
    srv = server.Server(cfg, Notifier(lambda state: True))
    old = server.Channel(endpoint, net.Listener(sock, (), 0), None, None, time.time())

    def serve(now: float) -> None:
        srv.serve(old, now)

    return serve, server.BATCH


def mcastd_cost(repo: Path, config_text: str) -> float:
    """Microseconds of Python per datagram in serving the first endpoint's batches."""
    sock = StubSocket()
    # Log lines go nowhere, but the per-datagram logging decision is still taken.
    logging.getLogger("mcastd").addHandler(logging.NullHandler())
    logging.getLogger("mcastd").propagate = False
    logging.getLogger("mcastd").setLevel(logging.INFO)
    serve, batch = _serve_function(repo, config_text, sock)
    count = batch * BATCHES

    def run() -> None:
        take = itertools.islice(itertools.repeat((DATAGRAM, SOURCE)), count).__next__

        def recvfrom(size: int) -> tuple[bytes, tuple[str, int]]:
            return take()

        sock.recvfrom = recvfrom
        now = time.monotonic()
        for _ in range(BATCHES):
            serve(now)

    return _per_datagram(run, count) - _call_overhead(count)


def measure(repo: Path, configs: dict[str, str]) -> dict[str, Any]:
    """{'floor': us, name: us or an error text} for each named config text."""
    out: dict[str, Any] = {"floor": floor_cost()}
    for name, text in configs.items():
        try:
            out[name] = mcastd_cost(repo, text)
        except Exception as e:  # internals changed shape: say so, keep the run going
            out[name] = f"n/a ({type(e).__name__}: {e})"
    return out
