"""The per-group line budget and the choice between the journal and stderr."""

from __future__ import annotations

import io
import logging
import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from mcastd.journal import LineBudget, group_logger, setup_logging, stderr_is_journal


def test_budget_allows_per_second_then_counts_the_rest():
    budget = LineBudget(per_second=3)
    assert [budget.take(10.0 + i * 0.01) for i in range(5)] == [True, True, True, False, False]
    assert budget.take_suppressed(10.5) == 0  # the window is still open
    assert budget.take_suppressed(11.0) == 2
    assert budget.take_suppressed(11.1) == 0  # handed over once
    assert budget.take(11.2) is True  # a new window


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=300))
def test_budget_never_exceeds_its_rate_and_loses_no_count(offsets: list[float]):
    budget = LineBudget(per_second=20)
    times = sorted(offsets)
    written = [t for t in times if budget.take(t)]
    assert len(written) + budget.take_suppressed(float("inf")) == len(times)
    for t in written:
        assert sum(1 for u in written if t <= u < t + 1.0) <= 40  # two windows can overlap a second


def test_journal_is_chosen_only_when_journal_stream_is_our_stderr():
    with tempfile.TemporaryFile("w") as f:
        st_ = os.fstat(f.fileno())
        assert stderr_is_journal(f, {"JOURNAL_STREAM": f"{st_.st_dev}:{st_.st_ino}"})
        assert not stderr_is_journal(f, {"JOURNAL_STREAM": "1:2"})
        assert not stderr_is_journal(f, {})


def test_plain_lines_on_stderr_with_per_group_logger_names():
    stream = io.StringIO()
    handler = setup_logging("info", stream)
    try:
        group_logger("ff05::9").info("hello %s", "there")
        group_logger("239.0.0.9").debug("not shown at info")
    finally:
        logging.getLogger("mcastd").removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO mcastd.group.ff05::9: hello there")
