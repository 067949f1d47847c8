"""Fixtures shared by the suite: namespaces and daemons that clean up after themselves."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.logs import Records, recording
from tests.netns import Daemon, NetNS


@pytest.fixture
def netns() -> Iterator[NetNS]:
    if os.geteuid() != 0:
        pytest.fail("the network tests create namespaces and must run as root")
    ns = NetNS()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def journal() -> Iterator[Records]:
    """What the `mcastd` loggers log (INFO and up) during the test."""
    with recording() as records:
        yield records


DaemonFactory = Callable[..., Daemon]


@pytest.fixture
def start_daemon(netns: NetNS, tmp_path: Path) -> Iterator[DaemonFactory]:
    """start_daemon(config_text, args=(), ready=True) -> a running Daemon in `netns`."""
    started: list[Daemon] = []

    def start(config: str | None, args: Sequence[str] = (), ready: bool = True) -> Daemon:
        daemon = Daemon(netns, config, args, workdir=tmp_path)
        started.append(daemon)
        if ready:
            daemon.wait_for("READY=1")
        return daemon

    try:
        yield start
    finally:
        for daemon in started:
            daemon.close()
