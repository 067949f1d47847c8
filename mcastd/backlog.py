"""The endpoints of the configuration that are not served (yet), and which to try again when.

An endpoint is waiting (`wait_for_interface`: its interface is not there) or failing (its
set-up failed with an error that `retry` may let clear by itself). Each is said once, with
its reason, and tried again: a waiting one when its interface appears, a failing one every
RETRY_SECONDS. Opening the sockets is the server's; this keeps the list and decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import NamedTuple

from mcastd.config import Endpoint
from mcastd.errors import SocketSetupError
from mcastd.links import LinkState
from mcastd.messages import MessageId, endpoint_fields, event
from mcastd.reload import Key
from mcastd.retry import RETRY_SECONDS, Verdict, due, verdict
from mcastd.snapshot import EndpointState


class Pending(NamedTuple):
    """An endpoint of the config that is not served (yet), and why."""

    endpoint: Endpoint
    state: EndpointState
    error: str | None = None
    errno: int = 0  # of the last failure: decides whether it is tried again (retry.verdict)
    tried: float = 0.0  # monotonic time of the last attempt


class Backlog:
    """The endpoints not served, by (group, port)."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.entries: dict[Key, Pending] = {}

    def __iter__(self) -> Iterator[Pending]:
        return iter(list(self.entries.values()))

    def __len__(self) -> int:
        return len(self.entries)

    def wait(self, endpoint: Endpoint) -> None:
        """Not served until its interface appears; said once."""
        known = endpoint.key in self.entries
        self.entries[endpoint.key] = Pending(endpoint, EndpointState.WAITING)
        if not known:
            self.log.warning(
                "%s: interface %s is not there: joining when it appears",
                endpoint,
                endpoint.interface,
                extra=endpoint_fields(endpoint.group, endpoint.port),
            )

    def fail(self, endpoint: Endpoint, error: SocketSetupError, now: float) -> None:
        """Failing with `error`, said once per reason; tried again when `retry.due` if the
        error can clear by itself."""
        # The status entry is the endpoint's own: its error need not name it again.
        reason = str(error).removeprefix(f"{endpoint}: ")
        before = self.entries.get(endpoint.key)
        self.entries[endpoint.key] = Pending(
            endpoint, EndpointState.FAILING, reason, error.errno, now
        )
        if before is not None and before.error == reason:
            return
        if verdict(error.errno) is Verdict.RETRY:
            then = f"trying again every {RETRY_SECONDS:g} s"
        else:
            then = "not tried again until a reload or restart"
        self.log.warning(
            "%s not served, %s: %s",
            endpoint,
            then,
            reason,
            extra=endpoint_fields(
                endpoint.group, endpoint.port, message_id=MessageId.GROUP_FAILING
            ),
        )

    def failed_again(self, pending: Pending, error: SocketSetupError, now: float) -> None:
        """A try from `due` failed: a failing endpoint stays failing; a waiting one whose
        interface is there but cannot be joined yet keeps waiting, the error said once."""
        if pending.state is EndpointState.FAILING:
            self.fail(pending.endpoint, error, now)
        elif pending.error != str(error):
            self.entries[pending.endpoint.key] = pending._replace(error=str(error))
            self.log.error("%s", error, extra=event(MessageId.SETUP_FAILED))

    def due(self, now: float, link: Callable[[Endpoint], LinkState]) -> list[Pending]:
        """The endpoints to try now: waiting ones whose interface is there (`link`), failing
        ones whose error may have cleared, once RETRY_SECONDS have passed."""
        return [
            p
            for p in self.entries.values()
            if (p.state is EndpointState.WAITING and link(p.endpoint).ifindex != 0)
            or (
                p.state is EndpointState.FAILING
                and verdict(p.errno) is Verdict.RETRY
                and due(now, p.tried)
            )
        ]

    def take(self, key: Key) -> Pending | None:
        """Remove (group, port): it is served now, or no longer wanted."""
        return self.entries.pop(key, None)

    def forget_failing(self) -> None:
        """On reload every failing endpoint is tried again, even one whose error does not
        clear by itself: the operator may have fixed it."""
        for p in [p for p in self.entries.values() if p.state is EndpointState.FAILING]:
            del self.entries[p.endpoint.key]

    def endpoints(self) -> dict[Key, Endpoint]:
        return {key: p.endpoint for key, p in self.entries.items()}

    def in_state(self, state: EndpointState) -> list[Endpoint]:
        return [p.endpoint for p in self.entries.values() if p.state is state]
