"""The exit codes of every command: one table, read by the code and by `--help` alike.

Codes above 2 follow sysexits.h, as systemd units and init scripts expect them.
"""

from __future__ import annotations

import sys
from enum import IntEnum

from mcastd.errors import ConfigError


class ExitCode(IntEnum):
    """What a command's exit status means; each member carries its `--help` line."""

    description: str

    def __new__(cls, code: int, description: str) -> ExitCode:
        member = int.__new__(cls, code)
        member._value_ = code
        member.description = description
        return member

    OK = 0, "success (for run: stopped by STOP, SIGTERM or SIGINT)"
    NO_REPLY = (
        1,
        "say: no reply within --wait; probe: an expected responder missing or over "
        "--max-loss, or (without --expect) no responder answered",
    )
    USAGE = 2, "bad command line"
    NOT_RUNNING = 3, "status: no running mcastd found (or none serves the groups asked for)"
    UNAVAILABLE = (
        69,
        "a group could not be set up (port in use, permission, kernel limit), no group could "
        "be served, another copy holds the pidfile; probe: cannot send or join; exporter: "
        "cannot listen",
    )
    SOFTWARE = 70, "internal error (a bug: please report it)"
    CONFIG = 78, "the configuration file is invalid"


def epilog() -> str:
    """The `exit codes:` section of every command's `--help`."""
    return "exit codes:\n" + "\n".join(f"  {c.value:<3} {c.description}" for c in ExitCode)


def fail(message: str, code: ExitCode) -> ExitCode:
    """Say what went wrong in one line on stderr, and return the exit code that goes with it."""
    print(f"mcastd: {message}", file=sys.stderr)
    return code


def config_failed(error: ConfigError) -> ExitCode:
    """Print every problem of an invalid file, one `FILE:LINE:COL: ...` line each; exit 78."""
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return ExitCode.CONFIG
