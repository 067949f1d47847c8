"""launch: `check` and `run` up to the point where sockets would be opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcastd.cli import build_parser
from mcastd.launch import check_main, control_place, read_config, run_main


def test_check_summarises_each_group(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "c.yaml"
    config.write_text("ttl: 2\ngroups:\n  - group: 239.0.0.9\n    ports: [1, 2]\n")
    assert check_main(build_parser().parse_args(["check", "--config", str(config)])) == 0
    assert capsys.readouterr().out.splitlines() == [
        "239.0.0.9 ports 1,2: reply unicast, ttl 2, interface any, log_datagrams on",
        f"{config}: ok, 2 (group, port) to serve",
    ]


def test_a_bad_file_is_exit_78_before_logging_is_set_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    config = tmp_path / "bad.yaml"
    config.write_text("ttl: -1\n")
    args = build_parser().parse_args(["run", "--config", str(config)])
    assert run_main(args) == 78
    assert capsys.readouterr().err == f"{config}:1:6: ttl: -1 is not a TTL (0-255)\n"


def test_read_config_narrows_to_the_groups_asked_for(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("groups: [239.0.0.9, 239.0.0.10]\n")
    chosen = read_config(str(config), ["239.0.0.10"], None)
    assert [e.key for e in chosen.endpoints()] == [("239.0.0.10", 59259)]
    assert len(read_config(None, None, None).endpoints()) == 2  # the built-in defaults


@pytest.mark.parametrize(
    ("name", "groups", "expected"),
    [
        (None, None, "mcastd"),  # mcastd.service, whatever file it reads
        (None, ["239.0.0.9"], "mcastd@239.0.0.9"),  # mcastd@239.0.0.9.service
        ("edge", ["239.0.0.9"], "edge"),
    ],
)
def test_under_systemd_the_socket_is_in_the_runtime_directory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str | None,
    groups: list[str] | None,
    expected: str,
):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    place = control_place(name, None, "/srv/lab.yaml", groups)
    assert place == (expected, str(tmp_path / "control.sock"))


def test_a_named_socket_is_used_as_given(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    assert control_place(None, "/tmp/x.sock", "/srv/lab.yaml", None) == ("lab", "/tmp/x.sock")
    assert control_place("a", "/tmp/x.sock", None, ["239.0.0.9"]) == ("a", "/tmp/x.sock")
