"""Reload, decided purely: what to do to go from what is served to a new configuration.

`plan` compares the endpoints being served (and those not served yet) with a new Config and
returns the steps; `Server.reload` carries them out. Sockets of unchanged endpoints are kept,
so that their datagrams wait in the kernel's buffer meanwhile and none is lost.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

from mcastd.config import Config, Endpoint

Key = tuple[str, int]


class Served(NamedTuple):
    """What one serving endpoint was set up with."""

    endpoint: Endpoint
    stop_key: bytes | None
    reply_rate_total: float


class Open(NamedTuple):
    """Bind and join a new endpoint (or one that was not served)."""

    endpoint: Endpoint


class Close(NamedTuple):
    """Stop serving (group, port): leave and close it, or forget it if it was not served."""

    key: Key


class Rejoin(NamedTuple):
    """Join on another interface or other sources with the open socket, then Retune."""

    endpoint: Endpoint


class Retune(NamedTuple):
    """New settings for an open socket: hop limits, reply mode, defences (which start afresh)."""

    endpoint: Endpoint


class Wait(NamedTuple):
    """Not served until its interface appears (`wait_for_interface`)."""

    endpoint: Endpoint


Step = Open | Close | Rejoin | Retune | Wait


def stop_key(config: Config, endpoint: Endpoint) -> bytes | None:
    """The STOP key of the endpoint under `config` (None: plain STOP)."""
    name = endpoint.settings.stop.key_file
    return None if name is None else config.keys[name]


def plan(
    current: Mapping[Key, Served],
    pending: Mapping[Key, Endpoint],
    new: Config,
    absent: Collection[str] = (),
) -> tuple[Step, ...]:
    """The steps from `current` (serving) and `pending` (not served yet) to `new`.

    `absent`: the configured interfaces that are not there now. Closes come first, so that
    a (group, port) given up frees its port before anything else is bound; then one step per
    endpoint of `new` that needs one, in the file's order.
    """
    wanted = {e.key: e for e in new.endpoints()}
    steps: list[Step] = [Close(key) for key in (*current, *pending) if key not in wanted]
    for key, endpoint in wanted.items():
        served = current.get(key)
        if served is None:
            if pending.get(key) == endpoint:
                continue  # not served yet, and nothing changed: it keeps being tried
            waits = endpoint.settings.wait_for_interface and endpoint.interface in absent
            steps.append(Wait(endpoint) if waits else Open(endpoint))
            continue
        old = served.endpoint
        if (old.interface, old.sources) != (endpoint.interface, endpoint.sources):
            steps.append(Rejoin(endpoint))
        elif (old, served.stop_key, served.reply_rate_total) != (
            endpoint,
            stop_key(new, endpoint),
            new.reply_rate_total,
        ):
            steps.append(Retune(endpoint))
    return tuple(steps)
