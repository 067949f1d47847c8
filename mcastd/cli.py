"""Command line: argparse and the dispatch to each command's `main(args) -> int`; nothing else.

A new command is one block in `build_parser` and one entry in COMMANDS, pointing to a
`main(args)` in the command's own module. The exit codes are in mcastd.exitcodes.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from mcastd import __version__
from mcastd.config import DEFAULT_GROUPS, DEFAULT_PORT, canonical_group
from mcastd.control import RUNTIME_ROOT
from mcastd.exitcodes import ExitCode, epilog, fail
from mcastd.exporterconfig import DEFAULT_PATH as EXPORTER_CONFIG
from mcastd.exporterconfig import is_listen
from mcastd.instance import MAX_NAME, valid_name
from mcastd.journal import DAEMON_LOGGER

LOG_LEVELS = ("debug", "info", "warning", "error")


def group_argument(text: str) -> str:
    group = canonical_group(text)
    if group is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a multicast address")
    return group


def name_argument(text: str) -> str:
    if not valid_name(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a name (letters, digits, _.@:,+- ; at most {MAX_NAME})"
        )
    return text


def listen_argument(text: str) -> str:
    if not is_listen(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not ADDRESS:PORT ([ADDRESS]:PORT for IPv6)")
    return text


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
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mcastd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config_help = "configuration file (default: $MCASTD_CONFIG, then /etc/mcastd.yaml)"

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            epilog=epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def config_options(sub: argparse.ArgumentParser, group_help: str) -> None:
        sub.add_argument("--config", metavar="FILE", help=config_help)
        sub.add_argument(
            "--group", action="append", type=group_argument, metavar="GROUP", help=group_help
        )
        sub.add_argument(
            "--port",
            type=port_argument,
            metavar="PORT",
            help="only this port (with --group: exactly GROUP:PORT, as upstream's "
            "`HEAR --group G --port P`; alone: every group on it)",
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
        help="read-only status socket for `mcastd status` (default: "
        "$RUNTIME_DIRECTORY/control.sock under systemd, else NAME.sock in /run/mcastd as root, "
        "$XDG_RUNTIME_DIR/mcastd otherwise)",
    )
    run.add_argument(
        "--name",
        type=name_argument,
        metavar="NAME",
        help="the name `mcastd status` shows (default: the config file's name, "
        "with @GROUP for --group; a free NAME-2 ... if another daemon has it)",
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

    def destination_options(sub: argparse.ArgumentParser, what: str) -> None:
        sub.add_argument(
            "--group",
            type=group_argument,
            default=DEFAULT_GROUPS[0],
            help=f"group to {what} (default: {DEFAULT_GROUPS[0]})",
        )
        sub.add_argument(
            "--port",
            type=port_argument,
            default=DEFAULT_PORT,
            help=f"port (default: {DEFAULT_PORT})",
        )

    say_cmd = command("say", "send a message to a group and print the replies")
    destination_options(say_cmd, "send to")
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
    say_cmd.add_argument(
        "-m",
        "--message",
        dest="message_words",
        nargs="+",
        default=[],
        metavar="TEXT",
        help="the words to send, as upstream's `SAY -m` (same as MESSAGE)",
    )
    say_cmd.add_argument("message", nargs="*", metavar="MESSAGE", help="the words to send")

    probe = command("probe", "ask which hosts hear a group: loss, RTT, hops (docs/probe.md)")
    destination_options(probe, "probe")
    probe.add_argument(
        "-c", "--count", type=int, metavar="N", help="probes (default 5; 3 per TTL with --hops)"
    )
    probe.add_argument(
        "-i",
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="between probes (default: 1; below 0.2 only for root)",
    )
    probe.add_argument(
        "-W",
        "--wait",
        type=wait_argument,
        default=1.0,
        metavar="SECONDS",
        help="time a reply may take; later ones are late (default: 1)",
    )
    probe.add_argument("--ttl", type=ttl_argument, default=1, help="TTL / hop limit (default: 1)")
    probe.add_argument(
        "--hops",
        type=ttl_argument,
        nargs="?",
        const=8,
        metavar="MAX",
        help="sweep the TTL from 1 to MAX (default 8) and show each responder's distance",
    )
    probe.add_argument("--interface", metavar="IF", help="interface name or local address")
    probe.add_argument("--source", metavar="ADDRESS", help="send from this address (SSM)")
    probe.add_argument(
        "--join", action="store_true", help="join the group to hear responders with reply: group"
    )
    probe.add_argument(
        "--expect", metavar="FILE|A,B", help="expected responders: a file or a comma list"
    )
    probe.add_argument(
        "--max-loss",
        type=float,
        default=100.0,
        metavar="PERCENT",
        help="highest loss of a responder that still passes (default: 100, any reply)",
    )
    probe.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    probe.add_argument("--json", action="store_true", help="one JSON document (docs/probe.md)")

    status = command("status", "show what each running mcastd hears, per (group, port)")
    status.add_argument("--json", action="store_true", help="machine-readable (docs/status.md)")
    status.add_argument(
        "--format",
        choices=("text", "json", "prometheus"),
        default="text",
        help="text (default), json (as --json), or prometheus: the text format node_exporter's "
        "textfile collector reads (docs/monitoring.md)",
    )
    status.add_argument(
        "--output", metavar="FILE", help="with --format prometheus: replace FILE atomically"
    )
    status.add_argument(
        "--socket",
        action="append",
        default=[],
        metavar="PATH",
        help=f"ask this control socket (repeatable; default: all under {RUNTIME_ROOT}, "
        "and $XDG_RUNTIME_DIR/mcastd when not root)",
    )
    status.add_argument("--runtime-dir", action="append", default=[], help=argparse.SUPPRESS)
    status.add_argument("groups", nargs="*", type=group_argument, metavar="GROUP")

    exporter_cmd = command(
        "exporter", "serve Prometheus metrics of every mcastd here, and probe modules"
    )
    exporter_cmd.add_argument(
        "--config",
        metavar="FILE",
        help=f"exporter configuration (default: {EXPORTER_CONFIG} if it exists)",
    )
    exporter_cmd.add_argument(
        "--listen",
        action="append",
        type=listen_argument,
        metavar="ADDRESS:PORT",
        help="listen here (repeatable) unless socket-activated (default: the file's listen:)",
    )
    exporter_cmd.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", metavar="LEVEL", help="as for run"
    )
    return parser


Command = Callable[[argparse.Namespace], int]

# Each command's module, and its `main`, is imported only when that command runs: the daemon
# (`run`) then never loads what only the exporter needs (python3-prometheus-client: about
# 6 MiB of memory and 40 ms of start-up in every mcastd process).
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("mcastd.launch", "run_main"),
    "check": ("mcastd.launch", "check_main"),
    "say": ("mcastd.client", "main"),
    "status": ("mcastd.status", "main"),
    "probe": ("mcastd.prober", "main"),
    "exporter": ("mcastd.exporter", "main"),
}


def command(name: str) -> Command:
    """The `main(args) -> int` of command `name`."""
    module, function = COMMANDS[name]
    found: Command = getattr(importlib.import_module(module), function)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return command(args.command)(args)
    except KeyboardInterrupt:
        return ExitCode.OK  # Ctrl-C outside the server loop (e.g. during `say`)
    except BrokenPipeError:
        # The reader went away (`mcastd status --json | head`): nothing more to say. What
        # is still buffered would fail again at exit, so stdout now goes nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as e:
        logging.getLogger(DAEMON_LOGGER).debug("internal error", exc_info=True)
        return fail(f"internal error: {type(e).__name__}: {e}", ExitCode.SOFTWARE)
    finally:
        logging.shutdown()
