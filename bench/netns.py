"""Set up the bench's own network namespace: loopback for IPv4 multicast, a veth pair for IPv6.

The set-up is `scripts/netns local` (the one recipe shared with the tests, the demo and the
autopkgtest): 224.0.0.0/4 routed to `lo`, so every IPv4 group datagram stays on loopback; a
veth pair whose both ends live in this namespace carries ff05::9 (the shipped config's second
group), because this kernel does not do IPv6 multicast on `lo`. Nothing leaves the namespace;
it vanishes when the last process in it exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VETH = ("mbench0", "mbench1")
# The flag a bench passes to itself once it runs inside its own namespace.
INSIDE = "--inside"
SYSTEM_PYTHON = "/usr/bin/python3"
NETNS_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "netns"


def links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]


def setup() -> None:
    """Loopback up with the IPv4 multicast route; a veth pair up for IPv6 groups."""
    extra = [name for name in links() if name != "lo"]
    if extra:
        raise SystemExit(f"bench: namespace is not fresh (has {', '.join(extra)}); refusing")
    subprocess.run([str(NETNS_SCRIPT), "local", *VETH], check=True)


def enter(module: str, inside: bool) -> int | None:
    """Run `python3 -m MODULE` again inside a new network namespace of its own (`unshare
    --net`) and return its exit status; None when already inside, after setting it up."""
    if os.geteuid() != 0:
        print(f"{module}: run as root (it makes its own network namespace)", file=sys.stderr)
        return 2
    if not inside:
        # Debian's python, which has mcastd's apt dependencies, whatever `python3` is first
        # on PATH (a pyenv or venv one may lack python3-prometheus-client).
        python = SYSTEM_PYTHON if Path(SYSTEM_PYTHON).exists() else sys.executable
        argv = ["unshare", "--net", python, "-m", module, *sys.argv[1:], INSIDE]
        return subprocess.run(argv, cwd=NETNS_SCRIPT.parent.parent, check=False).returncode
    setup()
    return None
