"""Set up the bench's own network namespace: loopback for IPv4 multicast, a veth pair for IPv6.

IPv4: 224.0.0.0/4 is routed to `lo`, so every group datagram stays on loopback.
IPv6: this kernel does not do IPv6 multicast on `lo`, so a veth pair whose both ends live
in this namespace carries ff05::9 (the shipped config's second group). Nothing leaves the
namespace; it vanishes when the last process in it exits.
"""

from __future__ import annotations

import subprocess

VETH = ("mbench0", "mbench1")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def _sysctl(key: str, value: str) -> None:
    with open("/proc/sys/" + key.replace(".", "/"), "w", encoding="ascii") as f:
        f.write(value)


def links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], check=True, capture_output=True, text=True)
    return [line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()]


def setup() -> None:
    """Loopback up with the IPv4 multicast route; a veth pair up for IPv6 groups."""
    extra = [name for name in links() if name != "lo"]
    if extra:
        raise SystemExit(f"bench: namespace is not fresh (has {', '.join(extra)}); refusing")
    _ip("link", "set", "lo", "up")
    _ip("route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
    _ip("link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1])
    for name in VETH:
        # no duplicate address detection: link-local addresses usable at once
        _sysctl(f"net.ipv6.conf.{name}.accept_dad", "0")
        _ip("link", "set", name, "up")
