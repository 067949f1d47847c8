"""What a daemon is called, and where its control socket lives when systemd does not say.

Under systemd the unit's RuntimeDirectory= (/run/mcastd/<unit>/) holds `control.sock`. A
daemon started by hand (`mcastd run`, `--detach`) puts `<name>.sock` in a directory of its
user: /run/mcastd as root, $XDG_RUNTIME_DIR/mcastd otherwise (a private /tmp/mcastd-<uid>
when that is unset, as in `su` sessions). `mcastd status` looks in the same places, so it
finds both kinds. The name is what `mcastd status` and the exporter show.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mcastd.control import RUNTIME_ROOT, listening
from mcastd.errors import SocketSetupError, strerror

DEFAULT_NAME = "mcastd"
# A name is one path component: letters, digits and the characters of groups and unit names.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@:,+-]*")
# Long enough for a few groups; the socket path must stay under AF_UNIX's 108 bytes.
MAX_NAME = 64
# A hand-started daemon whose name is taken tries <name>-2 ... <name>-<MAX_SUFFIX>.
MAX_SUFFIX = 99
SOCKET_SUFFIX = ".sock"


def valid_name(text: str) -> bool:
    return len(text) <= MAX_NAME and NAME_PATTERN.fullmatch(text) is not None


def default_name(config_path: str | None, groups: Sequence[str]) -> str:
    """`mcastd`, or the config file's stem (`lab` for lab.yaml); `@groups` for --group, as
    the template unit mcastd@GROUP is named."""
    base = DEFAULT_NAME
    if config_path is not None:
        stem = re.sub(r"[^A-Za-z0-9_.@:,+-]", "_", Path(config_path).stem).lstrip("_.-@:,+")
        base = stem or DEFAULT_NAME
    name = f"{base}@{','.join(groups)}" if groups else base
    if len(name) > MAX_NAME:
        # Many groups: keep the start readable and the whole distinct.
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}-{digest}"
    return name


def own_directory(euid: int, environ: Mapping[str, str]) -> str:
    """Where a hand-started daemon of this user puts its control socket."""
    if euid == 0:
        return RUNTIME_ROOT
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(runtime):
        return os.path.join(runtime, DEFAULT_NAME)
    return os.path.join(tempfile.gettempdir(), f"{DEFAULT_NAME}-{euid}")


def search_directories(euid: int, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Where `mcastd status` looks: the units' /run/mcastd, and this user's own directory."""
    own = own_directory(euid, environ)
    return (RUNTIME_ROOT,) if own == RUNTIME_ROOT else (RUNTIME_ROOT, own)


def candidates(name: str, explicit: bool) -> list[str]:
    """Names to try in order: an explicit --name only itself, a derived one then -2, -3 ..."""
    if explicit:
        return [name]
    return [name] + [f"{name[: MAX_NAME - 3]}-{n}" for n in range(2, MAX_SUFFIX + 1)]


def make_directory(path: str, euid: int) -> None:
    """Create the socket directory if needed; a user's own one must be private and theirs.

    /tmp is shared: a directory someone else made there could hand them our socket.
    """
    mode = 0o755 if path == RUNTIME_ROOT else 0o700
    try:
        os.makedirs(path, mode=mode, exist_ok=True)
        info = os.lstat(path)
    except OSError as e:
        code = e.errno or errno.EINVAL
        raise SocketSetupError(f"control socket directory {path}", code, strerror(code)) from e
    if path == RUNTIME_ROOT:
        return
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != euid or info.st_mode & 0o077:
        raise SocketSetupError(
            f"control socket directory {path}",
            errno.EPERM,
            "not a private directory of this user (mode 0700): remove it or give --control-socket",
        )


def in_use(directory: str, name: str) -> bool:
    """Whether another daemon has this name: a live `<name>.sock`, or a unit's runtime
    directory /run/mcastd/<name>/ (it exists while the unit runs)."""
    if os.path.isdir(os.path.join(directory, name)):
        return True
    return listening(os.path.join(directory, name + SOCKET_SUFFIX)) is True


def claim(name: str, explicit: bool, directory: str, euid: int) -> tuple[str, str]:
    """(name, socket path) for a hand-started daemon: the first free candidate name in its
    user's `directory`. Raises SocketSetupError if the directory is unusable or none is free."""
    make_directory(directory, euid)
    for candidate in candidates(name, explicit):
        if not in_use(directory, candidate):
            return candidate, os.path.join(directory, candidate + SOCKET_SUFFIX)
    raise SocketSetupError(
        f"control socket {os.path.join(directory, name + SOCKET_SUFFIX)}",
        errno.EADDRINUSE,
        "another mcastd has this name: give another --name",
    )
