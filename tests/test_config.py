"""mcastd.config, the package: every name its callers import is still importable from it."""

from __future__ import annotations

import importlib

import mcastd.config

CALLERS_IMPORT = [
    "BUILT_IN", "CONFIG_ENV", "DEFAULT_GROUPS", "DEFAULT_PATH", "DEFAULT_PORT", "REPLY_MODES",
    "Config", "Endpoint", "GroupConfig", "KeyFile", "Network", "ReplyMode", "Settings",
    "StopPolicy", "built_in_defaults", "canonical_group", "format_address", "is_ssm", "load",
    "parse", "read_key", "read_keys", "resolve_path", "select",
]  # fmt: skip


def test_callers_names_are_re_exported():
    missing = [name for name in CALLERS_IMPORT if not hasattr(mcastd.config, name)]
    assert missing == []
    assert sorted(mcastd.config.__all__) == sorted(set(mcastd.config.__all__))
    assert all(hasattr(mcastd.config, name) for name in mcastd.config.__all__)


def test_the_model_imports_neither_yaml_nor_files():
    model = importlib.import_module("mcastd.config.model")
    assert not hasattr(model, "yaml")
    assert not hasattr(model, "os")
