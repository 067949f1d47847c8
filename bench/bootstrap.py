"""Get into the bench's own venv, then into a network namespace of its own, by re-executing.

Stage 1 (host, network): make bench/.venv (system site packages, so mcastd's apt
dependencies are seen) with upstream `multicast` and matplotlib, re-exec inside it.
Stage 2 (host): re-exec under `unshare -n`; the namespace dies with the last process in it.
Stage 3 (namespace): the caller checks that the namespace really is a new one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV = BENCH_DIR / ".venv"
REQUIREMENTS = ("multicast==2.1.1", "matplotlib", "py-spy")
# Stamp file: the venv is reused only when it was made for exactly these requirements.
STAMP = VENV / "bench-requirements.txt"

# Set by the host stage to the inode of its own network namespace; the namespace stage
# refuses to send anything if its namespace is the same one.
HOST_NETNS_ENV = "MCASTD_BENCH_HOST_NETNS"
SYSTEM_PYTHON = "/usr/bin/python3"


def netns_id() -> str:
    return os.readlink("/proc/self/ns/net")


def in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv() -> Path:
    """Create or refresh bench/.venv; return its python."""
    python = VENV / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return python
    print(f"bench: making {VENV} ({', '.join(REQUIREMENTS)})", flush=True)
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        check=True,
    )
    STAMP.write_text(wanted)
    return python


def reexec(
    python: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    module: str = "bench",
) -> None:
    """Replace this process by `prefix python -m module argv` run from the repository root."""
    os.chdir(REPO)
    args = [*prefix, python, "-m", module, *argv]
    os.execvpe(args[0], args, env if env is not None else dict(os.environ))  # noqa: S606


def in_own_netns(name: str) -> bool:
    """True in the namespace stage (the host stage left its namespace's inode in the
    environment); refuses to go on if the namespace is still the host's."""
    host = os.environ.get(HOST_NETNS_ENV)
    if not host:
        return False
    if netns_id() == host:
        raise SystemExit(f"{name}: refusing to run: still in the host's network namespace")
    return True


def reexec_in_netns(python: str, argv: list[str], module: str = "bench") -> None:
    """Replace this process by `python -m module argv` under `unshare --net`."""
    env = dict(os.environ)
    env[HOST_NETNS_ENV] = netns_id()
    reexec(python, argv, env, prefix=("unshare", "--net", "--"), module=module)


def enter(argv: list[str], use_venv: bool) -> None:
    """Return only once running in the right interpreter inside a new network namespace."""
    if in_own_netns("bench"):
        return
    if use_venv and not in_venv():
        reexec(str(ensure_venv()), argv)
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (it makes a network namespace with unshare -n)")
    # Without the venv: Debian's python, which has mcastd's apt dependencies.
    python = sys.executable if use_venv or not Path(SYSTEM_PYTHON).exists() else SYSTEM_PYTHON
    reexec_in_netns(python, argv)
