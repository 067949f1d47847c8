"""Every journal MESSAGE_ID has a catalog entry, and every entry a MESSAGE_ID."""

from __future__ import annotations

import re
from pathlib import Path

from mcastd.messages import MessageId, endpoint_fields

CATALOG = Path(__file__).resolve().parent.parent / "systemd" / "mcastd.catalog"


def entries() -> dict[str, str]:
    text = CATALOG.read_text()
    parts = re.split(r"^-- ([0-9a-f]{32})\n", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_catalog_explains_every_message_id_and_no_other():
    assert set(entries()) == {m.value for m in MessageId}


def test_each_entry_has_a_subject_support_and_text():
    for message_id, body in entries().items():
        head, _, text = body.partition("\n\n")
        assert re.search(r"^Subject: \S", head, re.MULTILINE), message_id
        assert "Defined-By: mcastd" in head
        assert "Support: man:mcastd(8)" in head
        assert len(text.split()) >= 15, message_id


def test_ids_are_unique_128_bit_hex():
    values = [m.value for m in MessageId]
    assert len(set(values)) == len(values)
    assert all(re.fullmatch(r"[0-9a-f]{32}", v) for v in values)


def test_endpoint_fields_name_the_group_port_sender_and_event():
    assert endpoint_fields("ff05::9", 59259) == {"MCAST_GROUP": "ff05::9", "MCAST_PORT": 59259}
    assert endpoint_fields(
        "239.0.0.9", 59259, ("10.0.0.1", 4242), MessageId.STOP_REFUSED
    ) == {
        "MCAST_GROUP": "239.0.0.9",
        "MCAST_PORT": 59259,
        "MCAST_SOURCE": "10.0.0.1:4242",
        "MESSAGE_ID": MessageId.STOP_REFUSED.value,
    }
