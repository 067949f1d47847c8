"""client: `mcastd say` against a real channel in a namespace."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator

import pytest

from mcastd import client
from mcastd.channel import Channel
from mcastd.cli import build_parser
from mcastd.config import Endpoint, Settings
from mcastd.errors import SocketSetupError
from mcastd.net import open_group_socket
from tests.netns import NetNS

pytestmark = pytest.mark.net
GROUP, PORT = "239.0.0.9", 59259


@pytest.fixture
def responder(netns: NetNS) -> Iterator[Channel]:
    """An mcastd channel on GROUP:PORT, answering from a thread until the test ends."""
    endpoint = Endpoint(GROUP, PORT, Settings(log_datagrams=False))
    with netns.entered():
        channel = Channel(endpoint, open_group_socket(endpoint), None, None, 0.0)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            ready, _, _ = select.select([channel.group_socket.sock], [], [], 0.05)
            if ready:
                channel.serve_batch(0.0, 0.0)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield channel
    finally:
        done.set()
        thread.join()
        channel.close()


def test_say_yields_each_reply_with_its_sender(netns: NetNS, responder: Channel):
    with netns.entered():
        replies = list(client.say(Endpoint(GROUP, PORT), b"hello", 0.5))
    assert len(replies) == 1
    (sender, data) = replies[0]
    assert sender == ("127.0.0.1", PORT)
    assert data.startswith(b"HEAR [ HELLO SAID ('127.0.0.1', ")
    assert data.endswith(f") ] from {GROUP}".encode())


def test_say_on_a_missing_interface_is_a_setup_error(netns: NetNS):
    endpoint = Endpoint(GROUP, PORT, Settings(interface="eth7"))
    with netns.entered(), pytest.raises(SocketSetupError, match="interface eth7: does not exist"):
        list(client.say(endpoint, b"x", 0.1))


def test_main_prints_replies_and_exits_by_whether_anyone_answered(
    netns: NetNS, responder: Channel, capsys: pytest.CaptureFixture[str]
):
    with netns.entered():
        answered = client.main(build_parser().parse_args(["say", "--wait", "0.5", "hi"]))
        nobody = client.main(
            build_parser().parse_args(["say", "--group", "239.0.0.99", "--wait", "0.2", "hi"])
        )
        stop = client.main(build_parser().parse_args(["say", "--wait", "0.5", "--stop"]))
    out = capsys.readouterr().out.splitlines()
    assert (answered, nobody, stop) == (0, 1, 0)
    assert out[0].startswith(f"127.0.0.1:{PORT} HEAR [ HI SAID ")
    assert out[1].startswith(f"127.0.0.1:{PORT} HEAR [ STOP SAID ")
    assert responder.counters.stop_refused == {}  # a plain STOP, accepted by the rules
