"""Issue 12 under the booted systemd: the packaged exporter units, socket-activated.

Runs after the other modules that leave mcastd.service enabled (or from a fresh install
when run alone): it makes sure mcastd.service runs, starts one instance mcastd@239.0.0.10
beside it, enables mcastd-exporter.socket and scrapes it from inside the container. It
leaves the container as it found it: the instance, the exporter's units and its
configuration file gone, mcastd.service in the state it had. Every datagram stays on the
container's lo.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.system.conftest import (
    DYNAMIC_UIDS,
    RecordProperty,
    exposure,
    show,
    unit_messages,
    wait_until,
)
from tests.system.container import Container

pytestmark = pytest.mark.system

SOCKET_UNIT = "mcastd-exporter.socket"
SERVICE_UNIT = "mcastd-exporter.service"
SECOND = "239.0.0.10"
INSTANCE = f"mcastd@{SECOND}.service"
URL = "http://127.0.0.1:9859"
EXPORTER_CONFIG = "/etc/mcastd-exporter.yaml"
# The probe is sent by the sandboxed service itself: to the instance's group on lo.
MODULE = f"""\
modules:
  lo:
    group: {SECOND}
    count: 3
    interval: 0.05
    wait: 0.5
    expect: [127.0.0.1]
    min_interval: 1
"""
TEXTFILE_UNITS = ("mcastd-textfile.service", "mcastd-textfile.timer")
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
EXAMPLES = "/usr/share/doc/mcastd/examples"
# Run inside the container: GET a URL, print the status and the body.
GET = """
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=20) as r:
        print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.read().decode())
"""


def get(c: Container, path: str) -> tuple[int, str]:
    out = c.run(["python3", "-c", GET, URL + path]).stdout
    code, _, body = out.partition("\n")
    return int(code), body


def samples(text: str, name: str) -> dict[str, float]:
    """`{labels}` -> value of every sample of metric `name` in a 0.0.4 text."""
    found = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(\{{[^}}]*\}})? (\S+)", line)
        if match:
            found[match.group(1) or ""] = float(match.group(2))
    return found


@pytest.fixture(scope="module")
def host(machine: Container) -> Iterator[Container]:
    was_active = show(machine, "mcastd.service", "ActiveState")["ActiveState"] == "active"
    machine.write(EXPORTER_CONFIG, MODULE)
    try:
        machine.run(["systemctl", "start", "mcastd.service", INSTANCE])
        yield machine
    finally:
        machine.run(["systemctl", "disable", "--now", SOCKET_UNIT, SERVICE_UNIT], check=False)
        machine.run(["systemctl", "stop", INSTANCE], check=False)
        machine.run(["systemctl", "disable", "--now", "mcastd-textfile.timer"], check=False)
        machine.run(
            ["rm", "-f", EXPORTER_CONFIG, *(f"/etc/systemd/system/{u}" for u in TEXTFILE_UNITS)]
        )
        machine.run(["rm", "-rf", TEXTFILE_DIR], check=False)
        machine.run(["systemctl", "daemon-reload"], check=False)
        if not was_active:
            machine.run(["systemctl", "stop", "mcastd.service"], check=False)


def test_units_are_installed_but_not_enabled(host: Container) -> None:
    for unit in (SOCKET_UNIT, SERVICE_UNIT):
        state = show(host, unit, "UnitFileState", "ActiveState", "LoadState")
        assert state["LoadState"] == "loaded", (unit, state)
        assert state["ActiveState"] == "inactive", (unit, state)
    assert show(host, SOCKET_UNIT, "UnitFileState")["UnitFileState"] == "disabled"


def test_first_scrape_starts_the_exporter_and_it_sees_every_daemon(host: Container) -> None:
    host.run(["systemctl", "enable", "--now", SOCKET_UNIT])
    assert show(host, SOCKET_UNIT, "ActiveState")["ActiveState"] == "active"
    assert show(host, SERVICE_UNIT, "ActiveState")["ActiveState"] == "inactive"

    code, text = get(host, "/metrics")
    assert code == 200, text
    assert show(host, SERVICE_UNIT, "ActiveState")["ActiveState"] == "active"
    serving = samples(text, "mcastd_serving")
    assert serving[f'{{group="{SECOND}",port="59259",unit="mcastd@{SECOND}"}}'] == 1
    assert serving['{group="239.0.0.9",port="59259",unit="mcastd"}'] == 1
    assert samples(text, "mcastd_exporter_errors") == {"": 0}
    units = {key for key in samples(text, "mcastd_build_info")}
    assert len(units) == 2, units


def test_exporter_runs_as_a_dynamic_user_in_group_mcastd(host: Container) -> None:
    pid = show(host, SERVICE_UNIT, "MainPID")["MainPID"]
    status = host.run(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    gid = int(host.run(["getent", "group", "mcastd"]).stdout.split(":")[2])
    assert {int(g) for g in fields["Gid"].split()} == {gid}
    assert int(fields["Uid"].split()[0]) in DYNAMIC_UIDS


def test_probe_from_the_sandboxed_service(host: Container) -> None:
    code, text = get(host, "/probe?module=lo")
    assert code == 200, text
    assert samples(text, "probe_success") == {"": 1}, text
    assert samples(text, "probe_responder_up") == {'{responder="127.0.0.1"}': 1}
    code, text = get(host, "/probe?module=elsewhere")
    assert (code, text.strip()) == (400, "unknown module 'elsewhere': known modules are lo")


def test_security_exposure_at_most_1_5(host: Container, record_property: RecordProperty) -> None:
    level, out = exposure(host, SERVICE_UNIT)
    record_property(f"exposure {SERVICE_UNIT}", level)
    assert level <= 1.5, out


def test_exporter_journal_names_where_it_listens(host: Container) -> None:
    def started() -> bool:
        out = "\n".join(unit_messages(host, SERVICE_UNIT))
        return "mcastd exporter" in out and "listening on ('127.0.0.1', 9859)" in out

    wait_until(started, "the exporter's start line in the journal")


def test_shipped_textfile_timer_writes_the_metrics(host: Container) -> None:
    for unit in TEXTFILE_UNITS:
        host.run(["cp", f"{EXAMPLES}/{unit}", f"/etc/systemd/system/{unit}"])
    host.run(["mkdir", "-p", TEXTFILE_DIR])
    host.run(["systemctl", "daemon-reload"])
    host.run(["systemctl", "enable", "--now", "mcastd-textfile.timer"])
    output = f"{TEXTFILE_DIR}/mcastd.prom"
    wait_until(
        lambda: host.run(["test", "-s", output], check=False).returncode == 0,
        "the timer's first run to write the file",
    )
    text = host.run(["cat", output]).stdout
    serving = samples(text, "mcastd_serving")
    assert serving[f'{{group="{SECOND}",port="59259",unit="mcastd@{SECOND}"}}'] == 1
    assert show(host, "mcastd-textfile.service", "Result")["Result"] == "success"
    # Only the file itself: the temporary file was renamed over it.
    assert host.run(["ls", "-A", TEXTFILE_DIR]).stdout.split() == ["mcastd.prom"]
