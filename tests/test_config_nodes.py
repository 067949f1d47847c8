"""config.nodes: the YAML side of a checker, used here by a small reader of its own."""

from __future__ import annotations

import pytest
import yaml

from mcastd.config.nodes import Field, NodeReader, compose, is_null, kind, position
from mcastd.errors import ConfigError


class Reader(NodeReader):
    """A checker for a two-key file, as another YAML file of the project would write one."""

    def name(self, node: yaml.Node, key: str) -> str | None:
        value = self.scalar(node, key)
        if isinstance(value, str) and value:
            return value
        self.problem(node, key, f"{value!r} is not a name")
        return None


TABLE: dict[str, Field[Reader]] = {
    "name": Field(Reader.name),
    "count": Field(lambda r, node, key: r.integer(node, key, 1, 9, "a count"), nullable=True),
}


def read(text: str) -> dict[str, object]:
    reader = Reader("r.yaml")
    root = compose(text, "r.yaml")
    assert root is not None
    values = reader.fields(reader.mapping(root, "", tuple(TABLE)), "", TABLE)
    reader.raise_problems()
    return values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: a\ncount: 3\n", {"name": "a", "count": 3}),
        ("count: ~\n", {"count": None}),  # nullable: null is a value
        ("{}\n", {}),
    ],
)
def test_a_table_reads_the_keys_it_names(text: str, expected: dict[str, object]):
    assert read(text) == expected


def test_every_problem_at_once_in_file_order():
    with pytest.raises(ConfigError) as caught:
        read("count: 10\nname: ''\nnmae: x\nname: b\n")
    assert [str(p) for p in caught.value.problems] == [
        "r.yaml:1:8: count: 10 is not a count (1-9)",
        "r.yaml:2:7: name: '' is not a name",
        "r.yaml:3:1: nmae: unknown key (did you mean 'name'?)",
        "r.yaml:4:1: name: is given twice",
    ]


def test_node_helpers():
    root = compose("a: [1, ~]\nb: {c: d}\n", "n.yaml")
    assert isinstance(root, yaml.MappingNode)
    (_, seq), (_, mapping) = root.value
    assert (kind(seq), kind(mapping), kind(seq.value[0])) == ("a list", "a mapping", "'1'")
    assert (is_null(seq.value[1]), is_null(seq.value[0])) == (True, False)
    assert position(mapping) == (2, 4)
    assert compose("", "n.yaml") is None


def test_items_give_each_entry_its_key_path_and_a_single_value_is_a_list_of_one():
    reader = NodeReader("f.yaml")
    listed = compose("[10.0.0.1, 10.0.0.2]\n", "f.yaml")
    single = compose("10.0.0.1\n", "f.yaml")
    assert listed is not None
    assert single is not None
    assert [(n.value, where) for n, where in reader.items(listed, "allow_from")] == [
        ("10.0.0.1", "allow_from[0]"),
        ("10.0.0.2", "allow_from[1]"),
    ]
    assert [(n.value, where) for n, where in reader.items(single, "allow_from")] == [
        ("10.0.0.1", "allow_from")
    ]
