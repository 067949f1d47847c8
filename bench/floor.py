"""The floor: what CPython can do at all. recvfrom, .upper(), sendto on one socket, nothing else.

Run as `python -m bench.floor GROUP PORT`. Sends READY=1 to $NOTIFY_SOCKET once joined, so
the runner times it the same way as mcastd. SIGTERM ends it (default action).
"""

from __future__ import annotations

import os
import socket
import sys


def main() -> None:
    group, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # The same receive buffer mcastd asks for (net.RECEIVE_BUFFER_BYTES), so that both hold
    # the same backlog; the kernel caps it at net.core.rmem_max.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((group, port))
    mreq = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    notify = os.environ.get("NOTIFY_SOCKET")
    if notify:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as n:
            n.sendto(b"READY=1", notify)
    recvfrom = sock.recvfrom
    sendto = sock.sendto
    while True:
        data, source = recvfrom(2048)
        sendto(data.upper(), source)


if __name__ == "__main__":
    main()
