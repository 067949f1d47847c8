"""The command line as a user meets it: exit codes and one-line errors, never a traceback.

Nothing here opens a multicast socket: those tests live in tests/net/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mcastd import __version__, cli

REPO = Path(__file__).resolve().parent.parent


def mcastd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcastd", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def test_version():
    out = mcastd("--version")
    assert out.returncode == 0
    assert out.stdout == f"mcastd {__version__}\n"


def test_help_on_every_subcommand_lists_exit_codes():
    for command in ("run", "check", "say"):
        out = mcastd(command, "--help")
        assert out.returncode == 0
        assert "78  the configuration file is invalid" in out.stdout


def test_check_the_shipped_file():
    out = mcastd("check", "--config", str(REPO / "etc" / "mcastd.yaml"))
    assert out.returncode == 0
    assert out.stdout.splitlines() == [
        "239.0.0.9 port 59259: reply unicast, ttl 1, interface any, log_datagrams on",
        "ff05::9 port 59259: reply unicast, ttl 1, interface any, log_datagrams on",
        f"{REPO / 'etc' / 'mcastd.yaml'}: ok, 2 (group, port) to serve",
    ]


def test_check_with_group_shows_what_the_instance_would_serve(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("ttl: 5\ngroups: [239.0.0.9]\n")
    out = mcastd("check", "--config", str(config), "--group", "239.0.0.77")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0] == (
        "239.0.0.77 port 59259: reply unicast, ttl 5, interface any, log_datagrams on"
    )


def test_bad_config_exits_78_with_one_line_per_error(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("ttl: 300\ngroups:\n  - group: 239.0.0.9\n    port: 70000\n")
    for command in ("check", "run"):
        out = mcastd(command, "--config", str(config))
        assert out.returncode == 78
        assert out.stderr.splitlines() == [
            f"{config}:1:6: ttl: 300 is not a TTL (0-255)",
            f"{config}:4:11: groups[0].port: 70000 is not a port (1-65535)",
        ]


def test_config_from_the_environment(tmp_path: Path):
    config = tmp_path / "env.yaml"
    config.write_text("port: 1\nport: 2\n")
    out = mcastd("check", env={"MCASTD_CONFIG": str(config), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 78
    assert out.stderr == f"{config}:2:1: port: is given twice\n"


def test_missing_config_file_exits_78(tmp_path: Path):
    out = mcastd("run", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 78
    assert out.stderr == f"{tmp_path / 'nope.yaml'}:1:1: cannot read: No such file or directory\n"


def test_bad_arguments_exit_2_with_a_clear_line():
    for args, message in [
        (("run", "--group", "10.0.0.1"), "'10.0.0.1' is not a multicast address"),
        (("say", "--port", "0", "hi"), "'0' is not a port (1-65535)"),
        (("say", "--ttl", "999", "hi"), "'999' is not a TTL (0-255)"),
        (("run", "--name", "../etc"), "'../etc' is not a name (letters, digits, _.@:,+- ;"),
        (("run", "--name", ""), "'' is not a name"),
        (("say", "--wait", "soon", "hi"), "'soon' is not a number of seconds"),
        (("say",), "say: give a MESSAGE, or --stop"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ]:
        out = mcastd(*args)
        assert out.returncode == 2, args
        assert message in out.stderr.splitlines()[-1]
        assert "Traceback" not in out.stderr


def test_a_reader_that_goes_away_is_no_internal_error(tmp_path: Path):
    config = tmp_path / "many.yaml"
    groups = ", ".join(f"239.1.{i // 250}.{i % 250 + 1}" for i in range(2000))
    config.write_text(f"groups: [{groups}]\n")  # ~160 KB of `check` output: more than a pipe
    with subprocess.Popen(
        [sys.executable, "-m", "mcastd", "check", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        proc.stdout.readline()
        proc.stdout.close()  # as `| head -1` does
        stderr = proc.stderr.read().decode()
        assert proc.wait(timeout=30) == 0
    assert stderr == ""


def test_every_command_resolves_to_its_main():
    for name in cli.COMMANDS:
        assert callable(cli.command(name)), name


def test_the_daemon_does_not_load_the_exporters_library():
    # `run` in a fresh interpreter: prometheus_client is the exporter's, not every daemon's.
    probe = (
        "import sys; from mcastd import cli; cli.command('run'); cli.command('say'); "
        "print(sorted(m for m in sys.modules if m.startswith('prometheus_client'))[:1])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"
