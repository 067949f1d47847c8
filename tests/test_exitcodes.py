"""The exit-code table: the constants and the `--help` text come from the same rows."""

from __future__ import annotations

import pytest

from mcastd.errors import ConfigError, ConfigProblem
from mcastd.exitcodes import ExitCode, config_failed, epilog, fail


def test_sysexits_values_do_not_change():
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "NO_REPLY": 1,
        "USAGE": 2,
        "NOT_RUNNING": 3,
        "UNAVAILABLE": 69,
        "SOFTWARE": 70,
        "CONFIG": 78,
    }


def test_epilog_has_one_line_per_code_in_order():
    lines = epilog().splitlines()
    assert lines[0] == "exit codes:"
    assert len(lines) == 1 + len(ExitCode)
    for line, code in zip(lines[1:], ExitCode, strict=True):
        assert line == f"  {code.value:<3} {code.description}"
    assert "  78  the configuration file is invalid" in lines


def test_exit_1_covers_say_and_probe():
    # prober.run returns NO_REPLY when ProbeReport.success is false.
    assert ExitCode.NO_REPLY.description == (
        "say: no reply within --wait; probe: an expected responder missing or over "
        "--max-loss, or (without --expect) no responder answered"
    )


def test_fail_prints_one_line_and_returns_the_code(capsys: pytest.CaptureFixture[str]):
    assert fail("cannot detach: no", ExitCode.UNAVAILABLE) == 69
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "mcastd: cannot detach: no\n")


def test_config_failed_prints_each_problem_on_its_line(capsys: pytest.CaptureFixture[str]):
    error = ConfigError(
        [
            ConfigProblem("f.yaml", 2, 7, "port", "70000 is not a port (1-65535)"),
            ConfigProblem("f.yaml", 4, 3, "", "not valid YAML: x"),
        ]
    )
    assert config_failed(error) == ExitCode.CONFIG
    assert capsys.readouterr().err == (
        "f.yaml:2:7: port: 70000 is not a port (1-65535)\nf.yaml:4:3: not valid YAML: x\n"
    )
