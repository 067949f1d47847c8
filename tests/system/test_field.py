"""Issue 10 under the booted systemd: the packaged units where hosts really are.

Starts where test_operator_visibility.py leaves the container (mcastd.service
enabled and running, /etc/mcastd.yaml as TWO_PORTS) and hands it back the same
way, with lo carrying IPv4 multicast and the mc0/mc1 veth pair for IPv6.

- A host without IPv6 multicast: the shipped /etc/mcastd.yaml (239.0.0.9 and
  ff05::9) on a container with only lo still gives an active mcastd.service
  that answers 239.0.0.9 and shows ff05::9 failing (status, STATUS=); once a
  link for IPv6 multicast appears, the retry serves ff05::9 too.
- Behind a router: the container's eth0 leads to a router namespace running
  smcrouted (tests/hosts.py `Routed`); a client namespace on the other side
  sends to the group and gets every reply from the packaged unit.
- Public peers: the shipped drop-in widens IPAddressAllow= for both units; a
  client with a TEST-NET source address behind the router gets replies with
  it, and none without it where systemd enforces the filter.
All addresses are private or TEST-NET and exist only in the namespaces the
test makes; nothing reaches the host's interfaces.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from tests.hosts import Host, Routed, enable_ttl, netns_script, replies
from tests.system.conftest import (
    CONFIG,
    GROUP,
    INSTANCE,
    REPO,
    TWO_PORTS,
    RecordProperty,
    heard,
    say,
    show,
    unit_messages,
    wait_for_link_local,
    wait_until,
)
from tests.system.container import Container

pytestmark = pytest.mark.system

PORT = 59259
ONLY_GROUP = f"groups:\n  - group: {GROUP}\n"
DROP_IN = "/usr/share/doc/mcastd/examples/mcastd-public-peers.conf"
DROP_IN_DIRS = ("/etc/systemd/system/mcastd.service.d", "/etc/systemd/system/mcastd@.service.d")
WIDER = ("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "2000::/3")
# A client address outside every range the packaged units allow (TEST-NET-2).
PUBLIC_CLIENT = "198.51.100.2"
REQUESTS = 10


def start(c: Container, verb: str, unit: str, check: bool = True) -> None:
    """`systemctl VERB UNIT` with systemd's start rate limit reset first: this module
    starts mcastd.service more often than StartLimitBurst= allows (5 in 10 s)."""
    c.run(["systemctl", "reset-failed", "mcastd.service"], check=False)
    done = c.run(["systemctl", verb, unit], check=False)
    if check and done.returncode != 0:
        log = unit_messages(c, unit)
        raise AssertionError(f"systemctl {verb} {unit}: {done.stderr}\n" + "\n".join(log[-15:]))


@pytest.fixture(scope="module")
def box(machine: Container) -> Iterator[Host]:
    """The container's network namespace under a name of its own (the name only is removed)."""
    host = Host("box", pid=machine.leader)
    try:
        yield host
    finally:
        host.delete()


def states(c: Container) -> dict[str, tuple[str, str | None]]:
    """mcastd.service's endpoints in `mcastd status --json`: group -> (state, error)."""
    document = json.loads(c.run(["mcastd", "status", "--json"]).stdout)
    (daemon,) = [d for d in document["daemons"] if d["instance"] == "mcastd"]
    return {e["group"]: (e["state"], e["error"]) for e in daemon["endpoints"]}


def add_ipv6_link(c: Container, box: Host) -> None:
    """The veth pair mc0/mc1 of conftest's network set-up, made again."""
    netns_script("veth", box.name, "mc0", box.name, "mc1")
    wait_for_link_local(c, "mc0")


def test_shipped_config_without_ipv6_multicast_is_active(
    machine: Container, box: Host, record_property: RecordProperty
) -> None:
    machine.run(["systemctl", "stop", "mcastd.service"])
    machine.write(CONFIG, (REPO / "etc" / "mcastd.yaml").read_text())  # as shipped
    box.ip("link", "del", "mc0")  # its peer mc1 goes with it: only lo is left
    try:
        start(machine, "start", "mcastd.service", check=False)
        props = show(machine, "mcastd.service", "ActiveState", "SubState", "StatusText")
        log = unit_messages(machine, "mcastd.service")
        assert (props["ActiveState"], props["SubState"]) == ("active", "running"), (props, log[-6:])
        assert props["StatusText"].endswith("; 1 of 2 groups failing"), props
        served = states(machine)
        assert served[GROUP] == ("serving", None)
        assert served["ff05::9"][0] == "failing"
        assert served["ff05::9"][1], served  # the reason
        assert heard(say(machine, GROUP, "v4 only"), "v4 only", GROUP)

        # IPv6 multicast comes (back): the failing group is joined by the retry.
        add_ipv6_link(machine, box)
        since = time.monotonic()
        wait_until(lambda: states(machine)["ff05::9"][0] == "serving", "ff05::9 served")
        record_property("ff05::9 served after its link came", f"{time.monotonic() - since:.1f} s")
        assert heard(say(machine, "ff05::9", "v6 now"), "v6 now", "ff05::9")
        assert "failing" not in show(machine, "mcastd.service", "StatusText")["StatusText"]
    finally:
        machine.run(["systemctl", "stop", "mcastd.service"], check=False)
        if not box.has_link("mc0"):
            add_ipv6_link(machine, box)
        machine.write(CONFIG, TWO_PORTS)
        start(machine, "start", "mcastd.service")


