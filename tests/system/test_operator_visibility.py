"""Issue 6 under the booted systemd: who may ask `mcastd status`, counters, STATUS=, journal.

Starts where test_debian_service.py leaves the container (mcastd.service
enabled and running), switches to one instance, mcastd@239.0.0.9, drives it
with real datagrams from a client inside the container, stops it with STOP
and hands mcastd.service back (enabled and running, TWO_PORTS) to
test_upgrade_and_purge.py. Every datagram stays on the container's lo.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from mcastd.messages import MessageId
from tests.system.conftest import (
    CONFIG,
    DYNAMIC_UIDS,
    GROUP,
    INSTANCE,
    TWO_PORTS,
    journal,
    say,
    show,
    wait_until,
)
from tests.system.container import Container

pytestmark = pytest.mark.system

PORT = 59259
ONE_PORT = f"port: {PORT}\ngroups:\n  - group: {GROUP}\n"
RUNTIME_DIR = f"/run/mcastd/mcastd@{GROUP}"
SOCKET = f"{RUNTIME_DIR}/control.sock"
MEMBER = "opal"  # an operator in group mcastd
OUTSIDER = "rook"  # a user who is not
WORDS = ("count one", "count two", "count three", "count four")
# Not UTF-8: counted as dropped (not_utf8), never answered.
BAD_PAYLOADS = (b"\xff\xfe\xfd", b"caf\xe9 latin-1")
# Sends each hex payload from one socket to GROUP PORT; prints that socket's port.
SEND_RAW = """\
import socket, sys
group, port, *payloads = sys.argv[1:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
for payload in payloads:
    s.sendto(bytes.fromhex(payload), (group, int(port)))
print(s.getsockname()[1])
"""
# The ID operations.md tells operators to search for; it must never change.
STOP_ACCEPTED = "6c0f218a82fe4a9bbd4303ec988fad37"
SAID_PORT = re.compile(r"SAID \('127\.0\.0\.1', (\d+)\) \]")


@pytest.fixture(scope="module")
def instance(machine: Container) -> Iterator[Container]:
    """mcastd@239.0.0.9 alone, on a file with one port; mcastd.service back afterwards."""
    machine.run(["systemctl", "disable", "--now", "mcastd.service"])
    machine.write(CONFIG, ONE_PORT)
    machine.run(["systemctl", "reset-failed", INSTANCE], check=False)
    # Enabled, so systemd keeps the unit loaded (and its exit status) once stopped.
    machine.run(["systemctl", "enable", "--now", INSTANCE])
    try:
        yield machine
    finally:
        machine.run(["systemctl", "disable", "--now", INSTANCE], check=False)
        machine.write(CONFIG, TWO_PORTS)
        machine.run(["systemctl", "enable", "--now", "mcastd.service"])


def status_as(c: Container, user: str | None, *args: str) -> Any:
    """`mcastd status` run as `user` (root if None); CompletedProcess."""
    prefix = ["runuser", "-u", user, "--"] if user else []
    return c.run([*prefix, "mcastd", "status", *args], check=False)


def endpoint(c: Container) -> dict[str, Any]:
    """This instance's one endpoint from `mcastd status --json` (as root)."""
    document = json.loads(c.run(["mcastd", "status", "--json"]).stdout)
    (daemon,) = document["daemons"]
    assert daemon["instance"] == f"mcastd@{GROUP}"
    (found,) = daemon["endpoints"]
    assert (found["group"], found["port"]) == (GROUP, PORT)
    return dict(found, status=daemon["status"])


def test_static_group_owns_the_control_socket(instance: Container) -> None:
    group = instance.run(["getent", "group", "mcastd"]).stdout.strip().split(":")
    gid = int(group[2])
    assert gid < 1000, f"mcastd is not a system group: {group}"
    # Static: in /etc/group, made by the package's sysusers.d file, not by systemd.
    assert instance.run(["grep", "-c", "^mcastd:", "/etc/group"]).stdout.strip() == "1"

    pid = show(instance, INSTANCE, "MainPID")["MainPID"]
    proc = instance.run(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":", 1) for line in proc.splitlines() if ":" in line)
    assert {int(u) for u in fields["Uid"].split()} <= set(DYNAMIC_UIDS)
    assert {int(g) for g in fields["Gid"].split()} == {gid}

    stat = ["stat", "-c", "%F %a %G"]
    assert instance.run([*stat, RUNTIME_DIR]).stdout.strip() == "directory 750 mcastd"
    assert instance.run([*stat, SOCKET]).stdout.strip() == "socket 660 mcastd"
    assert instance.run([*stat, "/run/mcastd"]).stdout.strip() == "directory 755 root"


def test_group_member_reads_status_and_outsider_is_refused(instance: Container) -> None:
    for user, groups in ((MEMBER, ["-G", "mcastd"]), (OUTSIDER, [])):
        if instance.run(["id", user], check=False).returncode != 0:
            instance.run(["useradd", "--no-create-home", *groups, user])

    member = status_as(instance, MEMBER, "--json")
    assert member.returncode == 0, member
    (daemon,) = json.loads(member.stdout)["daemons"]
    assert daemon["instance"] == f"mcastd@{GROUP}"
    assert daemon["socket"] == SOCKET
    table = status_as(instance, MEMBER)
    assert table.returncode == 0, table
    assert f"{GROUP}:{PORT}" in table.stdout

    # Found by searching /run/mcastd: the outsider cannot enter the 0750 directory.
    outsider = status_as(instance, OUTSIDER, "--json")
    assert outsider.returncode == 3, outsider
    assert json.loads(outsider.stdout) == {"schema": 1, "daemons": []}
    named = status_as(instance, OUTSIDER, "--socket", SOCKET)
    assert named.returncode == 3, named
    assert f"{SOCKET}: Permission denied" in named.stderr
    assert named.stdout == ""


