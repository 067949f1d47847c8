"""mcastd configs for the bench: the shipped one, and variants written to a temp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.responders import GROUP, PORT


def shipped(repo: Path) -> Path:
    return repo / "etc" / "mcastd.yaml"


def _load(repo: Path) -> dict[str, Any]:
    data = yaml.safe_load(shipped(repo).read_text())
    if not isinstance(data, dict):
        raise SystemExit(f"bench: {shipped(repo)} is not a mapping")
    return data


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def variant(repo: Path, workdir: Path, name: str, **top: Any) -> Path:
    """The shipped config with some top-level keys changed (e.g. log_datagrams=False)."""
    data = _load(repo)
    data.update(top)
    return _write(workdir / f"mcastd-{name}.yaml", data)


def ipv4_only(repo: Path, workdir: Path, name: str, **top: Any) -> Path:
    """The shipped config (with changes) minus its IPv6 groups."""
    data = _load(repo)
    data.update(top)
    data["groups"] = [g for g in data.get("groups", []) if ":" not in str(g.get("group"))]
    return _write(workdir / f"mcastd-{name}-ipv4.yaml", data)


def pair_groups(n: int) -> list[dict[str, Any]]:
    """n (group, port) pairs: the bench group first, then 239.1.x.y, all on the bench port."""
    groups: list[dict[str, Any]] = [{"group": GROUP, "ports": [PORT]}]
    for i in range(1, n):
        groups.append({"group": f"239.1.{i // 250}.{i % 250 + 1}", "ports": [PORT]})
    return groups


def pairs(repo: Path, workdir: Path, n: int, **top: Any) -> Path:
    """The shipped top-level settings (with changes) and n IPv4 (group, port) pairs."""
    data = _load(repo)
    data.update(top)
    data["groups"] = pair_groups(n)
    return _write(workdir / f"mcastd-{n}-pairs.yaml", data)
