"""Logging: the journal under systemd, plain stderr lines elsewhere, and a per-group line budget."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import TextIO

DAEMON_LOGGER = "mcastd"
SYSLOG_IDENTIFIER = "mcastd"


def group_logger(group: str) -> logging.Logger:
    """`mcastd.group.239.0.0.9`: one logger per group, so operators can filter on LOGGER=."""
    return logging.getLogger(f"{DAEMON_LOGGER}.group.{group}")


def stderr_is_journal(stream: TextIO, environ: dict[str, str] | os._Environ[str]) -> bool:
    """True when systemd connected `stream` to the journal (JOURNAL_STREAM is its dev:inode)."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_SOCKET = "/dev/log"


def journal_handler() -> logging.Handler | None:
    """systemd-python's JournalHandler (fields such as MESSAGE_ID), or None without it."""
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None  # a plain `pip install` (systemd-python is the optional extra [systemd])
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def setup_logging(level: str, stream: TextIO | None = None) -> logging.Handler:
    """Send the `mcastd` loggers to the journal when stderr goes there, else to stderr."""
    stream = sys.stderr if stream is None else stream
    handler = journal_handler() if stderr_is_journal(stream, os.environ) else None
    if handler is None:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return _install(handler, level)


def setup_detached_logging(level: str) -> logging.Handler:
    """After --detach stderr is gone: the journal if there is one, else syslog, else nothing."""
    handler = journal_handler() if os.path.exists(JOURNAL_SOCKET) else None
    if handler is None and os.path.exists(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        handler.setFormatter(logging.Formatter(f"{SYSLOG_IDENTIFIER}[%(process)d]: %(message)s"))
    if handler is None:
        handler = logging.NullHandler()
    return _install(handler, level)


def _install(handler: logging.Handler, level: str) -> logging.Handler:
    root = logging.getLogger(DAEMON_LOGGER)
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
    return handler


class LineBudget:
    """At most `per_second` lines in each one-second window; counts what it holds back.

    Pure: the caller passes `now`. `take` says whether a line may be written; when a new window
    starts, `take_suppressed` hands over how many lines the last windows held back.
    """

    __slots__ = ("per_second", "suppressed", "used", "window_start")

    def __init__(self, per_second: int = 20) -> None:
        self.per_second = per_second
        self.window_start = float("-inf")
        self.used = 0
        self.suppressed = 0

    def take(self, now: float) -> bool:
        if now - self.window_start >= 1.0:
            self.window_start = now
            self.used = 0
        if self.used < self.per_second:
            self.used += 1
            return True
        self.suppressed += 1
        return False

    def take_suppressed(self, now: float) -> int:
        """Lines held back, once their window is over (0 while it is still open)."""
        if self.suppressed and now - self.window_start >= 1.0:
            count, self.suppressed = self.suppressed, 0
            return count
        return 0
