"""The exporter's configuration file (/etc/mcastd-exporter.yaml): where it listens, where it
finds the daemons, and the probe modules a scrape may run.

`parse` is pure and raises one ConfigError listing every problem with its key and line:col;
`load` reads the file. A probe's group, port and TTL come only from here, never from a URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import yaml

from mcastd.addresses import as_address, canonical_address, canonical_group
from mcastd.config.nodes import NodeReader, compose, is_null, kind
from mcastd.errors import ConfigError, ConfigProblem

DEFAULT_PATH = "/etc/mcastd-exporter.yaml"
# In the range of Prometheus exporter ports (docs/monitoring.md says why this one).
DEFAULT_LISTEN = "127.0.0.1:9859"
DEFAULT_RUNTIME_DIR = "/run/mcastd"
HEAR_PORT = 59259
# Bounds that keep one probe small: a module sends at most MAX_COUNT datagrams per train
# (times MAX_HOPS with `hops: true`) and at most once per `min_interval` seconds.
MAX_COUNT = 100
MAX_HOPS = 32
MIN_INTERVAL_FLOOR = 1.0


@dataclass(frozen=True)
class ProbeModule:
    """One probe a scrape of /probe?module=NAME may run."""

    name: str
    """The module's name in the URL."""
    group: str
    """The multicast group probed."""
    port: int = HEAR_PORT
    """The responders' port."""
    ttl: int = 1
    """TTL / hop limit of the probes (responders behind routers need more than 1)."""
    count: int = 5
    """Probes sent per scrape."""
    interval: float = 0.2
    """Seconds between two probes."""
    wait: float = 1.0
    """Seconds to wait for replies after the last probe."""
    interface: str | None = None
    """Interface name or local address to send from; None: the kernel's choice."""
    expect: tuple[str, ...] = ()
    """Expected responders (addresses): the only ones with per-responder series."""
    max_loss: float = 0.5
    """Largest loss ratio (0-1) of an expected responder that still counts as success."""
    hops: bool = False
    """Also measure each responder's forward hop distance (a TTL sweep up to max_hops)."""
    max_hops: int = 8
    """Highest TTL of the sweep."""
    min_interval: float = 10.0
    """Minimum seconds between the starts of two probes of this module; scrapes in between
    get the last result again (nothing is sent)."""


@dataclass(frozen=True)
class ExporterConfig:
    """The whole file."""

    source: str = "<built-in defaults>"
    """Where it was read from."""
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    """host:port addresses to listen on when not socket-activated."""
    runtime_dir: str = DEFAULT_RUNTIME_DIR
    """Where the daemons' control sockets are found."""
    sockets: tuple[str, ...] = ()
    """Control sockets to ask besides (not instead of) those under runtime_dir."""
    modules: dict[str, ProbeModule] = field(default_factory=dict)
    """Probe modules by name."""


TOP_KEYS = ("listen", "runtime_dir", "sockets", "modules")
MODULE_KEYS = (
    "group",
    "port",
    "ttl",
    "count",
    "interval",
    "wait",
    "interface",
    "expect",
    "max_loss",
    "hops",
    "max_hops",
    "min_interval",
)


# key: (low, high, whole number, what it is) of the numeric keys of a module.
NUMBERS = {
    "port": (1, 65535, True, "a port"),
    "ttl": (1, 255, True, "a TTL"),
    "count": (1, MAX_COUNT, True, "a number of probes"),
    "interval": (0.01, 60, False, "a number of seconds"),
    "wait": (0.05, 60, False, "a number of seconds"),
    "max_loss": (0, 1, False, "a loss ratio"),
    "max_hops": (1, MAX_HOPS, True, "a TTL"),
    "min_interval": (MIN_INTERVAL_FLOOR, 86400, False, "a number of seconds"),
}


