"""The configuration: frozen dataclasses, one pure `parse` that validates a whole file, and `load`.

`parse` walks the YAML node tree (not the plain Python objects) so that every problem can be
reported with the line and column it comes from; it collects all problems before raising.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import yaml

from mcastd.errors import ConfigError, ConfigProblem

ReplyMode = Literal["unicast", "group", "none"]
REPLY_MODES: tuple[ReplyMode, ...] = ("unicast", "group", "none")

DEFAULT_PATH = "/etc/mcastd.yaml"
DEFAULT_PORT = 59259  # upstream `multicast` default
DEFAULT_GROUPS = ("239.0.0.9", "ff05::9")
CONFIG_ENV = "MCASTD_CONFIG"


@dataclass(frozen=True)
class Settings:
    """What every group inherits from the top level and may override."""

    port: int = DEFAULT_PORT
    """Port for groups that name none."""
    ttl: int = 1
    """Hop limit of every reply (IP_TTL / IP_MULTICAST_TTL / IPv6 hop limits)."""
    interface: str | None = None
    """Interface name or local address to join on; None lets the kernel choose by route."""
    reply: ReplyMode = "unicast"
    """unicast: answer the sender; group: answer to the group; none: only listen and log."""
    log_datagrams: bool = True
    """One (rate-limited) log line per datagram."""


@dataclass(frozen=True)
class Endpoint:
    """One (group, port): one socket, with the settings that apply to it."""

    group: str
    """The group address in its canonical text form (`239.0.0.9`, `ff05::9`)."""
    port: int
    ttl: int
    interface: str | None
    reply: ReplyMode
    log_datagrams: bool

    @property
    def key(self) -> tuple[str, int]:
        return (self.group, self.port)

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.group else socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.group}]:{self.port}" if ":" in self.group else f"{self.group}:{self.port}"


@dataclass(frozen=True)
class GroupConfig:
    """One entry of `groups:`, with the top-level settings already applied."""

    group: str
    ports: tuple[int, ...]
    settings: Settings


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration."""

    source: str
    """The file it came from, or `<built-in defaults>`."""
    defaults: Settings
    groups: tuple[GroupConfig, ...]

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(
            Endpoint(g.group, port, s.ttl, s.interface, s.reply, s.log_datagrams)
            for g in self.groups
            for s in (g.settings,)
            for port in g.ports
        )


BUILT_IN = "<built-in defaults>"
SETTING_KEYS = ("port", "ttl", "interface", "reply", "log_datagrams")
TOP_KEYS = (*SETTING_KEYS, "groups")
GROUP_KEYS = ("group", "ports", *SETTING_KEYS)


def built_in_defaults() -> Config:
    """The configuration used when there is no file: the same as the shipped etc/mcastd.yaml."""
    settings = Settings()
    groups = tuple(GroupConfig(g, (settings.port,), settings) for g in DEFAULT_GROUPS)
    return Config(BUILT_IN, settings, groups)


