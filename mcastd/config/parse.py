"""`parse`: one YAML document to a Config, or one ConfigError listing every problem at once.

It walks the YAML node tree (not the plain Python objects) so that every problem can be
reported with the line and column it comes from. What each key accepts is one row of a table
(`SETTING_FIELDS`, `STOP_FIELDS`, `TOP_FIELDS`): a new key is a dataclass field and one row.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import yaml

from mcastd.addresses import as_address, canonical_group, family_conflict, is_ipv6, is_ssm
from mcastd.config.model import (
    REPLY_MODES,
    Config,
    GroupConfig,
    KeyFile,
    Network,
    ReplyMode,
    Settings,
    StopPolicy,
    built_in_defaults,
    default_groups,
)
from mcastd.errors import ConfigError, ConfigProblem

Entries = dict[str, tuple[yaml.Node, yaml.Node]]
"""The entries of a mapping by key: (key node, value node)."""


@dataclass(frozen=True)
class Field:
    """How one key is read: `read` returns its value, or None after recording the problem."""

    read: Callable[[_Checker, yaml.Node, str], object]
    nullable: bool = False
    """`key: null` is a value (None: e.g. the kernel's choice), not a problem."""


def _integer(low: int, high: int, what: str) -> Callable[[_Checker, yaml.Node, str], object]:
    return lambda checker, node, key: checker.integer(node, key, low, high, what)


def _number(low: float, high: float, what: str) -> Callable[[_Checker, yaml.Node, str], object]:
    def read(checker: _Checker, node: yaml.Node, key: str) -> float | None:
        value = checker.number(node, key, low, high, what, whole=False)
        return None if value is None else float(value)

    return read


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


class _Checker:
    """Collects problems while walking the YAML node tree of one file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[ConfigProblem] = []
        self.key_files: list[KeyFile] = []

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line, col = _position(node) if node else (1, 1)
        self.problems.append(ConfigProblem(self.filename, line, col, key, message))

    def mapping(self, node: yaml.Node, key: str, allowed: Sequence[str]) -> Entries:
        """The entries of a mapping node by key, reporting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, key, f"must be a mapping, not {_kind(node)}")
            return {}
        entries: Entries = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            shown = name if isinstance(name, str) and name.isidentifier() else repr(name)
            where = f"{key}.{shown}" if key else shown
            if not isinstance(name, str) or name not in allowed:
                hint = difflib.get_close_matches(str(name), allowed, n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.problem(key_node, where, f"unknown key{extra}")
            elif name in entries:
                self.problem(key_node, where, "is given twice")
            else:
                entries[name] = (key_node, value_node)
        return entries

    def fields(self, entries: Entries, prefix: str, table: Mapping[str, Field]) -> dict[str, Any]:
        """The values of the keys of `table` found in `entries`, by key. A key with a problem
        is left out, so it keeps its inherited value; the problem is reported anyway."""
        values: dict[str, Any] = {}
        for name, row in table.items():
            if name not in entries:
                continue
            node = entries[name][1]
            if row.nullable and _is_null(node):
                values[name] = None
                continue
            value = row.read(self, node, prefix + name)
            if value is not None:
                values[name] = value
        return values

    # -- one reader per kind of value: each returns the value or None after a problem --------

    def scalar(self, node: yaml.Node, key: str) -> object:
        """The Python value of a scalar node, or a problem and None."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, key, f"must be a single value, not {_kind(node)}")
            return None
        try:
            return yaml.constructor.SafeConstructor().construct_object(node)
        except yaml.MarkedYAMLError as e:
            self.problem(node, key, f"cannot be read: {e.problem}")
            return None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as e:
            self.problem(node, key, f"cannot be read: {str(e).splitlines()[0]}")
            return None

    def number(
        self, node: yaml.Node, key: str, low: float, high: float, what: str, whole: bool = True
    ) -> float | None:
        """A number in [low, high] (an int when `whole`), or a problem and None."""
        value = self.scalar(node, key)
        bounds = f"({low:g}-{high:g})"
        if value is None and _is_null(node):
            self.problem(node, key, f"must be {what} {bounds}, not empty")
            return None
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or value != value:  # NaN
            if isinstance(node, yaml.ScalarNode) and value is not None:
                self.problem(node, key, f"{node.value!r} is not {what} {bounds}")
            return None
        if not low <= value <= high:
            self.problem(node, key, f"{value:g} is not {what} {bounds}")
            return None
        return value

    def integer(self, node: yaml.Node, key: str, low: int, high: int, what: str) -> int | None:
        value = self.number(node, key, low, high, what)
        return None if value is None else int(value)

    def boolean(self, node: yaml.Node, key: str) -> bool | None:
        value = self.scalar(node, key)
        if isinstance(value, bool):
            return value
        self.problem(node, key, f"{value!r} is not true or false")
        return None

    def interface(self, node: yaml.Node, key: str) -> str | None:
        value = self.scalar(node, key)
        if isinstance(value, str) and _valid_interface(value):
            return value
        if isinstance(value, str):
            self.problem(node, key, f"{value!r} is not an interface name")
        elif value is not None:
            self.problem(node, key, f"must be an interface name or address, not {value!r}")
        return None

    def reply_mode(self, node: yaml.Node, key: str) -> ReplyMode | None:
        value = self.scalar(node, key)
        if value is False:
            value = "none"  # YAML 1.1 reads a bare `no`/`off` as false: the intent is clear
        for mode in REPLY_MODES:
            if value == mode:
                return mode
        self.problem(node, key, f"{value!r} is not one of {', '.join(REPLY_MODES)}")
        return None

    def networks(self, node: yaml.Node, key: str) -> tuple[Network, ...] | None:
        """A list of addresses or CIDR networks (a single one is a list of one)."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        found: list[Network] = []
        for i, item in enumerate(items):
            where = f"{key}[{i}]" if isinstance(node, yaml.SequenceNode) else key
            value = self.scalar(item, where)
            try:
                found.append(ipaddress.ip_network(str(value), strict=False))
            except ValueError:
                if value is not None:
                    self.problem(item, where, f"{value!r} is not an address or network")
        if not found and isinstance(node, yaml.SequenceNode) and not node.value:
            self.problem(node, key, "is empty: nothing would be allowed")
        return tuple(found) if len(found) == len(items) else None

    def key_file(self, node: yaml.Node, key: str) -> str | None:
        """A STOP key file name, remembered with its place so that reading it can fail there."""
        path = self.scalar(node, key)
        if isinstance(path, str) and path.strip():
            line, col = _position(node)
            self.key_files.append(KeyFile(path, line, col, key))
            return path
        if path is not None:
            self.problem(node, key, f"{path!r} is not a file name")
        return None

    def stop_policy(self, node: yaml.Node, key: str) -> StopPolicy | None:
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, key)
            if value in ("disabled", False):
                return StopPolicy(enabled=False)
            if value in ("enabled", True):
                return StopPolicy()
            self.problem(node, key, f"{value!r} is not enabled, disabled or a mapping")
            return None
        entries = self.mapping(node, key, tuple(STOP_FIELDS))
        return StopPolicy(**self.fields(entries, f"{key}.", STOP_FIELDS))

    # -- the structure: groups, their ports and sources -------------------------------------

    def settings(self, entries: Entries, key: str, base: Settings) -> Settings:
        """`base` with the setting keys present in `entries` applied."""
        prefix = f"{key}." if key else ""
        return replace(base, **self.fields(entries, prefix, SETTING_FIELDS))

    def group_entry(self, node: yaml.Node, key: str, defaults: Settings) -> GroupConfig | None:
        if isinstance(node, yaml.ScalarNode):
            # `- 239.0.0.9` alone: a group with every setting from the top level
            entries: Entries = {"group": (node, node)}
        else:
            entries = self.mapping(node, key, GROUP_KEYS)
            if not entries and isinstance(node, yaml.MappingNode):
                self.problem(node, key, "an entry needs at least 'group'")
                return None
            if not entries:
                return None
        if "group" not in entries:
            self.problem(node, key, "has no 'group'")
            return None
        group_node = entries["group"][1]
        value = self.scalar(group_node, f"{key}.group")
        group = canonical_group(value) if isinstance(value, str) else None
        if group is None:
            if value is not None:
                self.problem(
                    group_node,
                    f"{key}.group",
                    f"{value!r} is not a multicast address (224.0.0.0/4 or ff00::/8)",
                )
            return None
        settings = self.settings(entries, key, defaults)
        if "ports" in entries and "port" in entries:
            self.problem(entries["ports"][0], f"{key}.ports", "give either 'port' or 'ports'")
            return None
        ports: tuple[int, ...] = (settings.port,)
        if "ports" in entries:
            ports_node = entries["ports"][1]
            if isinstance(ports_node, yaml.ScalarNode):
                one = self.integer(ports_node, f"{key}.ports", 1, 65535, "a port")
                ports = (one,) if one is not None else ()
            elif isinstance(ports_node, yaml.SequenceNode) and ports_node.value:
                found = [
                    self.integer(item, f"{key}.ports[{i}]", 1, 65535, "a port")
                    for i, item in enumerate(ports_node.value)
                ]
                ports = tuple(p for p in found if p is not None)
            else:
                self.problem(ports_node, f"{key}.ports", "must be a port or a list of ports")
                return None
        sources = self.sources(group, entries, key)
        self.check_interface_family(group, settings, entries, key)
        return GroupConfig(group, ports, settings, sources)

    def sources(self, group: str, entries: Entries, key: str) -> tuple[str, ...]:
        """The `sources:` of a group: unicast addresses of its family; required for SSM."""
        version = 6 if is_ipv6(group) else 4
        if "sources" not in entries:
            if is_ssm(group):
                self.problem(
                    entries["group"][1],
                    f"{key}.group",
                    f"{group} is a source-specific (SSM) group: list its senders in 'sources'",
                )
            return ()
        node = entries["sources"][1]
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            self.problem(node, f"{key}.sources", "is empty: no sender could be heard")
        found: list[str] = []
        for i, item in enumerate(items):
            where = (
                f"{key}.sources[{i}]" if isinstance(node, yaml.SequenceNode) else f"{key}.sources"
            )
            value = self.scalar(item, where)
            address = as_address(value) if isinstance(value, str) else None
            if address is None:
                if value is not None:
                    self.problem(item, where, f"{value!r} is not an address")
                elif _is_null(item):
                    self.problem(item, where, "must be an address, not empty")
                continue
            if address.version != version or address.is_multicast or address.is_unspecified:
                self.problem(
                    item, where, f"{address} is not a unicast IPv{version} sender for {group}"
                )
            elif str(address) in found:
                self.problem(item, where, f"{address} is listed twice")
            else:
                found.append(str(address))
        return tuple(found)

    def check_interface_family(
        self, group: str, settings: Settings, entries: Entries, key: str
    ) -> None:
        conflict = (
            None if settings.interface is None else family_conflict(group, settings.interface)
        )
        if conflict is not None:
            node = entries["interface"][1] if "interface" in entries else entries["group"][1]
            self.problem(node, f"{key}.interface", conflict)


