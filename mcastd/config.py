"""The configuration: frozen dataclasses, one pure `parse` that validates a whole file, and `load`.

`parse` walks the YAML node tree (not the plain Python objects) so that every problem can be
reported with the line and column it comes from; it collects all problems before raising.
`load` adds the only I/O: reading the file and the STOP key files it names.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import yaml

from mcastd.errors import ConfigError, ConfigProblem

ReplyMode = Literal["unicast", "group", "none"]
REPLY_MODES: tuple[ReplyMode, ...] = ("unicast", "group", "none")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PATH = "/etc/mcastd.yaml"
DEFAULT_PORT = 59259  # upstream `multicast` default
DEFAULT_GROUPS = ("239.0.0.9", "ff05::9")
CONFIG_ENV = "MCASTD_CONFIG"
BUILT_IN = "<built-in defaults>"
# Source-specific multicast ranges (RFC 4607): joined per (source, group) only.
SSM_RANGES = (ipaddress.ip_network("232.0.0.0/8"), ipaddress.ip_network("ff30::/12"))
MIN_KEY_BYTES = 16


@dataclass(frozen=True)
class StopPolicy:
    """Who may stop the daemon with a STOP datagram."""

    enabled: bool = True
    """False (`stop: disabled`): STOP datagrams are refused like any unauthorised one."""
    allow_from: tuple[Network, ...] | None = None
    """Sources whose STOP is honoured; None: any source (as upstream)."""
    key_file: str | None = None
    """With a key, only an authenticated STOP (HMAC-SHA256, see mcastd.stopauth) is honoured."""
    replay_window: float = 30.0
    """Seconds an authenticated STOP stays valid; older, future or repeated ones are refused."""
    answer_refused: bool = True
    """Answer a refused STOP like any other datagram (True), or drop it (False)."""


@dataclass(frozen=True)
class Settings:
    """What every group inherits from the top level and may override."""

    port: int = DEFAULT_PORT
    """Port for groups that name none."""
    ttl: int = 1
    """Hop limit of group replies only (IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS), as upstream's."""
    unicast_ttl: int | None = None
    """Hop limit of unicast replies (IP_TTL / IPV6_UNICAST_HOPS); None: the system default
    (net.ipv4.ip_default_ttl, the IPv6 hop_limit), as upstream HEAR leaves it."""
    interface: str | None = None
    """Interface name or local address to join on; None lets the kernel choose by route."""
    reply: ReplyMode = "unicast"
    """unicast: answer the sender; group: answer to the group; none: only listen and log."""
    log_datagrams: bool = True
    """One (rate-limited) log line per datagram."""
    reply_rate: float = 1000.0
    """Replies per second to one source address (token bucket); 0 means unlimited."""
    reply_burst: int = 2000
    """How many replies one source may get at once before `reply_rate` applies."""
    allow_from: tuple[Network, ...] | None = None
    """Only datagrams from these sources are answered; None: from anyone."""
    stop: StopPolicy = field(default_factory=StopPolicy)
    wait_for_interface: bool = False
    """Start without a missing interface and join once it appears, instead of failing."""


@dataclass(frozen=True)
class Endpoint:
    """One (group, port): one socket, with the settings that apply to it."""

    group: str
    """The group address in its canonical text form (`239.0.0.9`, `ff05::9`)."""
    port: int
    settings: Settings = field(default_factory=Settings)
    sources: tuple[str, ...] = ()
    """Source-specific membership: only these senders are joined (empty: any source)."""

    @property
    def key(self) -> tuple[str, int]:
        return (self.group, self.port)

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.group else socket.AF_INET

    @property
    def ttl(self) -> int:
        return self.settings.ttl

    @property
    def unicast_ttl(self) -> int | None:
        return self.settings.unicast_ttl

    @property
    def interface(self) -> str | None:
        return self.settings.interface

    @property
    def reply(self) -> ReplyMode:
        return self.settings.reply

    @property
    def log_datagrams(self) -> bool:
        return self.settings.log_datagrams

    def __str__(self) -> str:
        return format_address(self.group, self.port)


@dataclass(frozen=True)
class GroupConfig:
    """One entry of `groups:`, with the top-level settings already applied."""

    group: str
    ports: tuple[int, ...]
    settings: Settings
    sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyFile:
    """Where a `stop.key_file` was named, so that reading it can fail with line:col."""

    path: str
    line: int
    col: int
    key: str


