"""Every journal MESSAGE_ID has a catalog entry, and every entry a MESSAGE_ID."""

from __future__ import annotations

import re
from pathlib import Path

from mcastd.messages import MessageId

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
