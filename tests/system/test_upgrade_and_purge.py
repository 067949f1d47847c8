"""Package upgrade and purge under the booted systemd: the last module on the container.

Starts where test_operator_visibility.py leaves it (mcastd.service enabled and
running, /etc/mcastd.yaml as TWO_PORTS) and ends with the package purged.
Every datagram stays on the container's lo or its own veth pair.
"""

from __future__ import annotations

import pytest

from tests.system.conftest import (
    CONFIG,
    DEB_DIR,
    GROUP,
    INSTANCE,
    TWO_PORTS,
    UPGRADE_SUFFIX,
    Debs,
    active_mcastd_units,
    heard,
    say,
    show,
    unit_messages,
)
from tests.system.container import Container

pytestmark = pytest.mark.system


def test_upgrade_keeps_edited_conffile_and_restarts_running_units(
    machine: Container, debs: Debs
) -> None:
    # State: mcastd.service runs (enabled); add an instance for another group.
    other = "mcastd@239.0.0.11.service"
    machine.run(["systemctl", "start", other])
    edited = TWO_PORTS + "# edited by the operator\n"
    machine.write(CONFIG, edited)
    before = {u: show(machine, u, "MainPID")["MainPID"] for u in ("mcastd.service", other)}

    machine.run(["apt-get", "install", "-y", f"{DEB_DIR}/{debs.upgrade.name}"], timeout=120)

    version = machine.run(["dpkg-query", "-W", "-f=${Version}", "mcastd"]).stdout
    assert version.endswith(UPGRADE_SUFFIX)
    assert machine.run(["cat", CONFIG]).stdout == edited
    for unit, pid in before.items():
        props = show(machine, unit, "MainPID", "ActiveState")
        log = unit_messages(machine, unit)
        assert props["ActiveState"] == "active", (unit, log[-12:])
        assert props["MainPID"] != pid, f"{unit} was not restarted"
    assert show(machine, INSTANCE, "ActiveState")["ActiveState"] == "inactive"
    assert heard(say(machine, "239.0.0.11", "upgraded"), "upgraded", "239.0.0.11")
    assert heard(say(machine, GROUP, "upgraded", port=59260), "upgraded", GROUP)


def test_purge_removes_conffile_and_stops_everything(machine: Container) -> None:
    machine.run(["systemctl", "enable", "mcastd@239.0.0.11.service"])
    machine.run(["systemctl", "start", "mcastd-exporter.socket"])  # the prerm stops it too
    machine.run(["apt-get", "purge", "-y", "mcastd"], timeout=120)

    assert active_mcastd_units(machine) == []
    assert machine.run(["pgrep", "-f", "/usr/bin/mcastd"], check=False).returncode == 1
    assert machine.run(["test", "-e", CONFIG], check=False).returncode == 1
    status = machine.run(["dpkg-query", "-W", "-f=${Status}", "mcastd"], check=False).stdout
    assert "installed" not in status.replace("not-installed", "")
    leftovers = machine.run(["find", "/etc/systemd/system", "-name", "mcastd*"]).stdout
    assert leftovers == ""
    # The system group stays, as Debian leaves system users and groups: files
    # elsewhere may still belong to it, and a reinstall finds the same GID.
    assert machine.run(["getent", "group", "mcastd"], check=False).returncode == 0