@pytest.fixture(scope="module")
def routed(machine: Container, box: Host) -> Iterator[Routed]:
    """client -- router (smcrouted) -- the container, which serves only GROUP.

    mcastd.service restarts so that it joins GROUP on eth0 (the 224.0.0.0/4
    route now leads there); afterwards lo carries IPv4 multicast again.
    """
    net = Routed(groups=(GROUP,))
    try:
        net.add_client()
        net.add_responder(host=box)
        net.router.start()
        machine.write(CONFIG, ONLY_GROUP)
        start(machine, "restart", "mcastd.service")
        yield net
    finally:
        net.delete()  # the veth pairs go, and the container's eth0 and its routes with them
        machine.run(["ip", "route", "replace", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1"])
        machine.write(CONFIG, TWO_PORTS)
        start(machine, "restart", "mcastd.service")


def ask(client: Host, source: str, tag: str) -> list[tuple[bytes, str, int | None]]:
    """REQUESTS datagrams from `source` (an address of `client`) to GROUP across the router
    (TTL 2); the replies that came back to that socket."""
    sock = client.socket(socket.AF_INET)
    try:
        sock.bind((source, 0))
        interface = bytes(4) + socket.inet_aton(source) + struct.pack("@i", 0)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, interface)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        enable_ttl(sock)
        for n in range(REQUESTS):
            sock.sendto(f"{tag} {n}".encode(), (GROUP, PORT))
        return replies(sock, quiet=1.0)
    finally:
        sock.close()


def test_client_behind_a_router_gets_every_reply(
    routed: Routed, record_property: RecordProperty
) -> None:
    client = routed.client
    assert client.v4 is not None
    got = ask(client, client.v4, "routed")
    said = re.compile(
        rf"HEAR \[ ROUTED (\d+) SAID \('{re.escape(client.v4)}', \d+\) \] from {re.escape(GROUP)}"
    )
    numbers = sorted(int(m.group(1)) for data, _, _ in got if (m := said.fullmatch(data.decode())))
    assert numbers == list(range(REQUESTS)), got
    # The unicast replies leave with the system's default TTL and cross one router.
    ttls = {ttl for _, _, ttl in got}
    record_property("routed replies", f"{len(got)} of {REQUESTS}, received TTL {sorted(ttls)}")
    assert {sender for _, sender, _ in got} == {routed.responder.v4}
    assert len(ttls) == 1
    assert ttls.pop() == 63


def restarted(c: Container, unit: str, old_pid: str) -> bool:
    """True once `unit` is active again under a new main process."""
    props = show(c, unit, "MainPID", "ActiveState")
    return props["ActiveState"] == "active" and props["MainPID"] not in ("0", old_pid)


def test_public_peers_drop_in(
    machine: Container, routed: Routed, record_property: RecordProperty
) -> None:
    client = routed.client
    client.ip("addr", "add", f"{PUBLIC_CLIENT}/24", "dev", "eth0")
    routed.router.ip("route", "add", "198.51.100.0/24", "dev", "eth0")
    routed.router.smcroutectl("add", "eth0", PUBLIC_CLIENT, GROUP, "eth1")
    before = show(machine, "mcastd.service", "IPAddressAllow")["IPAddressAllow"].split()
    assert not set(WIDER) & set(before), before
    without = ask(client, PUBLIC_CLIENT, "public")

    for directory in DROP_IN_DIRS:  # as docs/systemd.md and the drop-in's header say
        machine.run(["mkdir", "-p", directory])
        machine.run(["cp", DROP_IN, f"{directory}/public-peers.conf"])
    try:
        machine.run(["systemctl", "daemon-reload"])
        pid = show(machine, "mcastd.service", "MainPID")["MainPID"]
        start(machine, "restart", "mcastd.target")
        # systemctl waits for the target's job, not for the restarts it carries.
        wait_until(lambda: restarted(machine, "mcastd.service", pid), "the restart by the target")
        for unit in ("mcastd.service", INSTANCE):
            allowed = show(machine, unit, "IPAddressAllow")["IPAddressAllow"].split()
            # systemd folds prefixes inside the wider ones (127/8, 10/8, ...) away.
            assert set(WIDER) <= set(allowed), (unit, allowed)
            assert {"::1/128", "fc00::/7"} <= set(allowed), (unit, allowed)
        with_drop_in = ask(client, PUBLIC_CLIENT, "public")
    finally:
        machine.run(["rm", "-rf", *DROP_IN_DIRS])
        machine.run(["systemctl", "daemon-reload"])
        start(machine, "restart", "mcastd.service")

    assert len(with_drop_in) == REQUESTS
    # IPAddressAllow= is enforced by cgroup BPF programs. Where systemd cannot
    # attach them (no unified cgroup hierarchy; in this nspawn container on
    # Debian 12 and 13 alike), it proceeds without, as docs/systemd.md says.
    # IP accounting uses the same programs: systemd-run reports traffic only
    # if they work.
    probe = machine.run(["systemd-run", "--wait", "-p", "IPAccounting=yes", "true"])
    enforced = "IP traffic received" in probe.stdout + probe.stderr
    record_property(
        "replies to a TEST-NET client without / with the drop-in",
        f"{len(without)} / {len(with_drop_in)} of {REQUESTS}, filter enforced: {enforced}",
    )
    assert len(without) == (0 if enforced else REQUESTS)
