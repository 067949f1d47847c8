"""Fixtures of the network tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import pytest

from tests.hosts import Daemons
from tests.netns import NetNS


class Site(NamedTuple):
    """One namespace and the daemons started in it (closed, then deleted, after the test)."""

    netns: NetNS
    daemons: Daemons


@pytest.fixture
def site() -> Iterator[Site]:
    netns = NetNS("mcastd-h")
    daemons = Daemons()
    try:
        yield Site(netns, daemons)
    finally:
        daemons.close()
        netns.delete()
