"""config.files: which file is read, reading it, and the STOP keys it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcastd.config import Settings, built_in_defaults, load, parse, read_keys, resolve_path
from mcastd.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_shipped_file_equals_built_in_defaults():
    shipped = load(str(REPO / "etc" / "mcastd.yaml"))
    assert shipped.endpoints() == built_in_defaults().endpoints()
    assert shipped.defaults == Settings()


def test_key_files_are_read_and_located(tmp_path: Path):
    good = tmp_path / "good.key"
    good.write_bytes(b"0123456789abcdef0123\n")
    short = tmp_path / "short.key"
    short.write_bytes(b"tiny")
    path = tmp_path / "c.yaml"
    path.write_text(f"stop:\n  key_file: {good}\n")
    assert load(str(path)).keys == {str(good): b"0123456789abcdef0123"}
    path.write_text(
        f"stop:\n  key_file: {short}\ngroups:\n  - group: 239.0.0.9\n"
        f"    stop: {{key_file: {tmp_path / 'none.key'}}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert [str(p) for p in caught.value.problems] == [
        f"{path}:2:13: stop.key_file: {short}: a key needs at least 16 bytes",
        f"{path}:5:22: groups[0].stop.key_file: {tmp_path / 'none.key'}: "
        "cannot read: No such file or directory",
    ]


def test_relative_key_file_is_a_systemd_credential(tmp_path: Path):
    (tmp_path / "stop.key").write_bytes(b"s" * 20)
    config = parse("stop: {key_file: stop.key}\n", "c.yaml")
    loaded = read_keys(config, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert loaded.keys == {"stop.key": b"s" * 20}


def test_resolve_path_order(tmp_path: Path):
    assert resolve_path("a.yaml", {"MCASTD_CONFIG": "b.yaml"}) == "a.yaml"
    assert resolve_path(None, {"MCASTD_CONFIG": "b.yaml"}) == "b.yaml"


def test_unreadable_file_is_a_config_error(tmp_path: Path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load(str(missing))
    assert str(caught.value) == f"{missing}:1:1: cannot read: No such file or directory"
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        load(str(binary))