@dataclass(frozen=True)
class Config:
    """A whole, valid configuration."""

    source: str
    """The file it came from, or `<built-in defaults>`."""
    defaults: Settings
    groups: tuple[GroupConfig, ...]
    reply_rate_total: float = 0.0
    """Replies per second for the whole daemon, all sources together; 0 means unlimited."""
    key_files: tuple[KeyFile, ...] = ()
    keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """STOP keys by key_file as written, filled by `load`."""

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(
            Endpoint(g.group, port, g.settings, g.sources) for g in self.groups for port in g.ports
        )


SETTING_KEYS = (
    "port",
    "ttl",
    "unicast_ttl",
    "interface",
    "reply",
    "log_datagrams",
    "reply_rate",
    "reply_burst",
    "allow_from",
    "stop",
    "wait_for_interface",
)
TOP_KEYS = (*SETTING_KEYS, "groups", "reply_rate_total")
GROUP_KEYS = ("group", "ports", "sources", *SETTING_KEYS)
STOP_KEYS = ("allow_from", "key_file", "replay_window", "answer_refused")
Entries = dict[str, tuple[yaml.Node, yaml.Node]]


def built_in_defaults() -> Config:
    """The configuration used when there is no file: the same as the shipped etc/mcastd.yaml."""
    settings = Settings()
    groups = tuple(GroupConfig(g, (settings.port,), settings) for g in DEFAULT_GROUPS)
    return Config(BUILT_IN, settings, groups)


def format_address(host: str, port: int) -> str:
    """`239.0.0.9:59259`, `[ff05::9]:59259`: an address and port as operators write them."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def canonical_group(text: str) -> str | None:
    """The canonical text of a multicast address, or None if `text` is not one."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return str(address) if address.is_multicast else None


def is_ssm(group: str) -> bool:
    address = ipaddress.ip_address(group)
    return any(address in r for r in SSM_RANGES if r.version == address.version)


