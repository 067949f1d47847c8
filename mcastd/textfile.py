"""`mcastd status --format prometheus`: the exporter's metrics as one text file, for
node_exporter's textfile collector (format 0.0.4; info metrics become `*_info` gauges).

The file is replaced atomically: written to a hidden temporary file in the same directory
(which the collector, reading only `*.prom`, skips) and renamed over the old one, so a scrape
never reads half a file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence

from mcastd.metrics import Document, Families, daemon_families, exposition

# Readable by node_exporter's user, as node_exporter's own example scripts leave them.
FILE_MODE = 0o644


def render(documents: Sequence[Document]) -> bytes:
    """The documents' metrics in the text format 0.0.4."""
    return exposition(Families(daemon_families(documents)))[0]


def write_atomically(path: str, data: bytes) -> None:
    """Replace `path` with `data` in one rename."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def output(documents: Sequence[Document], path: str | None) -> None:
    """Write the metrics to `path` (atomically), or to stdout when path is None or '-'."""
    data = render(documents)
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        write_atomically(path, data)
