"""`mcastd run --detach`: become a background daemon (python-daemon), for hosts without systemd.

The pidfile is both the lock that refuses a second copy and the pid an init script reads.
The groups are joined before forking, so that their errors still reach the terminal.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from mcastd.exitcodes import ExitCode, fail


def detach(
    pidfile_path: str,
    open_sockets: Callable[[], list[socket.socket] | None],
    serve: Callable[[], int],
) -> int:
    """Claim the pidfile, open the sockets, fork into the background and `serve` there.

    `open_sockets` returns the sockets to keep across the fork, or None when it failed (and
    said why); everything else is closed by python-daemon.
    """
    import daemon
    import daemon.pidfile

    pidfile = daemon.pidfile.TimeoutPIDLockFile(os.path.abspath(pidfile_path), acquire_timeout=0)
    holder = pidfile.read_pid()
    if holder is not None:
        if alive(holder):
            return fail(
                f"already running as pid {holder} (pidfile {pidfile_path})", ExitCode.UNAVAILABLE
            )
        pidfile.break_lock()  # left behind by a copy that was killed
    sockets = open_sockets()
    if sockets is None:
        return ExitCode.UNAVAILABLE
    context = daemon.DaemonContext(
        pidfile=pidfile, files_preserve=sockets, signal_map={}, umask=0o022
    )
    try:
        context.open()
    except Exception as e:
        return fail(f"cannot detach: {e}", ExitCode.UNAVAILABLE)
    try:
        return serve()
    finally:
        context.close()


def alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
