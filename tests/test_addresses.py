"""addresses: the one family test, the one "is this an address" test, groups, SSM, host:port."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.addresses import (
    as_address,
    canonical_address,
    canonical_group,
    family_conflict,
    family_of,
    format_address,
    is_ipv6,
    is_ssm,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("239.0.0.9", "239.0.0.9"),
        (" 239.0.0.9\n", "239.0.0.9"),  # as typed on a command line
        ("FF05:0::0009", "ff05::9"),
        ("224.0.0.1", "224.0.0.1"),
        ("10.0.0.1", None),  # unicast
        ("fe80::1", None),
        ("239.0.0.256", None),
        ("eth0", None),
        ("", None),
    ],
)
def test_canonical_group(text: str, expected: str | None):
    assert canonical_group(text) == expected


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("232.0.0.0", True),
        ("232.255.255.255", True),
        ("231.255.255.255", False),
        ("233.0.0.0", False),
        ("ff3e::8000:1", True),
        ("ff32::1", True),
        ("ff05::9", False),
        ("ff02::1", False),
        ("not an address", False),
    ],
)
def test_is_ssm(group: str, expected: bool):
    assert is_ssm(group) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
        ("2001:DB8::1", "2001:db8::1"),
        (" 10.0.0.1", None),  # exactly an address: an interface name may not have spaces
        ("eth0", None),
        ("10.0.0.0/8", None),
    ],
)
def test_as_address(text: str, expected: str | None):
    address = as_address(text)
    assert (None if address is None else str(address)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1"),
        (" fd77::0002 ", "fd77::2"),  # surrounding white space: a roster line's word
        ("FE80::1%eth0", "fe80::1%eth0"),
        ("eth0", None),
        ("10.0.0.0/8", None),
    ],
)
def test_canonical_address(text: str, expected: str | None):
    assert canonical_address(text) == expected


def test_format_address():
    assert format_address("239.0.0.9", 59259) == "239.0.0.9:59259"
    assert format_address("ff05::9", 1) == "[ff05::9]:1"
    assert format_address("fe80::1%veth0", 2) == "[fe80::1%veth0]:2"


@given(st.ip_addresses())
def test_family_agrees_with_ipaddress_for_every_address(address: ipaddress._BaseAddress):
    text = str(address)
    assert is_ipv6(text) is (address.version == 6)
    assert family_of(text) == (socket.AF_INET6 if address.version == 6 else socket.AF_INET)
    assert as_address(text) == address


@pytest.mark.parametrize(
    ("group", "interface", "expected"),
    [
        ("239.0.0.9", "eth0", None),
        ("239.0.0.9", "192.0.2.1", None),
        ("ff05::9", "fe80::1", None),
        ("239.0.0.9", "fe80::1", "fe80::1 is an IPv6 address but 239.0.0.9 is an IPv4 group"),
        ("ff05::9", "192.0.2.1", "192.0.2.1 is an IPv4 address but ff05::9 is an IPv6 group"),
    ],
)
def test_family_conflict(group: str, interface: str, expected: str | None):
    assert family_conflict(group, interface) == expected
