"""`mcastd status`, the control socket and the counters, against real daemons in a namespace."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import DaemonFactory
from tests.netns import NetNS, ask, collect, mcastd_argv

pytestmark = pytest.mark.net
PORT = 59259


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mcastd_argv("status", *args), capture_output=True, text=True, timeout=20, check=False
    )


def test_counters_add_up_after_real_traffic(
    netns: NetNS, start_daemon: DaemonFactory, tmp_path: Path
):
    sock_path = tmp_path / "control.sock"
    daemon = start_daemon(
        "groups:\n  - group: 239.0.0.9\n  - group: 239.0.0.10\n    reply: none\n",
        args=["--control-socket", str(sock_path)],
    )
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    for i in range(30):
        ask(client, b"good %d" % i, "239.0.0.9", PORT)
    for _ in range(7):
        client.sendto(b"\xc3\x28 bad", ("239.0.0.9", PORT))
    for _ in range(4):
        client.sendto(b"listen only", ("239.0.0.10", PORT))
    collect(client, quiet=0.3)
    out = status("--json", "--socket", str(sock_path))
    assert out.returncode == 0, out.stderr
    (document,) = json.loads(out.stdout)["daemons"]
    by_group = {e["group"]: e for e in document["endpoints"]}
    nine, ten = by_group["239.0.0.9"], by_group["239.0.0.10"]
    assert (nine["received"], nine["answered"], nine["dropped"]["not_utf8"]) == (37, 30, 7)
    assert (ten["received"], ten["answered"], ten["listened"]) == (4, 0, 4)
    for e in (nine, ten):
        assert e["received"] == e["answered"] + e["listened"] + sum(e["dropped"].values())
    assert nine["last_source"] == f"127.0.0.1:{client.getsockname()[1]}"
    assert nine["bytes_in"] == sum(len(b"good %d" % i) for i in range(30)) + 7 * 6
    assert document["pid"] == daemon.proc.pid
    assert document["config"] == str(daemon.config_path)
    # STATUS= follows the counters, at most once a second
    assert "STATUS=2 groups, 41 heard, 30 answered, 7 dropped" in daemon.wait_for(
        "STATUS=2 groups, 41 heard"
    )
    # The same numbers for people, and only the group asked for
    text = status("--socket", str(sock_path), "239.0.0.10")
    assert text.returncode == 0
    assert "239.0.0.10:59259" in text.stdout
    assert "239.0.0.9:59259" not in text.stdout
    assert "4 listened (reply: none)" in text.stdout


def test_status_finds_every_instance_and_exits_3_without_one(
    netns: NetNS, start_daemon: DaemonFactory, tmp_path: Path
):
    root = tmp_path / "run"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    config = "groups: [239.0.0.9, 239.0.0.10]\n"
    first = start_daemon(
        config, args=["--group", "239.0.0.9", "--control-socket", str(root / "a" / "control.sock")]
    )
    second = start_daemon(
        config, args=["--group", "239.0.0.10", "--control-socket", str(root / "b" / "control.sock")]
    )
    out = status("--runtime-dir", str(root))
    assert out.returncode == 0, out.stderr
    assert "mcastd@239.0.0.9 (pid" in out.stdout
    assert "mcastd@239.0.0.10 (pid" in out.stdout
    assert status("--runtime-dir", str(root), "239.0.0.77").returncode == 3
    first.stop()
    second.stop()
    assert not (root / "a" / "control.sock").exists()  # removed on a graceful stop
    gone = status("--runtime-dir", str(root))
    assert gone.returncode == 3
    assert gone.stderr == "mcastd: no running mcastd found\n"


def test_control_socket_is_read_only_and_survives_bad_clients(
    netns: NetNS, start_daemon: DaemonFactory, tmp_path: Path
):
    path = tmp_path / "control.sock"
    start_daemon("groups: [239.0.0.9]\n", args=["--control-socket", str(path)])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660

    def request(data: bytes) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(path))
            s.sendall(data)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        return json.loads(reply)  # type: ignore[no-any-return]

    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(path))  # connects and says nothing: must not hold up anyone else
    try:
        assert "unknown request 'reload'" in str(request(b"reload\n")["error"])
        assert "longer than 256 bytes" in str(request(b"x" * 5000)["error"])
        assert request(b"status\n")["schema"] == 1
        client = netns.socket()
        data, _ = ask(client, b"still serving", "239.0.0.9", PORT)
        assert data.startswith(b"HEAR [ STILL SERVING")
    finally:
        idle.close()
