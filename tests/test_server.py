"""server: the loop in this process, on real sockets in a namespace, with real signals.

The notifier's sender is the seam: it sees READY=1 from inside the loop, and sends this
process a signal from there, so no test sleeps or races the loop.
"""

from __future__ import annotations

import os
import selectors
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcastd.config import Config, Endpoint, parse
from mcastd.control import query
from mcastd.errors import SocketSetupError
from mcastd.launch import read_config
from mcastd.messages import MessageId
from mcastd.net import GroupSocket, open_group_socket
from mcastd.notify import Notifier
from mcastd.server import Server
from mcastd.snapshot import Document
from tests.logs import Records
from tests.netns import NetNS, collect

pytestmark = pytest.mark.net
PORT = 59259


class Notes:
    """sd_notify messages, and what to do on each READY=1 (from inside the loop)."""

    def __init__(self, *on_ready: Callable[[], None]) -> None:
        self.sent: list[str] = []
        self.on_ready = list(on_ready)

    def send(self, state: str) -> bool:
        self.sent.append(state)
        if state.startswith("READY=1") and self.on_ready:
            self.on_ready.pop(0)()
        return True


def kill(signum: signal.Signals) -> Callable[[], None]:
    return lambda: os.kill(os.getpid(), signum)


def config(text: str) -> Config:
    return parse(text, "test.yaml")


