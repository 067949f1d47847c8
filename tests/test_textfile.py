"""mcastd.textfile: the 0.0.4 text file for node_exporter, replaced in one rename."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcastd.textfile import render, write_atomically
from tests.test_metrics import document, endpoint


def test_render_is_text_format_without_info_type() -> None:
    text = render([document("mcastd", endpoint(received=4))]).decode()
    assert "# TYPE mcastd_build_info gauge" in text
    assert "# TYPE mcastd_requests_received_total counter" in text
    assert " info\n" not in text  # no `# TYPE x info` line: 0.0.4 has no such type
    assert "# EOF" not in text  # not OpenMetrics
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["mcastd_requests_received"].samples
    assert sample.value == 4


def test_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "mcastd.prom"
    path.write_text("old\n")
    write_atomically(str(path), b"new\n")
    assert path.read_text() == "new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["mcastd.prom"]  # no temporary file left


def test_write_into_a_missing_directory_fails_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomically(str(tmp_path / "absent" / "mcastd.prom"), b"x\n")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "mcastd.prom"
    path.write_text("old\n")
    with pytest.raises(TypeError):
        write_atomically(str(path), "not bytes")  # type: ignore[arg-type]
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["mcastd.prom"]
