"""`mcastd run` and `mcastd check`: read the configuration, then serve it or summarise it."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Sequence

from mcastd import __version__, instance
from mcastd.config import Config, load, resolve_path, select
from mcastd.control import default_path
from mcastd.detach import detach
from mcastd.errors import ConfigError, SocketSetupError
from mcastd.exitcodes import ExitCode, config_failed
from mcastd.journal import DAEMON_LOGGER, setup_detached_logging, setup_logging
from mcastd.messages import MessageId, event
from mcastd.notify import Notifier, watchdog_interval
from mcastd.server import Server


def read_config(path: str | None, groups: Sequence[str] | None, port: int | None) -> Config:
    """The configuration at `path` (None: built-in), narrowed to `groups` and `port` if given."""
    return select(load(path), groups or (), port)


def check_main(args: argparse.Namespace) -> int:
    """`mcastd check`: one line per group, then the file and the number of sockets."""
    try:
        config = read_config(resolve_path(args.config), args.group, args.port)
    except ConfigError as e:
        return config_failed(e)
    for g in config.groups:
        s = g.settings
        print(
            f"{g.group} port{'s' if len(g.ports) > 1 else ''} {','.join(map(str, g.ports))}: "
            f"reply {s.reply}, ttl {s.ttl}, interface {s.interface or 'any'}, "
            f"log_datagrams {'on' if s.log_datagrams else 'off'}"
        )
    print(f"{config.source}: ok, {len(config.endpoints())} (group, port) to serve")
    return ExitCode.OK


def run_main(args: argparse.Namespace) -> int:
    """`mcastd run`: serve in the foreground (or detached) until stopped."""
    path = resolve_path(args.config)
    groups, port = args.group, args.port
    try:
        config = read_config(path, groups, port)
    except ConfigError as e:
        return config_failed(e)
    setup_logging(args.log_level)
    logging.getLogger(DAEMON_LOGGER).info(
        "mcastd %s starting with %s", __version__, config.source, extra=event(MessageId.STARTING)
    )
    name, control_path = control_place(args.name, args.control_socket, path, groups)
    server = Server(
        config,
        Notifier(),
        reload_config=lambda: read_config(path, groups, port),
        watchdog_interval=watchdog_interval(),
        control_path=control_path,
        instance=name,
    )
    if args.detach:

        def serve_detached() -> int:
            setup_detached_logging(args.log_level)  # stderr is gone now
            return serve(server)

        return detach(args.pidfile, lambda: open_sockets(server), serve_detached)
    if open_sockets(server) is None:
        return ExitCode.UNAVAILABLE
    return serve(server)


def control_place(
    name: str | None, control_socket: str | None, path: str | None, groups: Sequence[str] | None
) -> tuple[str, str | None]:
    """The daemon's name and its control socket (None: none could be had, and why is logged).

    Under systemd the unit's runtime directory holds it; started by hand, a directory of
    this user (mcastd.instance), under a name no other daemon there has.
    """
    unit_path = default_path()
    if unit_path is not None and control_socket is None:
        # Named as the units are (mcastd, mcastd@GROUP), whatever file they read.
        return name or instance.default_name(None, groups or ()), unit_path
    derived = instance.default_name(path, groups or ())
    if control_socket is not None:
        return name or derived, control_socket
    try:
        euid = os.geteuid()
        directory = instance.own_directory(euid, os.environ)
        chosen, socket_path = instance.claim(name or derived, name is not None, directory, euid)
    except SocketSetupError as e:
        logging.getLogger(DAEMON_LOGGER).warning("%s; `mcastd status` will not see this daemon", e)
        return name or derived, None
    logging.getLogger(DAEMON_LOGGER).info(
        "`mcastd status` shows this daemon as %s (%s)", chosen, socket_path
    )
    return chosen, socket_path


def setup_failed(error: SocketSetupError) -> ExitCode:
    logging.getLogger(DAEMON_LOGGER).error("%s", error, extra=event(MessageId.SETUP_FAILED))
    return ExitCode.UNAVAILABLE


def open_sockets(server: Server) -> list[socket.socket] | None:
    """Open the server's sockets; None (the error logged) if that failed."""
    try:
        server.open()
    except SocketSetupError as e:
        setup_failed(e)
        return None
    return server.sockets()


def serve(server: Server) -> int:
    try:
        server.run()
    except SocketSetupError as e:
        return setup_failed(e)
    return ExitCode.OK
