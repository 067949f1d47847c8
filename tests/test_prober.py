"""`mcastd probe`'s edge: options to settings, the roster file, Ctrl-C, errno to message.

Nothing here sends a datagram: the probes themselves are tested in tests/net/test_probe.py.
"""

from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

import pytest

from mcastd.cli import build_parser
from mcastd.probe import ProbeSettings, RosterError
from mcastd.prober import Interrupt, load_roster, send_error, settings_from


def test_options_become_settings(tmp_path: Path):
    roster = tmp_path / "fleet"
    roster.write_text("10.0.0.5 web1\n")
    argv = ["probe", "--group", "ff05::0009", "-c", "7", "-i", "0.5", "-W", "2", "--hops"]
    argv += ["--interface", "eth0", "--source", "fd00::1", "--join", "--expect", str(roster)]
    args = build_parser().parse_args([*argv, "--max-loss", "25"])
    settings = settings_from(args)
    assert settings == ProbeSettings(
        group="ff05::9",
        port=59259,
        count=7,
        interval=0.5,
        wait=2.0,
        ttl=1,
        hops=8,
        interface="eth0",
        source="fd00::1",
        join=True,
        roster=settings.roster,
        max_loss=0.25,
    )
    assert settings.roster is not None
    assert settings.roster.entries == (("10.0.0.5", "web1"),)


def test_defaults_are_ping_like():
    settings = settings_from(build_parser().parse_args(["probe"]))
    assert settings == ProbeSettings("239.0.0.9", max_loss=1.0)


def test_expect_is_a_file_if_one_has_that_name_else_a_list(tmp_path: Path):
    assert load_roster("10.0.0.5,10.0.0.6").addresses == ("10.0.0.5", "10.0.0.6")
    path = tmp_path / "r"
    path.write_text("# none yet\n")
    with pytest.raises(RosterError, match=f"^{path}: no addresses$"):
        load_roster(str(path))
    path.write_bytes(b"\xff\n")
    with pytest.raises(RosterError, match="cannot read"):
        load_roster(str(path))


def test_ctrl_c_sets_the_flag_wakes_the_poll_and_is_undone():
    before = signal.getsignal(signal.SIGINT)
    with Interrupt() as interrupt:
        assert not interrupt.is_set
        os.kill(os.getpid(), signal.SIGINT)
        assert interrupt.is_set
        assert os.read(interrupt.fd, 16)  # the byte that wakes poll()
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize(
    ("settings", "code", "message"),
    [
        (
            ProbeSettings("239.0.0.9"),
            errno.ENETUNREACH,
            "239.0.0.9:59259: cannot send: no route for multicast "
            "(ip route add 224.0.0.0/4 dev IF, or --interface)",
        ),
        (
            ProbeSettings("239.0.0.9", source="10.9.9.9"),
            errno.EADDRNOTAVAIL,
            "239.0.0.9:59259: cannot send from 10.9.9.9: not an address of this host",
        ),
        (
            ProbeSettings("ff05::9", port=5000),
            errno.EPERM,
            "[ff05::9]:5000: cannot send: operation not permitted",
        ),
    ],
)
def testsend_errors_say_what_to_do(settings: ProbeSettings, code: int, message: str):
    error = send_error(settings, code)
    assert (str(error), error.errno) == (message, code)
