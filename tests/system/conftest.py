"""One booted systemd container per session, with the freshly built .deb installed.

The tests in this directory run against that one container, module after
module in MODULE_ORDER and test after test in file order; each leaves it in
the state the next one expects (see each module's docstring). The package is
purged at the very end (test_upgrade_and_purge.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import netns_script
from tests.system.container import Container

REPO = Path(__file__).resolve().parents[2]
DEB_DIR = "/srv/mcastd-debs"  # inside the container; readable by apt's _apt user
UPGRADE_SUFFIX = "+rebuild1"
MODULE_ORDER = (
    "test_debian_service.py",
    "test_operator_visibility.py",
    "test_field.py",
    "test_exporter.py",
    "test_upgrade_and_purge.py",
)

GROUP = "239.0.0.9"
INSTANCE = f"mcastd@{GROUP}.service"
CONFIG = "/etc/mcastd.yaml"
# The type of pytest's record_property fixture.
RecordProperty = Callable[[str, object], None]
# A DynamicUser= UID comes from this range (systemd's default).
DYNAMIC_UIDS = range(61184, 65520)
TWO_PORTS = """\
port: 59259
groups:
  - group: 239.0.0.9
    ports: [59259, 59260]
  - group: ff05::9
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put this directory's tests in MODULE_ORDER (file order within a module).

    Only their own slots in the session's list are reshuffled: tests elsewhere
    keep their places.
    """
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    ours = sorted(
        (items[i] for i in slots),
        key=lambda item: (
            MODULE_ORDER.index(item.path.name)
            if item.path.name in MODULE_ORDER
            else len(MODULE_ORDER)
        ),
    )
    for slot, item in zip(slots, ours, strict=True):
        items[slot] = item


@dataclass(frozen=True)
class Debs:
    first: Path
    upgrade: Path


def _build(out: Path, *args: str) -> Path:
    done = subprocess.run(
        [str(REPO / "scripts" / "build-deb"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"scripts/build-deb {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    (deb,) = out.glob("mcastd_*_all.deb")
    return deb


@pytest.fixture(scope="session")
def debs(tmp_path_factory: pytest.TempPathFactory) -> Debs:
    """The package as built from this tree, and the same rebuilt with a higher version.

    MCASTD_SYSTEM_DEBS names a directory holding both, built elsewhere (by
    scripts/other-release, on another Debian release).
    """
    if os.geteuid() != 0:
        pytest.fail("the system tests build a .deb and boot a container: run them as root")
    prebuilt = os.environ.get("MCASTD_SYSTEM_DEBS")
    if prebuilt:
        built = sorted(Path(prebuilt).glob("mcastd_*_all.deb"))
        upgrades = [deb for deb in built if UPGRADE_SUFFIX in deb.name]
        firsts = [deb for deb in built if UPGRADE_SUFFIX not in deb.name]
        if len(firsts) != 1 or len(upgrades) != 1:
            pytest.fail(f"MCASTD_SYSTEM_DEBS={prebuilt}: want one .deb and one {UPGRADE_SUFFIX}")
        return Debs(firsts[0], upgrades[0])
    first = _build(tmp_path_factory.mktemp("deb-first"))
    upgrade = _build(tmp_path_factory.mktemp("deb-upgrade"), "--version-suffix", UPGRADE_SUFFIX)
    return Debs(first, upgrade)


def _setup_network(c: Container) -> None:
    """IPv4 multicast on lo; IPv6 multicast on a veth pair mc0/mc1 inside the container
    (`scripts/netns local`, run from the host in the container's network namespace)."""
    netns_script("-p", str(c.leader), "local", "mc0", "mc1")
    links = c.run(["ip", "-o", "link", "show"]).stdout
    names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    assert names == {"lo", "mc0", "mc1"}, f"unexpected links in the container: {names}"
    wait_for_link_local(c, "mc0")


@pytest.fixture(scope="session")
def machine(debs: Debs) -> Iterator[Container]:
    """The booted container with the first .deb installed by apt-get."""
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn is missing: apt-get install systemd-container")
    # scripts/other-release boots another Debian release's root instead of /.
    c = Container(lower=os.environ.get("MCASTD_SYSTEM_ROOT", "/"))
    try:
        c.start()
        _setup_network(c)
        # A Docker-style policy-rc.d (exit 101) in the host image would forbid the
        # maintainer scripts to start or stop anything; a booted Debian host has none.
        c.run(["rm", "-f", "/usr/sbin/policy-rc.d"])
        c.run(["mkdir", "-p", DEB_DIR])
        for deb in (debs.first, debs.upgrade):
            c.write(f"{DEB_DIR}/{deb.name}", deb.read_bytes())
        c.run(["chmod", "-R", "a+rX", DEB_DIR])
        c.run(["apt-get", "install", "-y", f"{DEB_DIR}/{debs.first.name}"], timeout=120)
        yield c
    finally:
        c.destroy()


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll until `predicate()` is true; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def wait_for_link_local(c: Container, link: str) -> None:
    """Poll until `link` has its IPv6 link-local address."""
    wait_until(
        lambda: "fe80" in c.run(["ip", "-6", "-o", "addr", "show", "dev", link]).stdout,
        f"a link-local address on {link}",
    )


def show(c: Container, unit: str, *props: str) -> dict[str, str]:
    """`systemctl show` properties of a unit as a dict."""
    out = c.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def say(
    c: Container, group: str, *words: str, port: int | None = None, wait: float = 1.0
) -> subprocess.CompletedProcess[str]:
    """`mcastd say` run inside the container; its exit status is not checked."""
    argv = ["mcastd", "say", "--group", group, "--wait", str(wait)]
    if port is not None:
        argv += ["--port", str(port)]
    return c.run([*argv, *words], check=False)


def journal(c: Container, *match: str) -> list[dict[str, object]]:
    """Journal entries of this boot matching `match` (e.g. `-u`, `UNIT`), as dicts."""
    c.run(["journalctl", "--sync"], check=False)
    out = c.run(["journalctl", "-b", "-o", "json", "--no-pager", *match]).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def exposure(c: Container, unit: str) -> tuple[float, str]:
    """`systemd-analyze security`'s overall exposure level of `unit`, and its whole output."""
    out = c.run(["systemd-analyze", "security", "--no-pager", unit]).stdout
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert match, out
    return float(match.group(1)), out


def unit_messages(c: Container, unit: str) -> list[str]:
    """The MESSAGE= of each journal entry of `unit` in this boot."""
    return [str(e.get("MESSAGE", "")) for e in journal(c, "-u", unit)]


def heard(result: object, text: str, group: str) -> bool:
    """True if `mcastd say` printed the HEAR reply for `text` from `group`."""
    out = getattr(result, "stdout", "")
    return f"HEAR [ {text.upper()} SAID (" in out and out.rstrip().endswith(f"] from {group}")


def active_mcastd_units(c: Container) -> list[str]:
    """The mcastd units that are active right now."""
    out = c.run(
        ["systemctl", "list-units", "--no-legend", "--plain", "--state=active", "mcastd*"]
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]
