"""The configuration: the model (`model`), the checker of mcastd.yaml (`parse`, on the YAML
reader of `nodes`), the command line's choice of groups and port (`selection`) and the file
and key I/O (`files`). Imports flow model <- parse <- files; selection needs only the model.

Callers import from here; the names below are the package's public surface.
"""

from mcastd.addresses import SSM_RANGES, canonical_group, format_address, is_ssm
from mcastd.config.files import (
    CONFIG_ENV,
    DEFAULT_PATH,
    MIN_KEY_BYTES,
    key_path,
    load,
    read_key,
    read_keys,
    resolve_path,
)
from mcastd.config.model import (
    BUILT_IN,
    DEFAULT_GROUPS,
    DEFAULT_PORT,
    REPLY_MODES,
    Config,
    Endpoint,
    GroupConfig,
    KeyFile,
    Network,
    ReplyMode,
    Settings,
    StopPolicy,
    built_in_defaults,
)
from mcastd.config.parse import GROUP_KEYS, SETTING_FIELDS, STOP_FIELDS, TOP_KEYS, parse
from mcastd.config.selection import select

__all__ = [
    "BUILT_IN",
    "CONFIG_ENV",
    "DEFAULT_GROUPS",
    "DEFAULT_PATH",
    "DEFAULT_PORT",
    "GROUP_KEYS",
    "MIN_KEY_BYTES",
    "REPLY_MODES",
    "SETTING_FIELDS",
    "SSM_RANGES",
    "STOP_FIELDS",
    "TOP_KEYS",
    "Config",
    "Endpoint",
    "GroupConfig",
    "KeyFile",
    "Network",
    "ReplyMode",
    "Settings",
    "StopPolicy",
    "built_in_defaults",
    "canonical_group",
    "format_address",
    "is_ssm",
    "key_path",
    "load",
    "parse",
    "read_key",
    "read_keys",
    "resolve_path",
    "select",
]
