"""`mcastd status`: gather every running daemon's snapshot and render it for people or JSON."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mcastd import textfile
from mcastd.config import format_address
from mcastd.control import find_sockets, query
from mcastd.exitcodes import ExitCode, fail
from mcastd.instance import search_directories
from mcastd.snapshot import status_document

Document = dict[str, Any]  # as mcastd.snapshot builds it, read back from JSON


def gather(
    sockets: Sequence[str], runtime_roots: Sequence[str]
) -> tuple[list[Document], list[str]]:
    """Snapshots of the daemons at `sockets` (or all found under runtime_roots), and problems."""
    found: list[Document] = []
    problems: list[str] = []
    if sockets:
        paths = [Path(s) for s in sockets]
    else:
        paths, denied = [], []
        for root in runtime_roots:
            found_here, denied_here = find_sockets(root)
            paths += found_here
            denied += denied_here
        problems.extend(
            f"{d}: permission denied (only root and the group mcastd may read status)"
            for d in denied
        )
    for path in paths:
        try:
            document = query(path)
        except (OSError, ValueError) as e:
            if sockets:  # named by the operator: say why it did not answer
                problems.append(f"{path}: {getattr(e, 'strerror', None) or e}")
            continue  # found by globbing: a daemon that just stopped, not a problem
        document["socket"] = str(path)
        found.append(document)
    return found, problems


def only_groups(documents: Iterable[Document], groups: Sequence[str]) -> list[Document]:
    """The documents with only the endpoints of `groups` (all of them when groups is empty)."""
    if not groups:
        return list(documents)
    kept = []
    for document in documents:
        endpoints = [e for e in document["endpoints"] if e["group"] in groups]
        if endpoints:
            kept.append({**document, "endpoints": endpoints})
    return kept


def render_json(documents: list[Document]) -> str:
    return json.dumps(status_document(documents), indent=2, sort_keys=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def _size(count: int) -> str:
    """`512B`, `2.9KiB`, `2.0MiB`: a byte count as people read it."""
    if count < 1024:
        return f"{count}B"
    size = count / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}GiB"


def _when(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    return f"{_duration(max(now - moment, 0))} ago"


def render_text(documents: list[Document], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []
    for d in documents:
        reload = d.get("last_reload")
        if reload is None:
            reloaded = "never reloaded"
        else:
            count = len(reload["errors"])
            errors = f"{count} error{'s' if count != 1 else ''}"
            if not reload["ok"]:
                outcome = f"FAILED ({errors})"  # the previous configuration is still in force
            else:
                outcome = f"done with {errors}" if count else "ok"  # groups it could not join
            reloaded = f"reloaded {_when(reload['time'], now)}: {outcome}"
        lines.append(
            f"{d['instance']} (pid {d['pid']}, mcastd {d['version']}): "
            f"up {_duration(d['uptime'])}, config {d['config']}, {reloaded}"
        )
        lines.append(f"  {d['status']}")
        header = ("GROUP:PORT", "RECEIVED", "ANSWERED", "DROPPED", "IN/OUT", "LAST SENDER", "HEARD")
        rows = [header]
        details = []
        for e in d["endpoints"]:
            name = format_address(e["group"], e["port"])
            dropped = {k: v for k, v in e["dropped"].items() if v}
            rows.append(
                (
                    name,
                    str(e["received"]),
                    str(e["answered"]),
                    str(sum(dropped.values())),
                    f"{_size(e['bytes_in'])}/{_size(e['bytes_out'])}",
                    e["last_source"] or "-",
                    _when(e["last_heard"], now),
                )
            )
            notes = [f"{n} {reason}" for reason, n in sorted(dropped.items())]
            state = e.get("state", "serving")  # absent from daemons before the field was added
            if state == "waiting":
                notes.insert(0, f"waiting for interface {e['interface']}")
            elif state != "serving":
                notes.insert(0, f"{state}: {e.get('error') or 'unknown error'}")
            if e["listened"]:
                notes.append(f"{e['listened']} listened (reply: none)")
            if e["suppressed_lines"]:
                notes.append(f"{e['suppressed_lines']} log lines suppressed")
            details.append(f"    {name}: {', '.join(notes)}" if notes else "")
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for i, row in enumerate(rows):
            cells = [
                cell.rjust(width) if 1 <= column <= 3 else cell.ljust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  " + "  ".join(cells).rstrip())
            if i and details[i - 1]:
                lines.append(details[i - 1])
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def main(args: argparse.Namespace) -> int:
    """`mcastd status`: every daemon found (or asked), as a table or JSON."""
    roots = args.runtime_dir or search_directories(os.geteuid(), os.environ)
    documents, problems = gather(args.socket, roots)
    for problem in problems:
        fail(problem, ExitCode.NOT_RUNNING)
    shown = only_groups(documents, args.groups)
    if args.format == "prometheus":
        textfile.output(shown, args.output)
    elif args.json or args.format == "json":
        print(render_json(shown))
    elif shown:
        print(render_text(shown))
    if not documents:
        if problems:
            return ExitCode.NOT_RUNNING
        return fail("no running mcastd found", ExitCode.NOT_RUNNING)
    if not shown:
        return fail(f"no running mcastd serves {', '.join(args.groups)}", ExitCode.NOT_RUNNING)
    return ExitCode.OK
