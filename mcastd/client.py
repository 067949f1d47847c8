"""`mcastd say`: send one datagram to a group and collect the replies (upstream's SAY)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

from mcastd import net
from mcastd.config import Endpoint
from mcastd.errors import SocketSetupError, strerror
from mcastd.protocol import RECEIVE_BUFFER


def say(endpoint: Endpoint, message: bytes, wait: float) -> Iterator[tuple[tuple[str, int], bytes]]:
    """Send `message` to the endpoint's group; yield (sender, reply) until `wait` seconds pass."""
    try:
        sock = socket.socket(endpoint.family, socket.SOCK_DGRAM)
    except OSError as e:
        raise SocketSetupError(str(endpoint), e.errno or 0, strerror(e.errno or 0)) from e
    with sock:
        try:
            _, index = net.memberships(endpoint)
            net.apply_ttl(sock, endpoint)
            net.apply_interface(sock, endpoint, index)
            sock.sendto(message, (endpoint.group, endpoint.port))
        except OSError as e:
            raise SocketSetupError(str(endpoint), e.errno or 0, strerror(e.errno or 0)) from e
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                data, sender = sock.recvfrom(RECEIVE_BUFFER)
            except OSError:
                continue  # an ICMP error for an earlier datagram: keep listening
            yield (sender[0], sender[1]), data
