"""IP address text as mcastd handles it: which family, multicast groups, SSM, host:port.

The one place that knows how to tell IPv4 text from IPv6 text and whether a text is an address
at all, so that config, net, protocol and the CLI agree.
"""

from __future__ import annotations

import ipaddress
import socket

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Source-specific multicast ranges (RFC 4607): joined per (source, group) only.
SSM_RANGES = (ipaddress.ip_network("232.0.0.0/8"), ipaddress.ip_network("ff30::/12"))


def as_address(text: str) -> Address | None:
    """The IP address that `text` is exactly, or None: the one "is this an address" test."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_ipv6(address: str) -> bool:
    """Whether the address text (a group, a source, a local address) is IPv6.

    For text that is already an address, a colon is the whole test: IPv4 text never has one and
    IPv6 text always does (also with a `%zone`); it is on the per-datagram path, so no parsing.
    """
    return ":" in address


def family_of(address: str) -> socket.AddressFamily:
    """AF_INET6 for IPv6 address text, AF_INET for IPv4."""
    return socket.AF_INET6 if is_ipv6(address) else socket.AF_INET


def format_address(host: str, port: int) -> str:
    """`239.0.0.9:59259`, `[ff05::9]:59259`: an address and port as operators write them."""
    return f"[{host}]:{port}" if is_ipv6(host) else f"{host}:{port}"


def canonical_address(text: str) -> str | None:
    """`10.0.0.1`, `fd00::1`: an address as the kernel reports a sender, None if not one."""
    address = as_address(text.strip())
    return None if address is None else str(address)


def canonical_group(text: str) -> str | None:
    """The canonical text of a multicast address, or None if `text` is not one."""
    address = as_address(text.strip())
    return str(address) if address is not None and address.is_multicast else None


def is_ssm(group: str) -> bool:
    """Whether a group address is in a source-specific range (232.0.0.0/8, ff3x::)."""
    address = as_address(group)
    return address is not None and any(
        address in r for r in SSM_RANGES if r.version == address.version
    )


def family_conflict(group: str, interface: str) -> str | None:
    """Why `interface` cannot carry `group` when it is a local address of the other family."""
    address = as_address(interface)
    if address is None:
        return None  # an interface name: the kernel serves either family on it
    group_version = 6 if is_ipv6(group) else 4
    if address.version == group_version:
        return None
    return (
        f"{interface} is an IPv{address.version} address but {group} is an IPv{group_version} group"
    )
