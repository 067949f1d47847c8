"""The I/O of the configuration: which file to read, reading it, and the STOP keys it names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

from mcastd.config.model import Config, built_in_defaults
from mcastd.config.parse import parse
from mcastd.errors import ConfigError, ConfigProblem

DEFAULT_PATH = "/etc/mcastd.yaml"
CONFIG_ENV = "MCASTD_CONFIG"
MIN_KEY_BYTES = 16


def resolve_path(given: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Which file to read: --config, then $MCASTD_CONFIG, then /etc/mcastd.yaml if it exists."""
    env = os.environ if environ is None else environ
    if given:
        return given
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV]
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def key_path(name: str, environ: Mapping[str, str]) -> str:
    """A relative key_file names a systemd credential (LoadCredential=) when there are any."""
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if not os.path.isabs(name) and credentials:
        return os.path.join(credentials, name)
    return name


def read_key(name: str, environ: Mapping[str, str] | None = None) -> bytes:
    """One STOP key: at least MIN_KEY_BYTES bytes, surrounding white space stripped."""
    path = key_path(name, os.environ if environ is None else environ)
    try:
        with open(path, "rb") as f:
            key = f.read(4096).strip()
    except OSError as e:
        raise ConfigError([ConfigProblem(path, 1, 1, "", f"cannot read: {e.strerror}")]) from e
    if len(key) < MIN_KEY_BYTES:
        message = f"a key needs at least {MIN_KEY_BYTES} bytes"
        raise ConfigError([ConfigProblem(path, 1, 1, "", message)])
    return key


def read_keys(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """The config with its STOP keys read; a missing, unreadable or short key is a ConfigError
    located at the `key_file` that names it."""
    keys: dict[str, bytes] = {}
    problems: list[ConfigProblem] = []
    for kf in config.key_files:
        if kf.path in keys:
            continue
        try:
            keys[kf.path] = read_key(kf.path, environ)
        except ConfigError as e:
            inner = e.problems[0]
            message = f"{inner.filename}: {inner.message}"
            problems.append(ConfigProblem(config.source, kf.line, kf.col, kf.key, message))
    if problems:
        raise ConfigError(problems)
    return replace(config, keys=keys)


def load(path: str | None) -> Config:
    """Read and parse `path`, and the key files it names; None means the built-in defaults."""
    if path is None:
        return built_in_defaults()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([ConfigProblem(path, 1, 1, "", f"cannot read: {reason}")]) from e
    return read_keys(parse(text, path))
