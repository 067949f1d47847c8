"""The log records of the `mcastd` loggers during a test, whatever propagation says."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mcastd.messages import MessageId


class Records(logging.Handler):
    """Every record of the `mcastd` loggers (other tests may have turned propagation off)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    def with_id(self, message_id: MessageId) -> list[str]:
        """The messages logged under this MESSAGE_ID."""
        return [
            r.getMessage()
            for r in self.records
            if getattr(r, "MESSAGE_ID", None) == message_id.value
        ]


@contextmanager
def recording(level: int = logging.INFO) -> Iterator[Records]:
    """Records of the `mcastd` loggers at `level` and above, for the `with` block."""
    handler = Records()
    logger = logging.getLogger("mcastd")
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
