"""The status document: what the daemon counts per endpoint, and the one schema for it.

The daemon builds its document here (`daemon_document`, from `Server.snapshot`), and
`mcastd status` and the exporter read it; SCHEMA is the version both sides name. The fields
are described in docs/status.md: a field is only ever added within a schema version.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from mcastd.addresses import format_address
from mcastd.config import Endpoint
from mcastd.protocol import DropReason
from mcastd.stopauth import StopRefusal

SCHEMA = 1

# Drop reasons that the loop adds to the protocol's own.
SEND_FAILED = "send_failed"
RECEIVE_ERROR = "receive_error"
DROP_REASONS = (*(r.value for r in DropReason), SEND_FAILED, RECEIVE_ERROR)

Document = dict[str, object]
WallTime = Callable[[float | None], float | None]


class EndpointState(StrEnum):
    """Where an endpoint is: serving (its socket is joined), or not yet and why."""

    SERVING = "serving"
    FAILING = "failing"  # set-up failed with `error`; tried again every few seconds
    WAITING = "waiting"  # `wait_for_interface`: its interface is not there yet


@dataclass
class Counters:
    """What happened on one endpoint; received == answered + listened + sum(dropped)."""

    received: int = 0
    answered: int = 0
    listened: int = 0  # heard and logged, with `reply: none`
    dropped: Counter[str] = field(default_factory=Counter)
    bytes_in: int = 0
    bytes_out: int = 0
    suppressed_lines: int = 0
    stop_refused: Counter[str] = field(default_factory=Counter)
    last_source: tuple[str, int] | None = None  # IPv6: (host, port, flowinfo, scope_id)
    last_heard: float | None = None

    def summary(self) -> str:
        drops = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items()) if n)
        listened = f", {self.listened} listened" if self.listened else ""
        return (
            f"{self.received} received, {self.answered} answered{listened}, "
            f"{sum(self.dropped.values())} dropped" + (f" ({drops})" if drops else "")
        )


def endpoint_document(
    endpoint: Endpoint,
    counters: Counters,
    wall_time: WallTime,
    state: EndpointState = EndpointState.SERVING,
    error: str | None = None,
    pending_lines: int = 0,
) -> Document:
    """One entry of `endpoints`; `wall_time` turns a monotonic moment into unix time."""
    c, e = counters, endpoint
    return {
        "group": e.group,
        "port": e.port,
        "interface": e.interface,
        "reply": e.reply,
        "ttl": e.ttl,
        "state": state.value,
        "error": error,
        "received": c.received,
        "answered": c.answered,
        "listened": c.listened,
        "dropped": {reason: c.dropped[reason] for reason in DROP_REASONS},
        "stop_refused": {r.value: c.stop_refused[r.value] for r in StopRefusal},
        "suppressed_lines": c.suppressed_lines + pending_lines,
        "bytes_in": c.bytes_in,
        "bytes_out": c.bytes_out,
        "last_source": None if c.last_source is None else format_address(*c.last_source[:2]),
        "last_heard": wall_time(c.last_heard),
    }


def status_line(counters: Iterable[Counters], failing: int = 0, not_served: int = 0) -> str:
    """The STATUS= text: `N groups, N heard, N answered, N dropped` over the serving ones,
    then `; F of T groups failing` when some of all T cannot be joined."""
    n = received = answered = dropped = 0
    for c in counters:
        n += 1
        received += c.received
        answered += c.answered
        dropped += sum(c.dropped.values())
    line = (
        f"{n} group{'s' if n != 1 else ''}, {received} heard, "
        f"{answered} answered, {dropped} dropped"
    )
    if failing:
        line += f"; {failing} of {n + not_served} groups failing"
    return line


def reload_record(wall: float, errors: list[str], ok: bool | None = None) -> Document:
    """`last_reload`: when, whether it went through, and the one-line problems: of the
    file if not (`ok` false), of the groups it could not join if it did (`ok` true)."""
    return {"time": round(wall, 3), "ok": not errors if ok is None else ok, "errors": errors}


def daemon_document(
    *,
    instance: str,
    version: str,
    pid: int,
    config: str,
    started: float | None,
    uptime: float,
    status: str,
    waiting: Sequence[Endpoint],
    last_reload: Document | None,
    endpoints: list[Document],
) -> Document:
    """What the control socket answers to `status`: one daemon."""
    return {
        "schema": SCHEMA,
        "instance": instance,
        "version": version,
        "pid": pid,
        "config": config,
        "started": started,
        "uptime": round(uptime, 3),
        "status": status,
        "waiting_for_interface": [str(e) for e in waiting],
        "last_reload": last_reload,
        "endpoints": endpoints,
    }


def status_document(daemons: list[Document]) -> Document:
    """What `mcastd status --json` prints: every daemon that answered."""
    return {"schema": SCHEMA, "daemons": daemons}