def test_serves_until_a_stop_datagram_and_closes_everything(netns: NetNS, journal: Records):
    notes = Notes()
    server = Server(config("groups: [239.0.0.9, 239.0.0.10]\n"), Notifier(notes.send))
    with netns.entered():
        server.open()
    sockets = server.sockets()
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    me = f"127.0.0.1:{client.getsockname()[1]}"
    # Queued before the loop starts: the sockets are open, the kernel keeps them.
    # (One socket: which of two ready sockets epoll names first is not ours to say.)
    client.sendto(b"hello", ("239.0.0.9", PORT))
    client.sendto(b"STOP", ("239.0.0.9", PORT))
    assert server.run() == f"STOP from {me} on 239.0.0.9:{PORT}"
    replies = collect(client, quiet=0.3)
    assert sorted(r.split(b" SAID")[0] for r in replies) == [b"HEAR [ HELLO", b"HEAR [ STOP"]
    assert notes.sent[0] == "READY=1\nSTATUS=2 groups, 0 heard, 0 answered, 0 dropped"
    assert notes.sent[-1] == f"STOPPING=1\nSTATUS=stopping: STOP from {me} on 239.0.0.9:{PORT}"
    assert server.channels == {}
    assert all(s.fileno() == -1 for s in sockets)
    assert len(journal.with_id(MessageId.GROUP_LEFT)) == 2
    assert journal.with_id(MessageId.STOP_ACCEPTED) == [
        f"239.0.0.9:{PORT}: STOP from {me} accepted"
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_loop_and_the_handlers_are_put_back(
    netns: NetNS, signum: signal.Signals
):
    before = signal.getsignal(signum)
    server = Server(config("groups: [239.0.0.9]\n"), Notifier(Notes(kill(signum)).send))
    with netns.entered():
        server.open()
    assert server.run() == signum.name
    assert signal.getsignal(signum) is before


def test_sighup_reloads_between_batches_keeping_unchanged_sockets(netns: NetNS):
    texts = ["ttl: 3\ngroups: [239.0.0.9, 239.0.0.11]\n"]
    seen: dict[str, object] = {}

    def reloaded() -> None:
        seen["keys"] = sorted(server.channels)
        seen["kept"] = server.channels[("239.0.0.9", PORT)].group_socket.sock
        seen["ttl"] = server.channels[("239.0.0.9", PORT)].endpoint.ttl
        os.kill(os.getpid(), signal.SIGTERM)

    notes = Notes(kill(signal.SIGHUP), reloaded)
    server = Server(
        config("groups: [239.0.0.9, 239.0.0.10]\n"),
        Notifier(notes.send),
        reload_config=lambda: config(texts[0]),
        wall_clock=lambda: 1_800_000_000.0,
    )
    with netns.entered():
        server.open()
        kept = server.channels[("239.0.0.9", PORT)].group_socket.sock
        assert server.run() == "SIGTERM"
    assert seen == {"keys": [("239.0.0.11", PORT), ("239.0.0.9", PORT)], "kept": kept, "ttl": 3}
    assert server.last_reload == {"time": 1_800_000_000.0, "ok": True, "errors": []}
    assert any(m.startswith("RELOADING=1\nMONOTONIC_USEC=") for m in notes.sent)


def test_a_bad_reload_keeps_the_old_config_and_says_why(netns: NetNS, journal: Records):
    def broken() -> Config:
        return config("ttl: 300\n")  # raises ConfigError

    notes = Notes(kill(signal.SIGHUP), kill(signal.SIGTERM))
    server = Server(config("groups: [239.0.0.9]\n"), Notifier(notes.send), reload_config=broken)
    with netns.entered():
        server.open()
        server.run()
    assert server.last_reload is not None
    assert server.last_reload["errors"] == ["test.yaml:1:6: ttl: 300 is not a TTL (0-255)"]
    assert "READY=1\nSTATUS=reload failed; 1 group, 0 heard, 0 answered, 0 dropped" in notes.sent
    assert journal.with_id(MessageId.RELOAD_FAILED)[-1] == (
        "reload failed: still serving the previous configuration"
    )


def test_open_is_all_or_nothing(netns: NetNS):
    opened: list[GroupSocket] = []

    def opener(endpoint: Endpoint) -> GroupSocket:
        if endpoint.group == "239.0.0.10":
            raise SocketSetupError(str(endpoint), 98, "taken")
        opened.append(open_group_socket(endpoint))
        return opened[-1]

    server = Server(
        config("groups: [239.0.0.9, 239.0.0.10]\n"), Notifier(Notes().send), opener=opener
    )
    with netns.entered(), pytest.raises(SocketSetupError, match="taken"):
        server.open()
    assert server.channels == {}
    assert [s.sock.fileno() for s in opened] == [-1]


def test_snapshot_uses_the_clocks_and_lists_waiting_endpoints(netns: NetNS):
    moment = [100.0]
    text = "groups:\n  - group: 239.0.0.9\n  - group: ff02::9\n    interface: mc2eth\n"
    server = Server(
        config(text.replace("  - group: ff02", "  - wait_for_interface: true\n    group: ff02")),
        Notifier(Notes().send),
        control_path=None,
        instance="mcastd@test",
        clock=lambda: moment[0],
        wall_clock=lambda: 1_800_000_000.0,
    )
    with netns.entered():
        server.open()
    moment[0] = 160.5
    try:
        document = server.snapshot()
    finally:
        server.close()
    assert document["instance"] == "mcastd@test"
    assert document["uptime"] == 60.5
    assert document["started"] == 1_800_000_000.0 - 60.5
    assert document["waiting_for_interface"] == [f"[ff02::9]:{PORT}"]
    states = {(e["group"], e["state"]) for e in document["endpoints"]}  # type: ignore[attr-defined]
    assert states == {("239.0.0.9", "serving"), ("ff02::9", "waiting")}


class BuggyStatus(Server):
    """A server whose status document has a bug: what the control socket must contain."""

    def snapshot(self) -> Document:
        raise RuntimeError("a bug in the snapshot")


def test_a_status_request_that_fails_does_not_stop_the_daemon(
    netns: NetNS, tmp_path: Path, journal: Records
):
    client = netns.socket()
    client.bind(("127.0.0.1", 0))
    asked: list[str] = []

    def ask_then_say_hello() -> None:
        try:
            for _ in range(2):
                with pytest.raises(ValueError, match="status failed") as failed:
                    query(tmp_path / "control.sock", timeout=5)
                asked.append(str(failed.value))
            client.sendto(b"hello", ("239.0.0.9", PORT))  # still served
            asked.extend(r.split(b" SAID")[0].decode() for r in collect(client, quiet=1.0))
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=ask_then_say_hello)
    server = BuggyStatus(
        config("groups: [239.0.0.9]\n"),
        Notifier(Notes(thread.start).send),
        control_path=str(tmp_path / "control.sock"),
    )
    with netns.entered():
        server.open()
    try:
        assert server.run() == "SIGTERM"
    finally:
        thread.join()
    failure = "RuntimeError: a bug in the snapshot"
    assert asked == [f"status failed inside mcastd: {failure}"] * 2 + ["HEAR [ HELLO"]
    assert f"control socket: status failed (a bug: please report it): {failure}" in (
        journal.messages
    )


