"""Command line: argparse, the exit-code table, and nothing else."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from mcastd import __version__
from mcastd.client import say
from mcastd.config import (
    DEFAULT_GROUPS,
    DEFAULT_PORT,
    Config,
    Endpoint,
    Settings,
    canonical_group,
    format_address,
    load,
    read_key,
    resolve_path,
    select,
)
from mcastd.control import RUNTIME_ROOT, default_path
from mcastd.errors import ConfigError, SocketSetupError
from mcastd.journal import DAEMON_LOGGER, setup_detached_logging, setup_logging
from mcastd.messages import MessageId, event
from mcastd.notify import Notifier, watchdog_interval
from mcastd.server import Server
from mcastd.status import gather, only_groups, render_json, render_text
from mcastd.stopauth import sign

# sysexits.h, as systemd units and init scripts expect them.
EXIT_OK = 0
EXIT_NO_REPLY = 1  # `say` heard nothing
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_NOT_RUNNING = 3  # `status`: no daemon answered (as `systemctl status` does)
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: a socket could not be set up, or already running
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug in mcastd
EXIT_CONFIG = 78  # EX_CONFIG: the configuration file is wrong

EXIT_CODES = """exit codes:
  0   success (for run: stopped by STOP, SIGTERM or SIGINT)
  1   say: no reply within --wait
  2   bad command line
  3   status: no running mcastd found (or none serves the groups asked for)
  69  a group could not be bound or joined, or another copy holds the pidfile
  70  internal error (a bug: please report it)
  78  the configuration file is invalid"""

LOG_LEVELS = ("debug", "info", "warning", "error")


def fail(message: str) -> None:
    print(f"mcastd: {message}", file=sys.stderr)


def group_argument(text: str) -> str:
    group = canonical_group(text)
    if group is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multicast address")
    return group


def port_argument(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


def ttl_argument(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TTL (0-255)")
    return int(text)


def wait_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0-3600)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcastd",
        description="Listen on IP multicast groups and answer what is heard (HEAR protocol).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mcastd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config_help = "configuration file (default: $MCASTD_CONFIG, then /etc/mcastd.yaml)"

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def config_options(sub: argparse.ArgumentParser, group_help: str) -> None:
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.add_argument(
            "--group", action="append", type=group_argument, metavar="GROUP", help=group_help
        )

    run = command("run", "serve the configured groups in the foreground")
    config_options(
        run, "serve only this group (repeatable); unlisted groups get the file's defaults"
    )
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        metavar="LEVEL",
        help=f"one of {', '.join(LOG_LEVELS)} (default: info)",
    )
    run.add_argument(
        "--control-socket",
        metavar="PATH",
        help="read-only status socket for `mcastd status` "
        "(default: $RUNTIME_DIRECTORY/control.sock under systemd, else none)",
    )
    run.add_argument(
        "--detach",
        action="store_true",
        help="become a background daemon (for hosts without systemd)",
    )
    run.add_argument(
        "--pidfile",
        metavar="FILE",
        default="/run/mcastd.pid",
        help="with --detach: lock and pid file (default: /run/mcastd.pid)",
    )

    check = command("check", "validate the configuration and summarise it")
    config_options(check, "check only what `run --group GROUP` would serve")

    say_cmd = command("say", "send a message to a group and print the replies")
    say_cmd.add_argument(
        "--group",
        type=group_argument,
        default=DEFAULT_GROUPS[0],
        help=f"group to send to (default: {DEFAULT_GROUPS[0]})",
    )
    say_cmd.add_argument(
        "--port", type=port_argument, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})"
    )
    say_cmd.add_argument("--ttl", type=ttl_argument, default=1, help="TTL / hop limit (default: 1)")
    say_cmd.add_argument("--interface", metavar="IF", help="interface name or local address")
    say_cmd.add_argument(
        "--wait",
        type=wait_argument,
        default=1.0,
        metavar="SECONDS",
        help="how long to listen for replies (default: 1)",
    )
    say_cmd.add_argument(
        "--stop",
        action="store_true",
        help="send STOP (instead of MESSAGE); authenticated when --key-file is given",
    )
    say_cmd.add_argument(
        "--key-file", metavar="FILE", help="with --stop: the key named by the group's stop.key_file"
    )
    say_cmd.add_argument("message", nargs="*", metavar="MESSAGE", help="the words to send")

    status = command("status", "show what each running mcastd hears, per (group, port)")
    status.add_argument("--json", action="store_true", help="machine-readable (docs/status.md)")
    status.add_argument(
        "--socket",
        action="append",
        default=[],
        metavar="PATH",
        help=f"ask this control socket (repeatable; default: all under {RUNTIME_ROOT})",
    )
    status.add_argument("--runtime-dir", default=RUNTIME_ROOT, help=argparse.SUPPRESS)
    status.add_argument("groups", nargs="*", type=group_argument, metavar="GROUP")
    return parser


def read_config(path: str | None, groups: Sequence[str] | None) -> Config:
    config = load(path)
    return select(config, groups) if groups else config


def report_config_error(error: ConfigError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return EXIT_CONFIG


def cmd_check(args: argparse.Namespace) -> int:
    path = resolve_path(args.config)
    try:
        config = read_config(path, args.group)
    except ConfigError as e:
        return report_config_error(e)
    for g in config.groups:
        s = g.settings
        print(
            f"{g.group} port{'s' if len(g.ports) > 1 else ''} {','.join(map(str, g.ports))}: "
            f"reply {s.reply}, ttl {s.ttl}, interface {s.interface or 'any'}, "
            f"log_datagrams {'on' if s.log_datagrams else 'off'}"
        )
    print(f"{config.source}: ok, {len(config.endpoints())} (group, port) to serve")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    path = resolve_path(args.config)
    groups = args.group
    try:
        config = read_config(path, groups)
    except ConfigError as e:
        return report_config_error(e)
    setup_logging(args.log_level)
    log = logging.getLogger(DAEMON_LOGGER)
    log.info(
        "mcastd %s starting with %s",
        __version__,
        config.source,
        extra=event(MessageId.STARTING),
    )
    server = Server(
        config,
        Notifier(),
        reload_config=lambda: read_config(path, groups),
        watchdog_interval=watchdog_interval(),
        control_path=args.control_socket or default_path(),
        instance=f"mcastd@{','.join(groups)}" if groups else "mcastd",
    )
    if args.detach:
        return run_detached(server, args.pidfile, args.log_level)
    if not open_sockets(server):
        return EXIT_UNAVAILABLE
    return serve(server)


def setup_failed(error: SocketSetupError) -> int:
    logging.getLogger(DAEMON_LOGGER).error("%s", error, extra=event(MessageId.SETUP_FAILED))
    return EXIT_UNAVAILABLE


def open_sockets(server: Server) -> bool:
    try:
        server.open()
    except SocketSetupError as e:
        setup_failed(e)
        return False
    return True


def serve(server: Server) -> int:
    try:
        server.run()
    except SocketSetupError as e:
        return setup_failed(e)
    return EXIT_OK


def run_detached(server: Server, pidfile_path: str, level: str) -> int:
    """Daemonise with python-daemon; the pidfile lock refuses a second copy."""
    import daemon
    import daemon.pidfile

    pidfile = daemon.pidfile.TimeoutPIDLockFile(os.path.abspath(pidfile_path), acquire_timeout=0)
    holder = pidfile.read_pid()
    if holder is not None:
        if _alive(holder):
            fail(f"already running as pid {holder} (pidfile {pidfile_path})")
            return EXIT_UNAVAILABLE
        pidfile.break_lock()  # left behind by a copy that was killed
    if not open_sockets(server):  # before forking, so that errors reach the terminal
        return EXIT_UNAVAILABLE
    sockets = [c.listener.sock for c in server.channels.values()]
    if server.control is not None:
        sockets.append(server.control.sock)
    context = daemon.DaemonContext(
        pidfile=pidfile, files_preserve=sockets, signal_map={}, umask=0o022
    )
    try:
        context.open()
    except Exception as e:
        fail(f"cannot detach: {e}")
        return EXIT_UNAVAILABLE
    try:
        setup_detached_logging(level)
        return serve(server)
    finally:
        context.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmd_say(args: argparse.Namespace) -> int:
    settings = Settings(ttl=args.ttl, interface=args.interface)
    endpoint = Endpoint(args.group, args.port, settings)
    if args.stop and args.key_file:
        try:
            key = read_key(args.key_file)
        except ConfigError as e:
            fail(str(e))
            return EXIT_CONFIG
        message = sign(key, args.group, args.port, time.time()).encode()
    elif args.stop:
        message = b"STOP"
    elif args.message:
        message = " ".join(args.message).encode("utf-8", errors="surrogateescape")
    else:
        fail("say: give a MESSAGE, or --stop")
        return EXIT_USAGE
    replies = 0
    try:
        for sender, data in say(endpoint, message, args.wait):
            text = data.decode("utf-8", errors="replace")
            print(f"{format_address(*sender)} {text}", flush=True)
            replies += 1
    except SocketSetupError as e:
        fail(str(e))
        return EXIT_UNAVAILABLE
    return EXIT_OK if replies else EXIT_NO_REPLY


def cmd_status(args: argparse.Namespace) -> int:
    documents, problems = gather(args.socket, args.runtime_dir)
    for problem in problems:
        fail(problem)
    shown = only_groups(documents, args.groups)
    if args.json:
        print(render_json(shown))
    elif shown:
        print(render_text(shown))
    if not documents:
        if not problems:
            fail("no running mcastd found")
        return EXIT_NOT_RUNNING
    if not shown:
        fail(f"no running mcastd serves {', '.join(args.groups)}")
        return EXIT_NOT_RUNNING
    return EXIT_OK


COMMANDS = {"run": cmd_run, "check": cmd_check, "say": cmd_say, "status": cmd_status}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C outside the server loop (e.g. during `say`)
    except Exception as e:
        logging.getLogger(DAEMON_LOGGER).debug("internal error", exc_info=True)
        fail(f"internal error: {type(e).__name__}: {e}")
        return EXIT_SOFTWARE
    finally:
        logging.shutdown()
