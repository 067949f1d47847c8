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

from bench import bootstrap

VETH = ("mbench0", "mbench1")
NETNS_SCRIPT = bootstrap.REPO / "scripts" / "netns"


def links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]


def setup() -> None:
    """Loopback up with the IPv4 multicast route; a veth pair up for IPv6 groups."""
    extra = [name for name in links() if name != "lo"]
    if extra:
        raise SystemExit(f"bench: namespace is not fresh (has {', '.join(extra)}); refusing")
    subprocess.run([str(NETNS_SCRIPT), "local", *VETH], check=True)


def enter(module: str) -> None:
    """Return only once running as `python3 -m MODULE` inside a new network namespace of
    its own (`unshare --net`, as bootstrap.enter does for the main bench), set up."""
    if bootstrap.in_own_netns(module):
        setup()
        return
    if os.geteuid() != 0:
        print(f"{module}: run as root (it makes its own network namespace)", file=sys.stderr)
        raise SystemExit(2)
    # Debian's python, which has mcastd's apt dependencies, whatever `python3` is first
    # on PATH (a pyenv or venv one may lack python3-prometheus-client).
    system = bootstrap.SYSTEM_PYTHON
    python = system if Path(system).exists() else sys.executable
    bootstrap.reexec_in_netns(python, sys.argv[1:], module)