# What each key accepts, in the order operators read them (etc/mcastd.yaml).
SETTING_FIELDS: Mapping[str, Field] = {
    "port": Field(_integer(1, 65535, "a port")),
    "ttl": Field(_integer(0, 255, "a TTL")),
    "unicast_ttl": Field(_integer(1, 255, "a TTL"), nullable=True),  # null: system default
    "interface": Field(_Checker.interface, nullable=True),  # null: the kernel's choice
    "reply": Field(_Checker.reply_mode),
    "log_datagrams": Field(_Checker.boolean),
    "reply_rate": Field(_number(0, 1e9, "replies per second")),
    "reply_burst": Field(_integer(1, 10**9, "a count")),
    "allow_from": Field(_Checker.networks, nullable=True),  # null: from anyone
    "stop": Field(_Checker.stop_policy),
    "wait_for_interface": Field(_Checker.boolean),
}
STOP_FIELDS: Mapping[str, Field] = {
    "allow_from": Field(_Checker.networks, nullable=True),
    "key_file": Field(_Checker.key_file, nullable=True),
    "replay_window": Field(_number(1, 3600, "seconds")),
    "answer_refused": Field(_Checker.boolean),
}
TOP_FIELDS: Mapping[str, Field] = {
    "reply_rate_total": Field(_number(0, 1e9, "replies per second")),
}
TOP_KEYS = (*SETTING_FIELDS, "groups", *TOP_FIELDS)
GROUP_KEYS = ("group", "ports", "sources", *SETTING_FIELDS)


