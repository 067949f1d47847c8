"""bench.report: a run of the main bench keeps the sections other benches wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import probe
from bench.report import keep_sections

REPO = Path(__file__).resolve().parent.parent

PROBE = f"{probe.BEGIN}\n## mcastd probe\n\nfan-in table\n{probe.END}\n"
EXPORTER = (
    "<!-- bench.exporter: begin (printed by python3 -m bench.exporter, pasted here) -->\n"
    "## exporter\n\nscrape times\n<!-- bench.exporter: end -->\n"
)
NEW = "# Benchmarks\n\nfresh tables\n"


@pytest.mark.parametrize(
    ("old", "new", "result"),
    [
        ("", NEW, NEW),
        ("# Benchmarks\n\nold tables\n", NEW, NEW),
        (
            "# Benchmarks\n\nold tables\n\n" + PROBE + "\n" + EXPORTER,
            NEW,
            NEW + "\n" + PROBE + "\n" + EXPORTER,
        ),
        # A section the new text carries itself is its own, not the old one.
        (PROBE.replace("fan-in table", "old"), NEW + "\n" + PROBE, NEW + "\n" + PROBE),
        # Without its end marker it is no section: not copied half.
        (f"{probe.BEGIN}\n## cut short\n", NEW, NEW),
    ],
)
def test_keep_sections_table(old: str, new: str, result: str):
    assert keep_sections(old, new) == result


def test_the_probe_section_survives_a_main_bench_write(tmp_path: Path):
    # bench.probe --write puts its section in; the main bench's report then rewrites the file.
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nold tables\n")
    probe.write_section(PROBE, path)
    path.write_text(keep_sections(path.read_text(), NEW))
    probe.write_section(PROBE.replace("fan-in table", "fan-in table, run 2"), path)
    assert path.read_text() == NEW + "\n" + PROBE.replace("fan-in table", "fan-in table, run 2")


def test_every_section_of_the_real_file_is_kept():
    text = (REPO / "docs" / "benchmarks.md").read_text()
    kept = keep_sections(text, NEW)
    assert kept.startswith(NEW)
    assert probe.BEGIN in kept
    assert probe.END in kept
    assert kept.count(": begin") == text.count(": begin")