def test_an_interface_is_followed_gone_and_back(netns: NetNS, journal: Records):
    """Late interface: joined when it appears; down/up: re-joined; gone: said once."""
    text = "interface: mc2eth\nwait_for_interface: true\ngroups: [239.0.0.9]\n"
    server = Server(config(text), Notifier(Notes().send))
    selector = selectors.DefaultSelector()
    try:
        with netns.entered():
            server.open()
            assert list(server.backlog.endpoints()) == [("239.0.0.9", PORT)]
            server.recover(selector, 0.0)  # still absent: nothing happens
            assert server.channels == {}
        netns.ip("link", "add", "mc2eth", "type", "veth", "peer", "name", "mc2peer")
        netns.ip("addr", "add", "192.0.2.1/24", "dev", "mc2eth")
        for link in ("mc2eth", "mc2peer"):
            netns.ip("link", "set", link, "up")
        with netns.entered():
            server.recover(selector, 0.0)
        assert list(server.channels) == [("239.0.0.9", PORT)]
        assert len(server.backlog) == 0
        netns.ip("link", "set", "mc2eth", "down")
        with netns.entered():
            server.recover(selector, 0.0)
            server.recover(selector, 0.0)  # no change since: nothing more is said
        netns.ip("link", "set", "mc2eth", "up")
        with netns.entered():
            server.recover(selector, 0.0)
        netns.ip("link", "del", "mc2eth")
        with netns.entered():
            server.recover(selector, 0.0)
    finally:
        server.close()
        selector.close()
    assert journal.with_id(MessageId.INTERFACE_LOST) == [
        f"239.0.0.9:{PORT}: interface mc2eth is down",
        f"239.0.0.9:{PORT}: interface mc2eth went away",
    ]
    joined = journal.with_id(MessageId.GROUP_JOINED)
    assert joined[0] == f"239.0.0.9:{PORT} joined on mc2eth (reply unicast, ttl 1)"
    assert joined[1].startswith(f"239.0.0.9:{PORT}: interface mc2eth is up (index ")
    assert joined[1].endswith("): re-joined")
    assert len(joined) == 2


yaml_texts = st.one_of(
    st.text(max_size=80),
    st.builds(
        "{}groups: [{}]\n".format,
        st.sampled_from(["", "ttl: 2\n", "interface: nope0\n", "reply: group\n", "port: 0\n"]),
        st.lists(
            st.sampled_from(["239.0.0.9", "239.0.0.12", "232.1.1.1", "ff05::9", "10.0.0.1"]),
            max_size=3,
        ).map(", ".join),
    ),
)
group_args = st.lists(
    st.sampled_from(["239.0.0.9", "232.1.1.1", "ff3e::1", "239.0.0.13"]), max_size=2
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(texts=st.lists(st.tuples(yaml_texts, group_args), min_size=1, max_size=4))
def test_any_reload_keeps_the_daemon_running(
    netns: NetNS, tmp_path: Path, texts: list[tuple[str, list[str]]]
):
    """Any file and any --group on SIGHUP: a reload that went through or failed, never a crash.

    (Issue 9: an SSM --group the file does not list raised a bare ValueError on reload.)
    """
    path = tmp_path / "mcastd.yaml"
    path.write_text("groups: [239.0.0.9]\n")
    groups: list[str] = []
    server = Server(
        read_config(str(path), groups, None),
        Notifier(Notes().send),
        reload_config=lambda: read_config(str(path), groups, None),
    )
    selector = selectors.DefaultSelector()
    try:
        with netns.entered():
            server.open()
            for channel in server.channels.values():  # as `run` does
                selector.register(channel.group_socket.sock, selectors.EVENT_READ, channel)
            for text, wanted in texts:
                path.write_text(text)
                groups[:] = wanted
                server.reload(selector)
                assert server.last_reload is not None
                assert server.stop_reason is None
    finally:
        server.close()
        selector.close()
