"""Journal MESSAGE_IDs of the events an operator may want to find or be alerted on.

Each is explained in systemd/mcastd.catalog (installed to /usr/lib/systemd/catalog), so that
`journalctl -x` shows help text, and `journalctl MESSAGE_ID=...` lists every such event.
The values never change once released.
"""

from __future__ import annotations

from enum import StrEnum

from mcastd.addresses import format_address


class MessageId(StrEnum):
    STARTING = "b5c6ecbeb947433889a1b719e39d0549"
    READY = "39a06ba87333445285d550d760efeba5"
    GROUP_JOINED = "b5d8d9da1fd94ebba96d974e5dc22889"
    GROUP_LEFT = "0f03749aa91a42aa927eb5fe726a3aac"
    INTERFACE_LOST = "8a0a01bd8b6942f7b402affd9c8710af"
    RELOAD_OK = "044d2dc48dd044e691637aeacc8a0353"
    RELOAD_FAILED = "d0cd07a9142940c9bb69e13fabd69c71"
    STOP_ACCEPTED = "6c0f218a82fe4a9bbd4303ec988fad37"
    STOP_REFUSED = "d55fa8fe3b074800ab6c88e18c2998ae"
    SHUTDOWN = "62b936198a22418593b4671aed7e9f22"
    SETUP_FAILED = "f22abc1d47784cbfb389775f010a5637"
    GROUP_FAILING = "c6585723afe646068de7f4e062e8f2fa"


def event(message_id: MessageId) -> dict[str, object]:
    """Journal fields (`extra=`) that mark a log line as this event."""
    return {"MESSAGE_ID": message_id.value}


def endpoint_fields(
    group: str,
    port: int,
    source: tuple[str, int] | None = None,
    message_id: MessageId | None = None,
) -> dict[str, object]:
    """Journal fields of a line about one (group, port), and the datagram's sender if any."""
    fields: dict[str, object] = {"MCAST_GROUP": group, "MCAST_PORT": port}
    if source is not None:
        fields["MCAST_SOURCE"] = format_address(source[0], source[1])
    if message_id is not None:
        fields |= event(message_id)
    return fields
