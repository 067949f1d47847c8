"""backlog: which endpoints not served are tried when, and each reason said once."""

from __future__ import annotations

import errno
import logging

from mcastd.backlog import Backlog
from mcastd.config import Endpoint, Settings
from mcastd.errors import SocketSetupError
from mcastd.links import ABSENT, LinkState
from mcastd.messages import MessageId
from mcastd.retry import RETRY_SECONDS
from mcastd.snapshot import EndpointState
from tests.logs import recording

ETH = Endpoint("239.0.0.9", 1, Settings(interface="eth9", wait_for_interface=True))
ROUTE = Endpoint("ff05::9", 1)
BUSY = Endpoint("239.0.0.10", 1)
NO_ROUTE = SocketSetupError("[ff05::9]:1", errno.ENODEV, "no route for multicast")
IN_USE = SocketSetupError("239.0.0.10:1", errno.EADDRINUSE, "address already in use")


def there(endpoint: Endpoint) -> LinkState:
    return LinkState(4, True)


def absent(endpoint: Endpoint) -> LinkState:
    return ABSENT


def test_what_is_due_when():
    backlog = Backlog(logging.getLogger("mcastd"))
    backlog.wait(ETH)
    backlog.fail(ROUTE, NO_ROUTE, now=100.0)
    backlog.fail(BUSY, IN_USE, now=100.0)
    assert [p.endpoint for p in backlog.due(100.0, absent)] == []
    assert [p.endpoint for p in backlog.due(100.0, there)] == [ETH]
    later = 100.0 + RETRY_SECONDS
    assert [p.endpoint for p in backlog.due(later, absent)] == [ROUTE]  # not the port in use
    assert backlog.in_state(EndpointState.FAILING) == [ROUTE, BUSY]
    assert backlog.in_state(EndpointState.WAITING) == [ETH]
    backlog.forget_failing()  # a reload tries them all again
    assert backlog.endpoints() == {ETH.key: ETH}
    assert backlog.take(ETH.key) is not None
    assert len(backlog) == 0


def test_each_reason_is_said_once():
    with recording() as records:
        backlog = Backlog(logging.getLogger("mcastd"))
        backlog.wait(ETH)
        backlog.wait(ETH)
        backlog.fail(ROUTE, NO_ROUTE, now=0.0)
        backlog.fail(ROUTE, NO_ROUTE, now=2.0)  # tried again, same reason: quiet
        (pending,) = [p for p in backlog if p.endpoint == ROUTE]
        assert (pending.error, pending.tried) == ("no route for multicast", 2.0)
        other = SocketSetupError("[ff05::9]:1", errno.EADDRNOTAVAIL, "address not there")
        backlog.failed_again(pending, other, now=4.0)  # another reason: said
        (waiting,) = [p for p in backlog if p.endpoint == ETH]
        backlog.failed_again(waiting, IN_USE, now=4.0)
        backlog.failed_again(waiting._replace(error=str(IN_USE)), IN_USE, now=6.0)
    assert records.messages == [
        "239.0.0.9:1: interface eth9 is not there: joining when it appears",
        "[ff05::9]:1 not served, trying again every 2 s: no route for multicast",
        "[ff05::9]:1 not served, trying again every 2 s: address not there",
        "239.0.0.10:1: address already in use",
    ]
    assert len(records.with_id(MessageId.GROUP_FAILING)) == 2
    assert records.with_id(MessageId.SETUP_FAILED) == ["239.0.0.10:1: address already in use"]
