"""`select`: narrow a configuration to the groups and port given on the command line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from mcastd.addresses import canonical_group, family_conflict, is_ssm
from mcastd.config.model import Config, GroupConfig
from mcastd.errors import ConfigError, ConfigProblem


def select(config: Config, groups: Iterable[str] = (), port: int | None = None) -> Config:
    """What `--group G ...` and `--port P` make mcastd serve, out of `config`.

    - Groups alone: each group as the file serves it (every entry that lists it, with its ports
      and settings); a group the file does not list gets the top-level port and settings.
    - Groups and a port: exactly each group on that port (as upstream's `--group G --port P`),
      with the settings and sources of the file's entry for the group that serves that port,
      else of its first entry, else the top level's.
    - A port alone: every group of the file, each on that port alone (`--port` replaces the
      port list, as it moves upstream's one group), with its entry's settings.
    - Neither: `config` as it is.

    Raises ConfigError, pointing at the file's `groups:` (1:1 without one), for a text that is
    not a multicast address, a source-specific group that the file does not list (its senders
    cannot be guessed), a group that the top-level interface address cannot carry, or a port
    out of range. It is the same ConfigError as a bad file, so `check` and `run` exit 78 and a
    reload keeps the previous configuration.
    """
    wanted: list[str] = []
    problems: list[ConfigProblem] = []
    line, col = config.groups_at

    def problem(key: str, message: str) -> None:
        problems.append(ConfigProblem(config.source, line, col, key, message))

    if port is not None and not 1 <= port <= 65535:
        problem("--port", f"{port} is not a port (1-65535)")
    for text in groups:
        group = canonical_group(text)
        listed = any(g.group == group for g in config.groups)
        conflict = None
        if group is not None and config.defaults.interface is not None:
            conflict = family_conflict(group, config.defaults.interface)
        if group is None:
            problem("--group", f"{text!r} is not a multicast address (224.0.0.0/4 or ff00::/8)")
        elif group in wanted:
            continue
        elif not listed and is_ssm(group):
            problem(
                "--group",
                f"{group} is a source-specific (SSM) group that the configuration does not list:"
                " add it to 'groups' with its 'sources'",
            )
        elif not listed and conflict is not None:
            problem("--group", f"{conflict} (the top-level 'interface')")
        else:
            wanted.append(group)
    if problems:
        raise ConfigError(problems)
    if port is None and not wanted:
        return config
    if not wanted:
        wanted = list(dict.fromkeys(g.group for g in config.groups))
    chosen: list[GroupConfig] = []
    for group in wanted:
        listed_entries = [g for g in config.groups if g.group == group]
        if port is None:
            top = GroupConfig(group, (config.defaults.port,), config.defaults)
            chosen.extend(listed_entries or [top])
            continue
        serving = [g for g in listed_entries if port in g.ports]
        entry = next(iter(serving or listed_entries), None)
        if entry is None:
            entry = GroupConfig(group, (port,), config.defaults)
        chosen.append(replace(entry, ports=(port,)))
    return replace(config, groups=tuple(chosen))