def canonical_group(text: str) -> str | None:
    """The canonical text of a multicast address, or None if `text` is not one."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return str(address) if address.is_multicast else None


class _Checker:
    """Collects problems while walking the YAML node tree of one file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[ConfigProblem] = []

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
        self.problems.append(ConfigProblem(self.filename, line, col, key, message))

    def mapping(
        self, node: yaml.Node, key: str, allowed: Sequence[str]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The entries of a mapping node by key, reporting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, key, f"must be a mapping, not {_kind(node)}")
            return {}
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
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

    def integer(self, node: yaml.Node, key: str, low: int, high: int, what: str) -> int | None:
        value = self.scalar(node, key)
        if value is None and isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            self.problem(node, key, f"must be {what} ({low}-{high}), not empty")
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(node, yaml.ScalarNode) and value is not None:
                self.problem(node, key, f"{node.value!r} is not {what} ({low}-{high})")
            return None
        if not low <= value <= high:
            self.problem(node, key, f"{value} is not {what} ({low}-{high})")
            return None
        return value

    def settings(
        self, entries: dict[str, tuple[yaml.Node, yaml.Node]], key: str, base: Settings
    ) -> Settings:
        """`base` with the setting keys present in `entries` applied."""
        changes: dict[str, object] = {}
        prefix = f"{key}." if key else ""
        if "port" in entries:
            port = self.integer(entries["port"][1], prefix + "port", 1, 65535, "a port")
            if port is not None:
                changes["port"] = port
        if "ttl" in entries:
            ttl = self.integer(entries["ttl"][1], prefix + "ttl", 0, 255, "a TTL")
            if ttl is not None:
                changes["ttl"] = ttl
        if "interface" in entries:
            node = entries["interface"][1]
            value = self.scalar(node, prefix + "interface")
            if value is None or (isinstance(value, str) and _valid_interface(value)):
                changes["interface"] = value
            elif isinstance(value, str):
                self.problem(node, prefix + "interface", f"{value!r} is not an interface name")
            else:
                self.problem(
                    node,
                    prefix + "interface",
                    f"must be an interface name or address, not {value!r}",
                )
        if "reply" in entries:
            node = entries["reply"][1]
            value = self.scalar(node, prefix + "reply")
            if value is False:
                value = "none"  # YAML 1.1 reads a bare `no`/`off` as false: the intent is clear
            if value in REPLY_MODES:
                changes["reply"] = value
            else:
                self.problem(
                    node, prefix + "reply", f"{value!r} is not one of {', '.join(REPLY_MODES)}"
                )
        if "log_datagrams" in entries:
            node = entries["log_datagrams"][1]
            value = self.scalar(node, prefix + "log_datagrams")
            if isinstance(value, bool):
                changes["log_datagrams"] = value
            else:
                self.problem(node, prefix + "log_datagrams", f"{value!r} is not true or false")
        return replace(base, **changes)  # type: ignore[arg-type]

    def group_entry(self, node: yaml.Node, key: str, defaults: Settings) -> GroupConfig | None:
        if isinstance(node, yaml.ScalarNode):
            # `- 239.0.0.9` alone: a group with every setting from the top level
            entries: dict[str, tuple[yaml.Node, yaml.Node]] = {"group": (node, node)}
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
        self._check_interface_family(group, settings, entries, key)
        return GroupConfig(group, ports, settings)

    def _check_interface_family(
        self,
        group: str,
        settings: Settings,
        entries: dict[str, tuple[yaml.Node, yaml.Node]],
        key: str,
    ) -> None:
        if settings.interface is None:
            return
        try:
            address = ipaddress.ip_address(settings.interface)
        except ValueError:
            return  # an interface name
        group_version = ipaddress.ip_address(group).version
        if address.version != group_version:
            node = entries["interface"][1] if "interface" in entries else entries["group"][1]
            self.problem(
                node,
                f"{key}.interface",
                f"{settings.interface} is an IPv{address.version} address "
                f"but {group} is an IPv{group_version} group",
            )


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


def _valid_interface(value: str) -> bool:
    """An interface name the kernel could have (IFNAMSIZ, no '/' or space), or an address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return (
            0 < len(value) < 16 and not any(c in value for c in "/ \t\n:") and value.isprintable()
        )
    return True


def parse(text: str, filename: str = "<config>") -> Config:
    """Validate a whole configuration document; raise ConfigError listing every problem."""
    checker = _Checker(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reason = e.problem or e.context or "not valid YAML"
        raise ConfigError(
            [ConfigProblem(filename, line, col, "", f"not valid YAML: {reason}")]
        ) from e
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise ConfigError([ConfigProblem(filename, 1, 1, "", f"not valid YAML: {e}")]) from e
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        return Config(filename, Settings(), built_in_defaults().groups)
    entries = checker.mapping(root, "", TOP_KEYS)
    defaults = checker.settings(entries, "", Settings())
    groups: list[GroupConfig] = []
    if "groups" not in entries:
        groups = [GroupConfig(g, (defaults.port,), defaults) for g in DEFAULT_GROUPS]
        for g in groups:
            checker._check_interface_family(g.group, defaults, entries, "groups")
    else:
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
    return Config(filename, defaults, tuple(groups))


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


def select(config: Config, wanted: Iterable[str]) -> Config:
    """Only the groups in `wanted`; an unlisted group gets the file's top-level settings.

    Raises ValueError naming the first argument that is not a multicast address.
    """
    chosen: list[GroupConfig] = []
    for text in wanted:
        group = canonical_group(text)
        if group is None:
            raise ValueError(f"{text!r} is not a multicast address (224.0.0.0/4 or ff00::/8)")
        if any(g.group == group for g in chosen):
            continue
        listed = [g for g in config.groups if g.group == group]
        chosen.extend(listed or [GroupConfig(group, (config.defaults.port,), config.defaults)])
    return replace(config, groups=tuple(chosen))


def resolve_path(given: str | None, environ: dict[str, str] | None = None) -> str | None:
    """Which file to read: --config, then $MCASTD_CONFIG, then /etc/mcastd.yaml if it exists."""
    env = os.environ if environ is None else environ
    if given:
        return given
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV]
    return DEFAULT_PATH if os.path.exists(DEFAULT_PATH) else None


def load(path: str | None) -> Config:
    """Read and parse `path`; None means the built-in defaults."""
    if path is None:
        return built_in_defaults()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([ConfigProblem(path, 1, 1, "", f"cannot read: {reason}")]) from e
    return parse(text, path)
