"""The configuration as mcastd uses it: frozen dataclasses, with a docstring per field.

Nothing here reads YAML or files: `parse` builds these from a document, `files.load` from a path.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mcastd.addresses import family_of, format_address

if TYPE_CHECKING:
    import socket

ReplyMode = Literal["unicast", "group", "none"]
REPLY_MODES: tuple[ReplyMode, ...] = ("unicast", "group", "none")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PORT = 59259  # upstream `multicast` default
DEFAULT_GROUPS = ("239.0.0.9", "ff05::9")
BUILT_IN = "<built-in defaults>"


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
        return family_of(self.group)

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
    groups_at: tuple[int, int] = field(default=(1, 1), compare=False, repr=False)
    """(line, col) of the `groups:` key, 1:1 without one: where a `select` problem points."""

    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(
            Endpoint(g.group, port, g.settings, g.sources) for g in self.groups for port in g.ports
        )


def default_groups(settings: Settings) -> tuple[GroupConfig, ...]:
    """The groups served when a configuration names none: DEFAULT_GROUPS on `settings.port`."""
    return tuple(GroupConfig(g, (settings.port,), settings) for g in DEFAULT_GROUPS)


def built_in_defaults() -> Config:
    """The configuration used when there is no file: the same as the shipped etc/mcastd.yaml."""
    settings = Settings()
    return Config(BUILT_IN, settings, default_groups(settings))