class _Checker:
    """Collects problems while walking the YAML node tree of one file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[ConfigProblem] = []
        self.key_files: list[KeyFile] = []

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line, col = (node.start_mark.line + 1, node.start_mark.column + 1) if node else (1, 1)
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
        if value is None and isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
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

    def networks(self, node: yaml.Node, key: str) -> tuple[Network, ...] | None:
        """A list of addresses or CIDR networks (a single one is a list of one); null: None."""
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return None
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

    def settings(self, entries: Entries, key: str, base: Settings) -> Settings:
        """`base` with the setting keys present in `entries` applied."""
        changes: dict[str, object] = {}
        nullable: dict[str, object] = {}  # settings where null is a value, not a problem
        prefix = f"{key}." if key else ""

        def value_of(name: str) -> yaml.Node | None:
            return entries[name][1] if name in entries else None

        if (node := value_of("port")) is not None:
            changes["port"] = self.integer(node, prefix + "port", 1, 65535, "a port")
        if (node := value_of("ttl")) is not None:
            changes["ttl"] = self.integer(node, prefix + "ttl", 0, 255, "a TTL")
        if (node := value_of("unicast_ttl")) is not None:
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
                nullable["unicast_ttl"] = None  # null: the system default
            else:
                changes["unicast_ttl"] = self.integer(node, prefix + "unicast_ttl", 1, 255, "a TTL")
        if (node := value_of("interface")) is not None:
            value = self.scalar(node, prefix + "interface")
            if value is None or (isinstance(value, str) and _valid_interface(value)):
                nullable["interface"] = value  # null: the kernel's choice
            elif isinstance(value, str):
                self.problem(node, prefix + "interface", f"{value!r} is not an interface name")
            else:
                self.problem(
                    node,
                    prefix + "interface",
                    f"must be an interface name or address, not {value!r}",
                )
        if (node := value_of("reply")) is not None:
            value = self.scalar(node, prefix + "reply")
            if value is False:
                value = "none"  # YAML 1.1 reads a bare `no`/`off` as false: the intent is clear
            if value in REPLY_MODES:
                changes["reply"] = value
            else:
                self.problem(
                    node, prefix + "reply", f"{value!r} is not one of {', '.join(REPLY_MODES)}"
                )
        if (node := value_of("log_datagrams")) is not None:
            changes["log_datagrams"] = self.boolean(node, prefix + "log_datagrams")
        if (node := value_of("wait_for_interface")) is not None:
            changes["wait_for_interface"] = self.boolean(node, prefix + "wait_for_interface")
        if (node := value_of("reply_rate")) is not None:
            changes["reply_rate"] = self.number(
                node, prefix + "reply_rate", 0, 1e9, "replies per second", whole=False
            )
        if (node := value_of("reply_burst")) is not None:
            changes["reply_burst"] = self.integer(node, prefix + "reply_burst", 1, 10**9, "a count")
        if (node := value_of("allow_from")) is not None:
            if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
                nullable["allow_from"] = None  # null: from anyone
            else:
                changes["allow_from"] = self.networks(node, prefix + "allow_from")
        if (node := value_of("stop")) is not None:
            changes["stop"] = self.stop_policy(node, prefix + "stop")
        # A setting with a problem keeps its inherited value; the problem is reported anyway.
        valid = {k: v for k, v in changes.items() if v is not None} | nullable
        return replace(base, **valid)  # type: ignore[arg-type]

    def stop_policy(self, node: yaml.Node, key: str) -> StopPolicy | None:
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, key)
            if value in ("disabled", False):
                return StopPolicy(enabled=False)
            if value in ("enabled", True):
                return StopPolicy()
            self.problem(node, key, f"{value!r} is not enabled, disabled or a mapping")
            return None
        entries = self.mapping(node, key, STOP_KEYS)
        policy = StopPolicy()
        if "allow_from" in entries:
            allowed = self.networks(entries["allow_from"][1], f"{key}.allow_from")
            policy = replace(policy, allow_from=allowed)
        if "key_file" in entries:
            key_node = entries["key_file"][1]
            path = self.scalar(key_node, f"{key}.key_file")
            if isinstance(path, str) and path.strip():
                policy = replace(policy, key_file=path)
                mark = key_node.start_mark
                self.key_files.append(
                    KeyFile(path, mark.line + 1, mark.column + 1, f"{key}.key_file")
                )
            elif path is not None:
                self.problem(key_node, f"{key}.key_file", f"{path!r} is not a file name")
        if "replay_window" in entries:
            window = self.number(
                entries["replay_window"][1], f"{key}.replay_window", 1, 3600, "seconds", False
            )
            if window is not None:
                policy = replace(policy, replay_window=float(window))
        if "answer_refused" in entries:
            answer = self.boolean(entries["answer_refused"][1], f"{key}.answer_refused")
            if answer is not None:
                policy = replace(policy, answer_refused=answer)
        return policy

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
        version = ipaddress.ip_address(group).version
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
            try:
                address = ipaddress.ip_address(str(value))
            except ValueError:
                if value is not None:
                    self.problem(item, where, f"{value!r} is not an address")
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
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        return Config(filename, Settings(), built_in_defaults().groups)
    entries = checker.mapping(root, "", TOP_KEYS)
    defaults = checker.settings(entries, "", Settings())
    total = 0.0
    if "reply_rate_total" in entries:
        node = entries["reply_rate_total"][1]
        value = checker.number(node, "reply_rate_total", 0, 1e9, "replies per second", False)
        total = float(value or 0.0)
    groups: list[GroupConfig] = []
    if "groups" not in entries:
        groups = [GroupConfig(g, (defaults.port,), defaults) for g in DEFAULT_GROUPS]
        for g in groups:
            checker.check_interface_family(g.group, defaults, entries, "groups")
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
    return Config(filename, defaults, tuple(groups), total, tuple(checker.key_files))


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

    Raises ValueError naming the first argument that is not a multicast address (or an SSM
    group that the file does not list, since its senders cannot be guessed).
    """
    chosen: list[GroupConfig] = []
    for text in wanted:
        group = canonical_group(text)
        if group is None:
            raise ValueError(f"{text!r} is not a multicast address (224.0.0.0/4 or ff00::/8)")
        if any(g.group == group for g in chosen):
            continue
        listed = [g for g in config.groups if g.group == group]
        if not listed and is_ssm(group):
            raise ValueError(f"{group} is a source-specific group: list it with its sources")
        chosen.extend(listed or [GroupConfig(group, (config.defaults.port,), config.defaults)])
    return replace(config, groups=tuple(chosen))


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