def _position(node: yaml.Node) -> tuple[int, int]:
    """1-based (line, col) of a node, as editors count."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


def _valid_interface(value: str) -> bool:
    """An interface name the kernel could have (IFNAMSIZ, no '/' or space), or an address."""
    if as_address(value) is not None:
        return True
    return 0 < len(value) < 16 and not any(c in value for c in "/ \t\n:") and value.isprintable()


def _compose(text: str, filename: str) -> yaml.Node | None:
    """The YAML node tree of `text`; a syntax error is a ConfigError at its place."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = e.problem or e.context or "not valid YAML"
        raise ConfigError(
            [ConfigProblem(filename, line, col, "", f"not valid YAML: {reason}")]
        ) from e
    except yaml.reader.ReaderError as e:
        # A character YAML does not allow (control characters): located by its offset.
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        message = f"not valid YAML: character #x{code:04x} is not allowed"
        raise ConfigError([ConfigProblem(filename, line, col, "", message)]) from e
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        message = f"not valid YAML: {str(e).splitlines()[0]}"
        raise ConfigError([ConfigProblem(filename, 1, 1, "", message)]) from e


def parse(text: str, filename: str = "<config>") -> Config:
    """Validate a whole configuration document; raise ConfigError listing every problem."""
    root = _compose(text, filename)
    if root is None or _is_null(root):
        return Config(filename, Settings(), built_in_defaults().groups)
    checker = _Checker(filename)
    entries = checker.mapping(root, "", TOP_KEYS)
    defaults = checker.settings(entries, "", Settings())
    top = checker.fields(entries, "", TOP_FIELDS)
    groups: list[GroupConfig] = []
    groups_at = (1, 1)
    if "groups" not in entries:
        groups = list(default_groups(defaults))
        for g in groups:
            checker.check_interface_family(g.group, defaults, entries, "groups")
    else:
        groups_at = _position(entries["groups"][0])
        groups_node = entries["groups"][1]
        if not isinstance(groups_node, yaml.SequenceNode):
            checker.problem(groups_node, "groups", "must be a list of groups")
        elif not groups_node.value:
            checker.problem(groups_node, "groups", "is empty: there is nothing to serve")
        else:
            placed = []
            for i, item in enumerate(groups_node.value):
                found = checker.group_entry(item, f"groups[{i}]", defaults)
                if found is not None:
                    placed.append((i, item, found))
                    groups.append(found)
            _check_duplicates(checker, placed)
    if checker.problems:
        raise ConfigError(sorted(checker.problems, key=lambda p: (p.line, p.col)))
    return Config(
        filename,
        defaults,
        tuple(groups),
        top.get("reply_rate_total", 0.0),
        tuple(checker.key_files),
        groups_at=groups_at,
    )


def _check_duplicates(
    checker: _Checker, placed: Sequence[tuple[int, yaml.Node, GroupConfig]]
) -> None:
    first: dict[tuple[str, int], int] = {}
    for i, node, entry in placed:
        for port in entry.ports:
            index = first.setdefault((entry.group, port), i)
            if index != i:
                checker.problem(
                    node,
                    f"groups[{i}]",
                    f"{entry.group} port {port} is already served by groups[{index}]",
                )