def test_counters_add_up_after_real_traffic(instance: Container) -> None:
    before = endpoint(instance)
    assert before["received"] == 0

    replies = []
    for text in WORDS:
        reply = say(instance, GROUP, text)
        assert reply.returncode == 0, reply
        (line,) = reply.stdout.splitlines()
        sender, answer = line.split(" ", 1)
        assert sender == f"127.0.0.1:{PORT}"
        assert answer.startswith(f"HEAR [ {text.upper()} SAID ('127.0.0.1', ")
        replies.append(answer)

    argv = ["python3", "-c", SEND_RAW, GROUP, str(PORT), *(p.hex() for p in BAD_PAYLOADS)]
    sent = instance.run(argv)
    raw_port = int(sent.stdout.strip())

    total = len(WORDS) + len(BAD_PAYLOADS)
    wait_until(lambda: endpoint(instance)["received"] == total, f"{total} datagrams counted")
    now = endpoint(instance)
    assert now["received"] == total
    assert now["answered"] == len(WORDS)
    assert now["listened"] == 0
    assert now["dropped"]["not_utf8"] == len(BAD_PAYLOADS)
    assert sum(now["dropped"].values()) == len(BAD_PAYLOADS)
    assert now["received"] == now["answered"] + now["listened"] + sum(now["dropped"].values())
    assert now["bytes_in"] == sum(len(w.encode()) for w in WORDS) + sum(map(len, BAD_PAYLOADS))
    assert now["bytes_out"] == sum(len(r.encode()) for r in replies)
    assert now["last_source"] == f"127.0.0.1:{raw_port}"

    # STATUS= is refreshed at most once a second: wait for it to catch up.
    expected = f"1 group, {total} heard, {len(WORDS)} answered, {len(BAD_PAYLOADS)} dropped"
    wait_until(
        lambda: show(instance, INSTANCE, "StatusText")["StatusText"] == expected,
        "StatusText to show the counts",
    )
    assert endpoint(instance)["status"] == expected
    status = instance.run(["systemctl", "status", "--no-pager", "--lines=0", INSTANCE]).stdout
    assert f'Status: "{expected}"' in status


def test_stop_is_listed_by_its_message_id(instance: Container) -> None:
    reply = say(instance, GROUP, "STOP")
    assert reply.returncode == 0, reply
    match = SAID_PORT.search(reply.stdout)
    assert match, reply
    source = f"127.0.0.1:{match.group(1)}"
    wait_until(
        lambda: show(instance, INSTANCE, "ActiveState")["ActiveState"] == "inactive",
        "the instance to stop",
    )

    assert MessageId.STOP_ACCEPTED.value == STOP_ACCEPTED
    # Every STOP ever accepted, from any unit; this one is among them.
    stops = journal(instance, f"MESSAGE_ID={STOP_ACCEPTED}")
    ours = [e for e in stops if e.get("MCAST_SOURCE") == source]
    assert len(ours) == 1, stops
    (entry,) = ours
    assert entry["MESSAGE"] == f"{GROUP}:{PORT}: STOP from {source} accepted"
    assert entry["_SYSTEMD_UNIT"] == INSTANCE
    assert entry["SYSLOG_IDENTIFIER"] == "mcastd"
    assert entry["LOGGER"] == f"mcastd.group.{GROUP}"
    assert (entry["MCAST_GROUP"], entry["MCAST_PORT"]) == (GROUP, str(PORT))
    assert entry["PRIORITY"] == "4"  # warning

    # The shutdown line carries the final counts: the STOP itself was answered too.
    left = [
        str(e["MESSAGE"])
        for e in journal(instance, "-u", INSTANCE, f"MESSAGE_ID={MessageId.GROUP_LEFT.value}")
    ]
    total = len(WORDS) + len(BAD_PAYLOADS) + 1
    assert left[-1] == (
        f"{GROUP}:{PORT} left: {total} received, {len(WORDS) + 1} answered, "
        f"{len(BAD_PAYLOADS)} dropped ({len(BAD_PAYLOADS)} not_utf8)"
    )


def test_journalctl_x_shows_the_catalog(instance: Container) -> None:
    # The package's file, indexed by systemd's dpkg trigger (journalctl --update-catalog).
    files = instance.run(["dpkg", "-L", "mcastd"]).stdout.split()
    assert "/usr/lib/systemd/catalog/mcastd.catalog" in files
    listed = instance.run(["journalctl", "--list-catalog", "--no-pager"]).stdout
    for message_id in MessageId:
        assert re.search(rf"^{message_id.value} mcastd: \S", listed, re.MULTILINE), message_id

    out = instance.run(["journalctl", "-b", "-x", "--no-pager", "-u", INSTANCE]).stdout
    lines = out.splitlines()
    # The STOP line itself, not the per-datagram line ("... answered, STOP accepted").
    accepted = [i for i, line in enumerate(lines) if re.search(r": STOP from \S+ accepted$", line)]
    assert accepted, out[-2000:]
    help_text = "\n".join(lines[accepted[-1] + 1 : accepted[-1] + 9])
    assert "░░ Subject: mcastd accepted a STOP datagram" in help_text
    assert "░░ Defined-By: mcastd" in help_text
    assert f"journalctl MESSAGE_ID={STOP_ACCEPTED}" in help_text
    assert "░░ Subject: mcastd is ready and answering" in out
