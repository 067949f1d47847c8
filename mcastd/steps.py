"""Changes to what is served, carried out: a reload plan's steps and interfaces' changes.

`reload.plan` and `links.transition` decide; these functions do, on the server's parts
(`Parts`: its channels, its backlog, how it opens a socket) and the loop's selector. A
failure is a SocketSetupError for the caller to record; nothing here is fatal to the loop.
"""

from __future__ import annotations

import logging
import selectors
from collections.abc import Callable
from typing import Protocol

from mcastd import net
from mcastd.backlog import Backlog
from mcastd.channel import Channel
from mcastd.config import Config, Endpoint
from mcastd.errors import SocketSetupError
from mcastd.links import Down, Gone, LinkState, link_state, must_wait, transition
from mcastd.messages import MessageId, event
from mcastd.protocol import TokenBucket
from mcastd.reload import Close, Key, Open, Rejoin, Retune, Served, Step, Wait, plan, stop_key

Opener = Callable[[Endpoint], net.GroupSocket]


class Parts(Protocol):
    """What a change touches of the server (`Server` is one)."""

    config: Config
    total: TokenBucket | None
    channels: dict[Key, Channel]
    backlog: Backlog
    opener: Opener
    log: logging.Logger

    def add_channel(
        self,
        endpoint: Endpoint,
        group_socket: net.GroupSocket,
        selector: selectors.BaseSelector | None = None,
    ) -> Channel: ...


# -- interfaces -----------------------------------------------------------------------------


def recover(parts: Parts, selector: selectors.BaseSelector, now: float) -> None:
    """Serve what can be served now (`backlog.due`); re-join after down/up or re-creation.

    A poll once a second (no netlink socket needed, so the sandbox stays AF_INET/AF_INET6/
    AF_UNIX only): an interface change is acted on within about a second.
    """
    seen: dict[str | None, LinkState] = {}

    def state(endpoint: Endpoint) -> LinkState:
        if endpoint.interface not in seen:
            seen[endpoint.interface] = link_state(endpoint)
        return seen[endpoint.interface]

    for pending in parts.backlog.due(now, state):
        try:
            group_socket = parts.opener(pending.endpoint)
        except SocketSetupError as e:
            parts.backlog.failed_again(pending, e, now)
            continue
        parts.backlog.take(pending.endpoint.key)
        parts.add_channel(pending.endpoint, group_socket, selector)
    for channel in list(parts.channels.values()):
        if channel.link is not None:  # an interface is configured
            follow_link(parts, channel, state(channel.endpoint), selector)


def follow_link(
    parts: Parts, channel: Channel, link: LinkState, selector: selectors.BaseSelector
) -> None:
    """Act on what changed on the channel's interface since the last poll."""
    before = channel.link
    change = None if before is None else transition(before, link)
    if change is None:
        return
    iface = channel.endpoint.interface
    if type(change) is Gone or type(change) is Down:
        lost = channel.fields(message_id=MessageId.INTERFACE_LOST)
        what = "went away" if type(change) is Gone else "is down"
        channel.logger.warning("%s: interface %s %s", channel.name, iface, what, extra=lost)
    else:
        try:
            rejoin(parts, channel, channel.endpoint, selector)
        except SocketSetupError as e:
            channel.logger.error("%s: re-joining failed: %s", channel.name, e.message)
            return  # `link` stays as it was: the next poll tries again
        channel.logger.info(
            "%s: interface %s is up (index %d): re-joined",
            channel.name,
            iface,
            link.ifindex,
            extra=channel.fields(message_id=MessageId.GROUP_JOINED),
        )
    channel.link = link


def rejoin(
    parts: Parts, channel: Channel, endpoint: Endpoint, selector: selectors.BaseSelector
) -> None:
    """Join again on the endpoint's interface as it is now (raises SocketSetupError)."""
    old = channel.group_socket
    if not net.bound_to_interface(endpoint) or net.memberships(endpoint)[1] == old.ifindex:
        channel.group_socket = net.rejoin(old, endpoint)
        return
    # The socket is tied to the old interface index: it must be replaced, and the port
    # is ours (no SO_REUSEADDR), so the old one is closed first.
    selector.unregister(old.sock)
    net.close_group_socket(old)
    try:
        channel.group_socket = parts.opener(endpoint)
    except SocketSetupError:
        # No socket now: serve it again like a group waiting for its interface.
        del parts.channels[endpoint.key]
        parts.backlog.wait(endpoint)
        raise
    selector.register(channel.group_socket.sock, selectors.EVENT_READ, channel)


# -- reload ---------------------------------------------------------------------------------


def reload_plan(parts: Parts, new: Config) -> tuple[Step, ...]:
    """`reload.plan` from what the server serves and has in its backlog, to `new`.

    Every failing endpoint is tried again (`plan` opens it as new): the operator may have
    fixed what made it fail, even an error that does not clear by itself.
    """
    current = {
        key: Served(c.endpoint, c.stop_key, parts.config.reply_rate_total)
        for key, c in parts.channels.items()
    }
    absent = {e.interface for e in new.endpoints() if must_wait(e) and e.interface is not None}
    parts.backlog.forget_failing()
    return plan(current, parts.backlog.endpoints(), new, absent)


def carry_out_plan(
    parts: Parts, steps: tuple[Step, ...], selector: selectors.BaseSelector, now: float
) -> list[str]:
    """Every step, whatever fails; the errors, each said once (a group that cannot be opened
    is failing, as at start). Run with `parts.config` already the new config."""
    errors = []
    for step in steps:
        try:
            carry_out(parts, step, selector)
        except SocketSetupError as e:
            errors.append(str(e))
            if type(step) is Open:
                parts.backlog.fail(step.endpoint, e, now)  # said there, once
            else:
                parts.log.error("reload: %s", e, extra=event(MessageId.RELOAD_FAILED))
    return errors


def carry_out(parts: Parts, step: Step, selector: selectors.BaseSelector) -> None:
    """One step of a reload plan (raises SocketSetupError)."""
    if type(step) is Close:
        channel = parts.channels.pop(step.key, None)
        if channel is None:
            parts.backlog.take(step.key)
            return
        selector.unregister(channel.group_socket.sock)
        channel.close()
    elif type(step) is Open:
        parts.backlog.take(step.endpoint.key)
        parts.add_channel(step.endpoint, parts.opener(step.endpoint), selector)
    elif type(step) is Wait:
        parts.backlog.wait(step.endpoint)
    elif type(step) is Rejoin:
        channel = parts.channels[step.endpoint.key]
        rejoin(parts, channel, step.endpoint, selector)
        channel.link = None if step.endpoint.interface is None else link_state(step.endpoint)
        retune(parts, channel, step.endpoint)
    elif type(step) is Retune:
        retune(parts, parts.channels[step.endpoint.key], step.endpoint)


def retune(parts: Parts, channel: Channel, endpoint: Endpoint) -> None:
    """New settings on the open socket (hop limits) and in the channel (rules, defences)."""
    net.apply_ttl(channel.group_socket.sock, endpoint)
    channel.configure(endpoint, stop_key(parts.config, endpoint), parts.total)
    channel.logger.info(
        "%s now: interface %s, reply %s, ttl %d",
        channel.name,
        endpoint.interface or "the kernel's choice",
        endpoint.reply,
        endpoint.ttl,
        extra=channel.fields(),
    )