class _Reader(NodeReader):
    """mcastd.yaml's node reader, with the exporter file's keys."""

    def text_list(
        self, node: yaml.Node, key: str, check: Callable[[str], bool], what: str
    ) -> tuple[str, ...]:
        """A list of strings that pass `check` (a single one is a list of one)."""
        found = []
        for item, where in self.items(node, key):
            value = self.scalar(item, where)
            if isinstance(value, str) and check(value):
                found.append(value)
            elif value is not None or is_null(item):
                self.problem(item, where, f"{value!r} is not {what}")
        return tuple(found)

    def module(self, name: str, node: yaml.Node) -> ProbeModule | None:
        key = f"modules.{name}"
        before = len(self.problems)
        if not _is_name(name):
            self.problem(node, key, "a module name is letters, digits, '_', '-' and '.'")
        entries = self.mapping(node, key, MODULE_KEYS)
        if isinstance(node, yaml.MappingNode) and "group" not in entries:
            self.problem(node, key, "needs a group")
        settings: dict[str, object] = {}
        for field_name, (_, value_node) in entries.items():
            where = f"{key}.{field_name}"
            if field_name in NUMBERS:
                low, high, whole, what = NUMBERS[field_name]
                settings[field_name] = self.number(value_node, where, low, high, what, whole)
            elif field_name == "group":
                value = self.scalar(value_node, where)
                settings["group"] = group = canonical_group(str(value))
                if group is None and value is not None:
                    self.problem(value_node, where, f"{value!r} is not a multicast address")
            elif field_name == "interface":
                value = self.scalar(value_node, where)
                if value is not None and not isinstance(value, str):
                    self.problem(value_node, where, f"{value!r} is not an interface")
                settings["interface"] = value
            elif field_name == "expect":
                # In the form the kernel reports reply sources in, so that `fd77::02` is the
                # responder that answers from fd77::2 (as `mcastd probe --expect` reads it).
                expect = self.text_list(value_node, where, _is_address, "an address")
                settings["expect"] = tuple(str(canonical_address(a)) for a in expect)
            elif field_name == "hops":
                settings["hops"] = self.boolean(value_node, where)
        if len(self.problems) > before:
            return None
        return ProbeModule(name=name, **settings)  # type: ignore[arg-type]


def _is_name(text: str) -> bool:
    return bool(text) and len(text) <= 64 and all(c.isalnum() or c in "_-." for c in text)


def _is_address(text: str) -> bool:
    return as_address(text) is not None


def is_listen(text: str) -> bool:
    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    return _is_address(host) and port.isdigit() and 0 < int(port) < 65536


def parse(text: str, filename: str = "<exporter config>") -> ExporterConfig:
    """The configuration in `text`; raises ConfigError listing every problem."""
    reader = _Reader(filename)
    root = compose(text, filename)
    if root is None or is_null(root):
        return ExporterConfig(source=filename)
    entries = reader.mapping(root, "", TOP_KEYS)
    settings: dict[str, object] = {}
    if "listen" in entries:
        what = "an address:port ([address]:port for IPv6)"
        settings["listen"] = reader.text_list(entries["listen"][1], "listen", is_listen, what)
    if "runtime_dir" in entries:
        node = entries["runtime_dir"][1]
        value = reader.scalar(node, "runtime_dir")
        if not isinstance(value, str) or not value.startswith("/"):
            reader.problem(node, "runtime_dir", f"{value!r} is not an absolute path")
        settings["runtime_dir"] = value
    if "sockets" in entries:
        settings["sockets"] = reader.text_list(
            entries["sockets"][1], "sockets", lambda s: s.startswith("/"), "an absolute path"
        )
    modules: dict[str, ProbeModule] = {}
    if "modules" in entries:
        node = entries["modules"][1]
        if not isinstance(node, yaml.MappingNode):
            reader.problem(node, "modules", f"must be a mapping of names, not {kind(node)}")
        else:
            for name_node, module_node in node.value:
                name = str(name_node.value) if isinstance(name_node, yaml.ScalarNode) else "?"
                if name in modules:
                    reader.problem(name_node, f"modules.{name}", "is given twice")
                elif (module := reader.module(name, module_node)) is not None:
                    modules[name] = module
    reader.raise_problems()
    return ExporterConfig(source=filename, modules=modules, **settings)  # type: ignore[arg-type]


def load(path: str | None) -> ExporterConfig:
    """The file at `path`; the built-in defaults when path is None or DEFAULT_PATH is absent."""
    if path is None:
        try:
            with open(DEFAULT_PATH, encoding="utf-8") as f:
                return parse(f.read(), DEFAULT_PATH)
        except FileNotFoundError:
            return ExporterConfig()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        problem = ConfigProblem(path, 1, 1, "", f"cannot be read: {e.strerror}")
        raise ConfigError([problem]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigProblem(path, 1, 1, "", "is not UTF-8 text")]) from e
    return parse(text, path)
