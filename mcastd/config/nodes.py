"""Reading a YAML node tree with every problem located: what a checker needs from YAML, not
which keys a file has. `parse` builds mcastd.yaml's checker on it; another YAML file of the
project can subclass `NodeReader` the same way.

It walks nodes (not the plain Python objects) so that a problem carries the line and column it
comes from; readers return the value, or None after recording the problem, so that one pass
finds every problem of a file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import yaml

from mcastd.errors import ConfigError, ConfigProblem

Entries = dict[str, tuple[yaml.Node, yaml.Node]]
"""The entries of a mapping by key: (key node, value node)."""
R = TypeVar("R", bound="NodeReader")


@dataclass(frozen=True)
class Field(Generic[R]):
    """How one key is read: `read` returns its value, or None after recording the problem."""

    read: Callable[[R, yaml.Node, str], object]
    nullable: bool = False
    """`key: null` is a value (None: e.g. the kernel's choice), not a problem."""


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def position(node: yaml.Node) -> tuple[int, int]:
    """1-based (line, col) of a node, as editors count."""
    return node.start_mark.line + 1, node.start_mark.column + 1


def kind(node: yaml.Node) -> str:
    """What a node is, for "must be ..., not KIND"."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}"


def compose(text: str, filename: str) -> yaml.Node | None:
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


class NodeReader:
    """Collects problems while walking the YAML node tree of one file."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[ConfigProblem] = []

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line, col = position(node) if node else (1, 1)
        self.problems.append(ConfigProblem(self.filename, line, col, key, message))

    def mapping(self, node: yaml.Node, key: str, allowed: Sequence[str]) -> Entries:
        """The entries of a mapping node by key, reporting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, key, f"must be a mapping, not {kind(node)}")
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

    def fields(
        self: R, entries: Entries, prefix: str, table: Mapping[str, Field[R]]
    ) -> dict[str, Any]:
        """The values of the keys of `table` found in `entries`, by key. A key with a problem
        is left out, so it keeps its inherited value; the problem is reported anyway."""
        values: dict[str, Any] = {}
        for name, row in table.items():
            if name not in entries:
                continue
            node = entries[name][1]
            if row.nullable and is_null(node):
                values[name] = None
                continue
            value = row.read(self, node, prefix + name)
            if value is not None:
                values[name] = value
        return values

    def items(self, node: yaml.Node, key: str) -> list[tuple[yaml.Node, str]]:
        """The entries of a list, each with its key path (`key[0]` ...); a single value is a
        list of one, under `key` itself."""
        if isinstance(node, yaml.SequenceNode):
            return [(item, f"{key}[{i}]") for i, item in enumerate(node.value)]
        return [(node, key)]

    def scalar(self, node: yaml.Node, key: str) -> object:
        """The Python value of a scalar node, or a problem and None."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, key, f"must be a single value, not {kind(node)}")
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
        if value is None and is_null(node):
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

    def raise_problems(self) -> None:
        """Raise one ConfigError with every problem found, in file order; nothing if none."""
        if self.problems:
            raise ConfigError(sorted(self.problems, key=lambda p: (p.line, p.col)))
