"""`mcastd run` started by hand (no systemd) gets a control socket that `mcastd status` finds.

Each test runs its daemons and `mcastd status` inside one network namespace and one private
mount namespace with an empty tmpfs on /run, so /run/mcastd is the test's own: the host's is
never touched, and what status lists is only what the test started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.netns import REPO, Daemon, NetNS, ask, mcastd_argv

pytestmark = pytest.mark.net
PORT = 59259
NOBODY = 65534


class PrivateRun:
    """A holder process inside `netns` with a mount namespace of its own and a tmpfs on /run;
    `command` runs a program in both namespaces (what Daemon needs of a namespace)."""

    def __init__(self, netns: NetNS) -> None:
        script = "mount -t tmpfs -o mode=0755 tmpfs /run && echo ready && exec sleep 600"
        self.holder = subprocess.Popen(
            netns.command(["unshare", "--mount", "--propagation", "private", "sh", "-c", script]),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.close()
            raise AssertionError("could not make a private /run")

    def command(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-n", *argv]

    def run(
        self, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = dict(os.environ if env is None else env, PYTHONPATH=str(REPO))
        return subprocess.run(
            self.command(argv),
            capture_output=True,
            text=True,
            env=environment,
            timeout=30,
            check=False,
        )

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(mcastd_argv("status", *args))

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


@pytest.fixture
def private(netns: NetNS) -> Iterator[PrivateRun]:
    run = PrivateRun(netns)
    try:
        yield run
    finally:
        run.close()


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.close()


def start(
    private: PrivateRun, started: list[Daemon], config: Path, *args: str, text: str
) -> Daemon:
    """`mcastd run --config CONFIG ARGS` by hand: no --control-socket, no systemd."""
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    daemon = Daemon(
        private,  # type: ignore[arg-type]
        None,
        ["--config", str(config), *args],
        workdir=config.parent,
        default_control_socket=True,
    )
    started.append(daemon)
    daemon.wait_for("READY=1")
    return daemon


def documents(private: PrivateRun) -> dict[str, dict[str, object]]:
    out = private.status("--json")
    assert out.returncode == 0, out.stderr
    return {d["instance"]: d for d in json.loads(out.stdout)["daemons"]}


def test_a_foreground_run_is_found_by_status(
    netns: NetNS, private: PrivateRun, daemons: list[Daemon], tmp_path: Path
):
    config = tmp_path / "lab.yaml"
    daemon = start(private, daemons, config, text="groups: [239.0.0.9, 239.0.0.10]\n")
    assert "`mcastd status` shows this daemon as lab (/run/mcastd/lab.sock)" in daemon.stderr
    client = netns.socket()
    data, _ = ask(client, b"tour", "239.0.0.9", PORT)
    assert data.startswith(b"HEAR [ TOUR SAID")

    table = private.status()
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].startswith(f"lab (pid {daemon.proc.pid}, mcastd ")
    assert f"config {config}" in lines[0]
    assert lines[1] == "  2 groups, 1 heard, 1 answered, 0 dropped"
    rows = {line.split()[0]: line.split()[1:4] for line in lines[3:]}
    assert rows == {"239.0.0.9:59259": ["1", "1", "0"], "239.0.0.10:59259": ["0", "0", "0"]}

    (document,) = documents(private).values()
    assert (document["instance"], document["pid"]) == ("lab", daemon.proc.pid)
    assert document["socket"] == "/run/mcastd/lab.sock"
    assert document["config"] == str(config)
    endpoints = {e["group"]: e for e in document["endpoints"]}  # type: ignore[attr-defined]
    assert (endpoints["239.0.0.9"]["received"], endpoints["239.0.0.9"]["answered"]) == (1, 1)

    # The socket goes with the daemon; status then finds nobody.
    assert daemon.stop() == 0
    gone = private.status()
    assert (gone.returncode, gone.stderr.strip()) == (3, "mcastd: no running mcastd found")
    assert private.run(["ls", "-A", "/run/mcastd"]).stdout == ""


def test_daemons_side_by_side_have_names_of_their_own(
    private: PrivateRun, daemons: list[Daemon], tmp_path: Path
):
    # A running mcastd.service has /run/mcastd/mcastd/ (its RuntimeDirectory=): not taken.
    assert private.run(["mkdir", "-p", "/run/mcastd/mcastd"]).returncode == 0
    lab = start(private, daemons, tmp_path / "lab.yaml", text="groups: [239.0.0.11]\n")
    office = start(private, daemons, tmp_path / "office.yaml", text="groups: [239.0.0.12]\n")
    # Two files of the same name in different directories.
    first = start(private, daemons, tmp_path / "a" / "mcastd.yaml", text="groups: [239.0.0.13]\n")
    second = start(private, daemons, tmp_path / "b" / "mcastd.yaml", text="groups: [239.0.0.14]\n")
    one_group = start(
        private,
        daemons,
        tmp_path / "c" / "lab.yaml",
        "--group",
        "239.0.0.15",
        text="groups: [239.0.0.15, 239.0.0.16]\n",
    )
    named = start(
        private, daemons, tmp_path / "d" / "x.yaml", "--name", "edge", text="groups: [239.0.0.18]\n"
    )

    found = documents(private)
    expected = {
        "lab": (lab, ["239.0.0.11"]),
        "office": (office, ["239.0.0.12"]),
        "mcastd-2": (first, ["239.0.0.13"]),
        "mcastd-3": (second, ["239.0.0.14"]),
        "lab@239.0.0.15": (one_group, ["239.0.0.15"]),
        "edge": (named, ["239.0.0.18"]),
    }
    assert sorted(found) == sorted(expected)
    for name, (daemon, groups) in expected.items():
        document = found[name]
        assert document["pid"] == daemon.proc.pid
        assert document["socket"] == f"/run/mcastd/{name}.sock"
        assert [e["group"] for e in document["endpoints"]] == groups  # type: ignore[attr-defined]

    table = private.status().stdout
    for name, (daemon, _) in expected.items():
        assert f"\n{name} (pid {daemon.proc.pid}, " in f"\n{table}"

    # An explicit --name that is taken is not renamed: that daemon serves, unseen by status.
    taken = start(
        private, daemons, tmp_path / "e" / "y.yaml", "--name", "edge", text="groups: [239.0.0.19]\n"
    )
    assert "control socket /run/mcastd/edge.sock: another mcastd has this name" in taken.stderr
    assert sorted(documents(private)) == sorted(expected)


def test_a_user_run_lives_in_xdg_runtime_dir(private: PrivateRun):
    runtime = Path(tempfile.mkdtemp(prefix="mcastd-xdg-"))  # /tmp: nobody can reach it
    try:
        os.chown(runtime, NOBODY, NOBODY)
        config = runtime / "user.yaml"
        config.write_text("groups: [239.0.0.17]\n")
        env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
        as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        proc = subprocess.Popen(
            private.command([*as_nobody, *mcastd_argv("run", "--config", str(config))]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(env, PYTHONPATH=str(REPO)),
        )
        try:
            out = wait_for_status(private, found=True, user=as_nobody, env=env)
            assert out.returncode == 0, out.stderr
            (document,) = json.loads(out.stdout)["daemons"]
            assert document["instance"] == "user"
            assert document["socket"] == f"{runtime}/mcastd/user.sock"
            assert (runtime / "mcastd").stat().st_mode & 0o777 == 0o700
            # root's status looks in /run/mcastd only
            assert private.status().returncode == 3
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=10)
        assert proc.returncode == 0, stderr
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def wait_for_status(
    private: PrivateRun,
    found: bool,
    user: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`mcastd status --json` (run by `user`, a setpriv prefix, if given) until it finds a
    daemon (or none), for at most 10 s."""
    deadline = time.monotonic() + 10
    while True:
        out = private.run([*user, *mcastd_argv("status", "--json")], env=env)
        if (out.returncode == 0) == found or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_a_detached_run_is_found_by_status(private: PrivateRun, tmp_path: Path):
    config = tmp_path / "background.yaml"
    config.write_text("groups: [239.0.0.20]\n")
    started = private.run(
        mcastd_argv("run", "--detach", "--pidfile", "/run/bg.pid", "--config", str(config))
    )
    assert started.returncode == 0, started.stderr
    pid = int(private.run(["cat", "/run/bg.pid"]).stdout)
    try:
        out = wait_for_status(private, found=True)
        assert out.returncode == 0, out.stderr
        (document,) = json.loads(out.stdout)["daemons"]
        assert (document["instance"], document["pid"]) == ("background", pid)
        assert document["socket"] == "/run/mcastd/background.sock"
    finally:
        os.kill(pid, signal.SIGTERM)
    assert wait_for_status(private, found=False).returncode == 3
