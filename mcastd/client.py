"""`mcastd say`: send one datagram to a group and collect the replies (upstream's SAY)."""

from __future__ import annotations

import argparse
import select
import socket
import time
from collections.abc import Iterator

from mcastd import net
from mcastd.config import Endpoint, Settings, format_address, read_key
from mcastd.errors import ConfigError, SocketSetupError, strerror
from mcastd.exitcodes import ExitCode, fail
from mcastd.protocol import RECEIVE_BUFFER
from mcastd.stopauth import stop_request


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


def main(args: argparse.Namespace) -> int:
    """`mcastd say`: print `sender reply` per line; exit 1 when nobody answered."""
    endpoint = Endpoint(args.group, args.port, Settings(ttl=args.ttl, interface=args.interface))
    if args.stop:
        try:
            key = read_key(args.key_file) if args.key_file else None
        except ConfigError as e:
            return fail(str(e), ExitCode.CONFIG)
        message = stop_request(key, args.group, args.port, time.time()).encode()
    elif args.message_words or args.message:
        words = [*args.message_words, *args.message]  # -m TEXT... (upstream's) and MESSAGE...
        message = " ".join(words).encode("utf-8", errors="surrogateescape")
    else:
        return fail("say: give a MESSAGE, or --stop", ExitCode.USAGE)
    replies = 0
    try:
        for sender, data in say(endpoint, message, args.wait):
            text = data.decode("utf-8", errors="replace")
            print(f"{format_address(*sender)} {text}", flush=True)
            replies += 1
    except SocketSetupError as e:
        return fail(str(e), ExitCode.UNAVAILABLE)
    return ExitCode.OK if replies else ExitCode.NO_REPLY
