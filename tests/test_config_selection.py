"""config.select: what `--group` and `--port` serve, and a located ConfigError for what they
cannot (issue 9: an unlisted SSM group used to raise a bare ValueError, exit 70)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastd.config import Config, Endpoint, Settings, built_in_defaults, parse, select
from mcastd.errors import ConfigError

FILE = """\
ttl: 3
groups:
  - group: 239.0.0.9
    ttl: 7
    ports: [1, 2]
  - group: 239.0.0.9
    port: 3
    ttl: 9
  - group: 232.1.1.1
    sources: [192.0.2.1]
    ports: [4, 5]
  - ff05::9
"""


def test_select_uses_the_entry_or_the_top_level_defaults():
    config = parse("ttl: 3\ngroups:\n  - group: 239.0.0.9\n    ttl: 7\n    ports: [1, 2]\n")
    listed = select(config, ["239.0.0.9"])
    assert [(e.port, e.ttl) for e in listed.endpoints()] == [(1, 7), (2, 7)]
    unlisted = select(config, ["FF05::0009"])
    assert unlisted.endpoints() == (Endpoint("ff05::9", 59259, Settings(ttl=3)),)
    with pytest.raises(ConfigError, match="not a multicast address"):
        select(config, ["192.0.2.1"])


@pytest.mark.parametrize(
    ("groups", "port", "expected"),
    [
        # neither: the file as it is
        (
            (),
            None,
            "239.0.0.9:1 ttl 7, 239.0.0.9:2 ttl 7, 239.0.0.9:3 ttl 9, "
            "232.1.1.1:4 ttl 3 from 192.0.2.1, 232.1.1.1:5 ttl 3 from 192.0.2.1, "
            "[ff05::9]:59259 ttl 3",
        ),
        # groups alone: every entry of a listed group; the top level for an unlisted one
        (("239.0.0.9",), None, "239.0.0.9:1 ttl 7, 239.0.0.9:2 ttl 7, 239.0.0.9:3 ttl 9"),
        (("239.0.0.77", "239.0.0.77"), None, "239.0.0.77:59259 ttl 3"),
        (("ff05::9", "239.0.0.77"), None, "[ff05::9]:59259 ttl 3, 239.0.0.77:59259 ttl 3"),
        # group and port: exactly that (group, port), with the entry that serves the port ...
        (("239.0.0.9",), 3, "239.0.0.9:3 ttl 9"),
        # ... else the group's first entry, else the top level
        (("239.0.0.9",), 5000, "239.0.0.9:5000 ttl 7"),
        (("239.0.0.77",), 5000, "239.0.0.77:5000 ttl 3"),
        # a listed SSM group keeps its sources on another port
        (("232.1.1.1",), 6000, "232.1.1.1:6000 ttl 3 from 192.0.2.1"),
        # a port alone: every group of the file, each on that port once
        ((), 7, "239.0.0.9:7 ttl 7, 232.1.1.1:7 ttl 3 from 192.0.2.1, [ff05::9]:7 ttl 3"),
        ((), 3, "239.0.0.9:3 ttl 9, 232.1.1.1:3 ttl 3 from 192.0.2.1, [ff05::9]:3 ttl 3"),
    ],
)
def test_what_group_and_port_serve(groups: tuple[str, ...], port: int | None, expected: str):
    chosen = select(parse(FILE, "f.yaml"), groups, port)
    shown = [
        f"{e} ttl {e.ttl}" + (f" from {','.join(e.sources)}" if e.sources else "")
        for e in chosen.endpoints()
    ]
    assert ", ".join(shown) == expected


def test_port_alone_on_the_built_in_defaults_moves_both_groups():
    chosen = select(built_in_defaults(), (), 5000)
    assert [str(e) for e in chosen.endpoints()] == ["239.0.0.9:5000", "[ff05::9]:5000"]


@pytest.mark.parametrize(
    ("text", "groups", "port", "expected"),
    [
        # issue 9: an SSM group the file does not list, pointed at the file's `groups:`
        (
            "port: 1\ngroups:\n  - 239.0.0.9\n",
            ("232.1.1.1",),
            None,
            [
                "f.yaml:2:1: --group: 232.1.1.1 is a source-specific (SSM) group that the "
                "configuration does not list: add it to 'groups' with its 'sources'"
            ],
        ),
        (
            "port: 1\n",
            ("ff3e::1",),
            7,
            [
                "f.yaml:1:1: --group: ff3e::1 is a source-specific (SSM) group that the "
                "configuration does not list: add it to 'groups' with its 'sources'"
            ],
        ),
        # every problem at once, in the order given
        (
            "groups: [239.0.0.9]\n",
            ("10.0.0.1", "232.0.0.1"),
            0,
            [
                "f.yaml:1:1: --port: 0 is not a port (1-65535)",
                "f.yaml:1:1: --group: '10.0.0.1' is not a multicast address "
                "(224.0.0.0/4 or ff00::/8)",
                "f.yaml:1:1: --group: 232.0.0.1 is a source-specific (SSM) group that the "
                "configuration does not list: add it to 'groups' with its 'sources'",
            ],
        ),
        # an unlisted group that the top-level interface address cannot carry
        (
            "interface: 192.0.2.1\ngroups: [239.0.0.9]\n",
            ("ff05::9",),
            None,
            [
                "f.yaml:2:1: --group: 192.0.2.1 is an IPv4 address but ff05::9 is an IPv6 "
                "group (the top-level 'interface')"
            ],
        ),
    ],
)
def test_what_cannot_be_selected_is_a_located_config_error(
    text: str, groups: tuple[str, ...], port: int | None, expected: list[str]
):
    with pytest.raises(ConfigError) as caught:
        select(parse(text, "f.yaml"), groups, port)
    assert [str(p) for p in caught.value.problems] == expected


def test_a_listed_ssm_group_is_selected_with_its_sources():
    config = parse("groups:\n  - {group: 232.1.1.1, sources: [10.0.0.1]}\n", "f.yaml")
    (endpoint,) = select(config, ["232.1.1.1"]).endpoints()
    assert endpoint.sources == ("10.0.0.1",)


# -- property: whatever the file and the --group, a Config or a ConfigError ----------------

group_texts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["239.0.0.9", "232.1.1.1", "ff05::9", "ff3e::1", "ff02::1", "224.0.0.1"]),
    st.ip_addresses().map(str),
)
file_texts = st.one_of(
    st.text(max_size=120),
    st.sampled_from(
        [
            "",
            "groups: [239.0.0.9]\n",
            "interface: 192.0.2.1\n",
            "interface: 'fe80::1'\ngroups: [ff02::1]\n",
            "groups:\n  - {group: 232.1.1.1, sources: [10.0.0.1], ports: [1, 2]}\n",
            "port: 1000\ngroups:\n  - 239.0.0.9\n  - {group: 239.0.0.9, port: 2}\n",
        ]
    ),
)


@settings(max_examples=400, deadline=None)
@given(file_texts, st.lists(group_texts, max_size=3), st.none() | st.integers(-5, 70000))
def test_any_file_and_any_group_give_a_config_or_a_config_error(
    text: str, groups: list[str], port: int | None
):
    try:
        chosen: Config | ConfigError = select(parse(text, "p.yaml"), groups, port)
    except ConfigError as e:
        chosen = e
    if isinstance(chosen, ConfigError):
        assert chosen.problems
        assert all(str(p).startswith("p.yaml:") and "\n" not in str(p) for p in chosen.problems)
        return
    assert chosen.endpoints()
    if port is not None:
        assert {e.port for e in chosen.endpoints()} == {port}


# -- end to end: `mcastd check --group` on a file without the SSM group ---------------------


def test_check_with_an_unlisted_ssm_group_exits_78_with_one_located_line(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("ttl: 5\ngroups: [239.0.0.9]\n")
    out = subprocess.run(
        [sys.executable, "-m", "mcastd", "check", "--group", "232.1.1.1", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (out.returncode, out.stdout) == (78, "")
    assert out.stderr.splitlines() == [
        f"{config}:2:1: --group: 232.1.1.1 is a source-specific (SSM) group that the "
        "configuration does not list: add it to 'groups' with its 'sources'"
    ]
