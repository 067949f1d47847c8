"""The Debian package under a real systemd, driven as an operator would.

The first module on the one container (see conftest.py); the tests run in
file order and each leaves the state the next one starts from:
installed and idle -> one instance -> reload -> stops -> mcastd.service
(enabled and running; test_operator_visibility.py goes on from there).
Every datagram stays on the container's lo or its own veth pair.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.system.conftest import (
    CONFIG,
    DYNAMIC_UIDS,
    GROUP,
    INSTANCE,
    REPO,
    TWO_PORTS,
    RecordProperty,
    active_mcastd_units,
    exposure,
    heard,
    journal,
    say,
    show,
    unit_messages,
    wait_until,
)
from tests.system.container import Container

pytestmark = pytest.mark.system

BROKEN = """\
port: 59259
groups:
  - group: 239.0.0.9
    ports: [59259, 59260]
    ttl: 300
  - group: ff05::9
"""


def test_install_enables_and_starts_nothing(machine: Container) -> None:
    assert active_mcastd_units(machine) == []
    assert machine.run(["pgrep", "-f", "/usr/bin/mcastd"], check=False).returncode == 1
    enabled = machine.run(["systemctl", "is-enabled", "mcastd.service"], check=False)
    assert enabled.stdout.strip() == "disabled"
    conffiles = machine.run(["dpkg-query", "-W", "-f=${Conffiles}", "mcastd"]).stdout
    assert CONFIG in conffiles
    units = machine.run(["dpkg", "-L", "mcastd"]).stdout.split()
    # Where this release's dh_installsystemd puts units: /lib on Debian 12, /usr/lib on 13.
    for unit in ("mcastd.service", "mcastd@.service", "mcastd.target"):
        assert {f"/lib/systemd/system/{unit}", f"/usr/lib/systemd/system/{unit}"} & set(units)
    for page in ("man8/mcastd.8.gz", "man5/mcastd.yaml.5.gz"):
        assert f"/usr/share/man/{page}" in units
    assert "/usr/lib/systemd/catalog/mcastd.catalog" in units
    assert "/usr/lib/sysusers.d/mcastd.conf" in units
    # The postinst made the group that may read the control sockets.
    assert machine.run(["getent", "group", "mcastd"]).stdout.startswith("mcastd:x:")


def test_security_exposure_at_most_1_0(machine: Container, record_property: RecordProperty) -> None:
    for unit in (INSTANCE, "mcastd.service"):
        level, out = exposure(machine, unit)
        record_property(f"exposure {unit}", level)
        assert level <= 1.0, out


def test_instance_answers_and_logs_journal_fields(machine: Container) -> None:
    # Enabled, so systemd keeps the unit loaded (and its exit status) once stopped.
    machine.run(["systemctl", "enable", "--now", INSTANCE])
    assert show(machine, INSTANCE, "ActiveState")["ActiveState"] == "active"

    reply = say(machine, GROUP, "hello")
    assert reply.returncode == 0, reply
    assert reply.stdout.startswith("127.0.0.1:59259 HEAR [ HELLO SAID ('127.0.0.1', ")
    assert heard(reply, "hello", GROUP)

    def datagram_line() -> dict[str, object] | None:
        for entry in journal(machine, "-u", INSTANCE):
            if "heard 'hello'" in str(entry.get("MESSAGE", "")):
                return entry
        return None

    wait_until(datagram_line, "the per-datagram journal line")
    entry = datagram_line()
    assert entry is not None
    assert str(entry["MESSAGE"]).startswith(f"{GROUP}:59259 heard 'hello' from 127.0.0.1:")
    assert entry["LOGGER"] == f"mcastd.group.{GROUP}"
    assert entry["SYSLOG_IDENTIFIER"] == "mcastd"
    assert entry["MCAST_GROUP"] == GROUP


def test_status_line_dynamic_user_no_capabilities(machine: Container) -> None:
    props = show(machine, INSTANCE, "StatusText", "MainPID")
    assert props["StatusText"]
    status = machine.run(
        ["systemctl", "status", "--no-pager", "--lines=0", INSTANCE], check=False
    ).stdout
    assert f'Status: "{props["StatusText"]}"' in status

    # `mcastd status` finds the unit's control socket in its RuntimeDirectory=.
    document = json.loads(machine.run(["mcastd", "status", "--json"]).stdout)
    (daemon,) = document["daemons"]
    assert daemon["instance"] == "mcastd@239.0.0.9"
    assert daemon["pid"] == int(props["MainPID"])
    assert [(e["group"], e["port"]) for e in daemon["endpoints"]] == [(GROUP, 59259)]

    proc = machine.run(["cat", f"/proc/{props['MainPID']}/status"]).stdout
    fields = dict(line.split(":", 1) for line in proc.splitlines() if ":" in line)
    uids = {int(u) for u in fields["Uid"].split()}
    assert len(uids) == 1
    assert uids.pop() in DYNAMIC_UIDS
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, f"{cap}: {fields[cap]}"
    assert fields["NoNewPrivs"].strip() == "1"


def test_reload_joins_a_new_port(machine: Container) -> None:
    machine.write(CONFIG, TWO_PORTS)
    pid = show(machine, INSTANCE, "MainPID")["MainPID"]
    machine.run(["systemctl", "reload", INSTANCE])
    wait_until(
        lambda: heard(say(machine, GROUP, "new", port=59260, wait=0.3), "new", GROUP),
        "an answer on the new port 59260",
    )
    assert heard(say(machine, GROUP, "old", port=59259), "old", GROUP)
    props = show(machine, INSTANCE, "MainPID", "ActiveState")
    assert props == {"MainPID": pid, "ActiveState": "active"}


def test_reload_with_broken_file_keeps_serving(machine: Container) -> None:
    machine.write(CONFIG, BROKEN)
    machine.run(["systemctl", "reload", INSTANCE])

    def error_line() -> str | None:
        for entry in journal(machine, "-u", INSTANCE):
            message = str(entry.get("MESSAGE", ""))
            if "groups[0].ttl" in message:
                return message
        return None

    wait_until(error_line, "the reload error in the journal")
    message = error_line()
    assert message is not None
    assert re.search(r"/etc/mcastd\.yaml:5:\d+: groups\[0\]\.ttl: 300 is not a TTL", message)
    wait_until(
        lambda: show(machine, INSTANCE, "ActiveState")["ActiveState"] == "active",
        "the unit back to active after the failed reload",
    )
    for port in (59259, 59260):
        assert heard(say(machine, GROUP, "still", port=port), "still", GROUP)
    machine.write(CONFIG, TWO_PORTS)


def test_stop_datagram_stops_without_restart(machine: Container) -> None:
    reply = say(machine, GROUP, "STOP")
    assert heard(reply, "STOP", GROUP)
    wait_until(
        lambda: show(machine, INSTANCE, "ActiveState")["ActiveState"] != "active",
        "the unit to leave active",
    )
    props = show(
        machine,
        INSTANCE,
        "ActiveState",
        "SubState",
        "Result",
        "ExecMainStatus",
        "NRestarts",
        "ExecMainExitTimestampMonotonic",
    )
    assert props.pop("ExecMainExitTimestampMonotonic") != "0"  # the unit remembers its run
    # A planned restart would show as activating/auto-restart here.
    assert props == {
        "ActiveState": "inactive",
        "SubState": "dead",
        "Result": "success",
        "ExecMainStatus": "0",
        "NRestarts": "0",
    }


def test_systemctl_stop_is_clean_and_quick(
    machine: Container, record_property: RecordProperty
) -> None:
    machine.run(["systemctl", "start", INSTANCE])
    assert machine.run(["systemctl", "stop", INSTANCE]).returncode == 0
    props = show(
        machine,
        INSTANCE,
        "ActiveState",
        "Result",
        "ExecMainCode",
        "ExecMainStatus",
        "ActiveExitTimestampMonotonic",
        "InactiveEnterTimestampMonotonic",
        "ExecMainExitTimestampMonotonic",
    )
    assert props["ExecMainExitTimestampMonotonic"] != "0"  # the unit remembers its run
    assert props["ActiveState"] == "inactive"
    assert props["Result"] == "success"
    assert (props["ExecMainCode"], props["ExecMainStatus"]) == ("1", "0")  # CLD_EXITED, 0
    stop_usec = int(props["InactiveEnterTimestampMonotonic"]) - int(
        props["ActiveExitTimestampMonotonic"]
    )
    record_property("systemctl stop seconds", f"{stop_usec / 1e6:.3f}")


def test_kill_9_is_restarted(machine: Container) -> None:
    machine.run(["systemctl", "start", INSTANCE])
    before = show(machine, INSTANCE, "MainPID", "NRestarts")
    assert before["MainPID"] != "0"  # `kill -9 0` would hit the test's own process group
    machine.run(["kill", "-9", before["MainPID"]])

    def restarted() -> bool:
        now = show(machine, INSTANCE, "MainPID", "NRestarts", "ActiveState")
        return (
            now["ActiveState"] == "active"
            and now["MainPID"] not in ("0", before["MainPID"])
            and int(now["NRestarts"]) == int(before["NRestarts"]) + 1
        )

    wait_until(restarted, "systemd to restart the killed daemon")
    assert heard(say(machine, GROUP, "again"), "again", GROUP)


def test_hung_event_loop_is_restarted_by_the_watchdog(machine: Container) -> None:
    before = show(machine, INSTANCE, "MainPID", "NRestarts", "WatchdogUSec")
    assert before["WatchdogUSec"] != "0"
    assert before["MainPID"] != "0"  # `kill -STOP 0` would stop the test's own process group
    # A stopped process sends no WATCHDOG=1: systemd must notice and restart it.
    machine.run(["kill", "-STOP", before["MainPID"]])

    def restarted() -> bool:
        now = show(machine, INSTANCE, "MainPID", "NRestarts", "ActiveState")
        return (
            now["ActiveState"] == "active"
            and now["MainPID"] not in ("0", before["MainPID"])
            and int(now["NRestarts"]) > int(before["NRestarts"])
        )

    wait_until(restarted, "the watchdog to restart the stopped daemon", timeout=40)
    messages = unit_messages(machine, INSTANCE)
    assert any("Watchdog timeout" in m for m in messages), messages[-10:]
    assert heard(say(machine, GROUP, "awake"), "awake", GROUP)


def test_privileged_port_needs_the_documented_drop_in(
    machine: Container, record_property: RecordProperty
) -> None:
    unit = "mcastd@239.0.0.12.service"
    machine.write(CONFIG, TWO_PORTS + "  - group: 239.0.0.12\n    ports: [600]\n")
    assert machine.run(["systemctl", "start", unit], check=False).returncode != 0
    assert show(machine, unit, "ExecMainStatus")["ExecMainStatus"] == "69"

    # The drop-in of mcastd(8) and docs/systemd.md, word for word.
    dropin = f"/etc/systemd/system/{unit}.d"
    machine.run(["mkdir", "-p", dropin])
    machine.write(
        f"{dropin}/bind.conf",
        "[Service]\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\nPrivateUsers=no\n",
    )
    try:
        machine.run(["systemctl", "daemon-reload"])
        machine.run(["systemctl", "reset-failed", unit])
        machine.run(["systemctl", "start", unit])
        reply = say(machine, "239.0.0.12", "low", port=600)
        assert reply.stdout.startswith("127.0.0.1:600 HEAR [ LOW SAID"), reply
        out = machine.run(["systemd-analyze", "security", "--no-pager", unit]).stdout
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
        assert match, out
        record_property("exposure with the CAP_NET_BIND_SERVICE drop-in", match.group(1))
    finally:
        machine.run(["systemctl", "stop", unit], check=False)
        machine.run(["rm", "-rf", dropin])
        machine.run(["systemctl", "daemon-reload"])
        machine.write(CONFIG, TWO_PORTS)


def test_autopkgtest_script_passes(machine: Container) -> None:
    """debian/tests/start-and-say, as autopkgtest would run it on a testbed."""
    machine.run(["systemctl", "stop", INSTANCE])
    # As in the source tree, which autopkgtest runs it from: it uses scripts/netns.
    machine.run(["mkdir", "-p", "/srv/src/debian/tests", "/srv/src/scripts"])
    for path in ("debian/tests/start-and-say", "scripts/netns"):
        machine.write(f"/srv/src/{path}", (REPO / path).read_text())
    done = machine.run(["sh", "/srv/src/debian/tests/start-and-say"], check=False, timeout=90)
    assert done.returncode == 0, done
    assert active_mcastd_units(machine) in ([], ["mcastd.target"])


def test_enable_now_serves_every_group(machine: Container) -> None:
    machine.run(["systemctl", "disable", "--now", INSTANCE])
    machine.run(["systemctl", "enable", "--now", "mcastd.service"])
    assert machine.run(["systemctl", "is-enabled", "mcastd.service"]).stdout.strip() == "enabled"
    for group, port in ((GROUP, 59259), (GROUP, 59260), ("ff05::9", 59259)):
        reply = say(machine, group, "all", port=port)
        assert heard(reply, "all", group), (group, port, reply)

    def loggers() -> set[str]:
        return {str(e.get("LOGGER")) for e in journal(machine, "-u", "mcastd.service")}

    wait_until(
        lambda: {"mcastd.group.239.0.0.9", "mcastd.group.ff05::9"} <= loggers(),
        "per-group logger names in journalctl -u mcastd",
    )


def test_instance_of_a_served_group_fails_without_restart(machine: Container) -> None:
    done = machine.run(["systemctl", "start", INSTANCE], check=False)
    assert done.returncode != 0
    props = show(
        machine, INSTANCE, "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts"
    )
    assert props["ActiveState"] == "failed"
    assert props["SubState"] == "failed"  # not auto-restart
    assert props["Result"] == "exit-code"
    assert props["ExecMainStatus"] == "69"
    messages = unit_messages(machine, INSTANCE)
    assert any(f"{GROUP}:59259: address already in use" in m for m in messages), messages[-10:]
    assert show(machine, "mcastd.service", "ActiveState")["ActiveState"] == "active"
    machine.run(["systemctl", "reset-failed", INSTANCE])
