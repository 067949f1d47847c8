"""`parse`: one YAML document to a Config, or one ConfigError listing every problem at once.

What each key accepts is one row of a table (`SETTING_FIELDS`, `STOP_FIELDS`, `TOP_FIELDS`):
a new key is a field of the dataclass in `model` and one row here. The YAML side (nodes, lines
and columns, the generic readers) is `nodes.NodeReader`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

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
from mcastd.config.nodes import Entries, Field, NodeReader, compose, is_null, position


def _integer(low: int, high: int, what: str) -> Callable[[_Checker, yaml.Node, str], object]:
    return lambda checker, node, key: checker.integer(node, key, low, high, what)


def _number(low: float, high: float, what: str) -> Callable[[_Checker, yaml.Node, str], object]:
    def read(checker: _Checker, node: yaml.Node, key: str) -> float | None:
        value = checker.number(node, key, low, high, what, whole=False)
        return None if value is None else float(value)

    return read


class _Checker(NodeReader):
    """The checker of mcastd.yaml: the readers of its values and its structure."""

    def __init__(self, filename: str) -> None:
        super().__init__(filename)
        self.key_files: list[KeyFile] = []

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
        items = self.items(node, key)
        found: list[Network] = []
        for item, where in items:
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
            line, col = position(node)
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
        items = self.items(node, f"{key}.sources")
        if not items:
            self.problem(node, f"{key}.sources", "is empty: no sender could be heard")
        found: list[str] = []
        for item, where in items:
            value = self.scalar(item, where)
            address = as_address(value) if isinstance(value, str) else None
            if address is None:
                if value is not None:
                    self.problem(item, where, f"{value!r} is not an address")
                elif is_null(item):
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
SETTING_FIELDS: Mapping[str, Field[_Checker]] = {
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
STOP_FIELDS: Mapping[str, Field[_Checker]] = {
    "allow_from": Field(_Checker.networks, nullable=True),
    "key_file": Field(_Checker.key_file, nullable=True),
    "replay_window": Field(_number(1, 3600, "seconds")),
    "answer_refused": Field(_Checker.boolean),
}
TOP_FIELDS: Mapping[str, Field[_Checker]] = {
    "reply_rate_total": Field(_number(0, 1e9, "replies per second")),
}
TOP_KEYS = (*SETTING_FIELDS, "groups", *TOP_FIELDS)
GROUP_KEYS = ("group", "ports", "sources", *SETTING_FIELDS)


def _valid_interface(value: str) -> bool:
    """An interface name the kernel could have (IFNAMSIZ, no '/' or space), or an address."""
    if as_address(value) is not None:
        return True
    return 0 < len(value) < 16 and not any(c in value for c in "/ \t\n:") and value.isprintable()


def parse(text: str, filename: str = "<config>") -> Config:
    """Validate a whole configuration document; raise ConfigError listing every problem."""
    root = compose(text, filename)
    if root is None or is_null(root):
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
        groups_at = position(entries["groups"][0])
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
    checker.raise_problems()
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
