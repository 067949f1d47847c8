"""Typed errors that carry what the operator needs to fix the problem."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a configuration file, located by key path and line:col (1-based)."""

    filename: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.filename}:{self.line}:{self.col}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration that cannot be used; lists every problem found in it."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = tuple(problems)


class SocketSetupError(Exception):
    """A (group, port) that could not be bound or joined; `errno` is the kernel's answer."""

    def __init__(self, where: str, errno: int, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.errno = errno
        self.message = message


def strerror(code: int) -> str:
    """The C library's text for an errno, lower-cased like the rest of our messages."""
    text = os.strerror(code)
    return text[:1].lower() + text[1:]
