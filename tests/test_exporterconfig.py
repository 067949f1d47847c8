"""mcastd.exporterconfig: the exporter's file, every problem at once with its place."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastd.errors import ConfigError
from mcastd.exporterconfig import (
    DEFAULT_LISTEN,
    ExporterConfig,
    ProbeModule,
    load,
    parse,
)

FULL = """\
listen: ["127.0.0.1:9859", "[::1]:9859"]
runtime_dir: /run/mcastd
sockets: [/tmp/x/control.sock]
modules:
  lan:
    group: 239.0.0.9
    port: 59259
    ttl: 2
    count: 3
    interval: 0.1
    wait: 0.5
    interface: eth0
    expect: [10.77.0.2, fd77::3]
    max_loss: 0.2
    hops: true
    max_hops: 4
    min_interval: 30
  v6:
    group: FF05::9
"""


def test_full_file() -> None:
    config = parse(FULL, "e.yaml")
    assert config.listen == ("127.0.0.1:9859", "[::1]:9859")
    assert config.sockets == ("/tmp/x/control.sock",)
    assert config.modules["lan"] == ProbeModule(
        name="lan",
        group="239.0.0.9",
        port=59259,
        ttl=2,
        count=3,
        interval=0.1,
        wait=0.5,
        interface="eth0",
        expect=("10.77.0.2", "fd77::3"),
        max_loss=0.2,
        hops=True,
        max_hops=4,
        min_interval=30,
    )
    assert config.modules["v6"] == ProbeModule(name="v6", group="ff05::9")


def test_expected_responders_are_named_as_replies_come_from_them() -> None:
    # A reply's source is fd77::2 and 10.77.0.2, however the operator wrote them.
    text = "modules:\n  m:\n    group: ff05::9\n    expect: [FD77::0002, 10.77.0.2]\n"
    assert parse(text, "e.yaml").modules["m"].expect == ("fd77::2", "10.77.0.2")


@pytest.mark.parametrize("text", ["", "# nothing\n", "~\n"])
def test_empty_file_is_the_defaults(text: str) -> None:
    config = parse(text, "e.yaml")
    assert config.listen == (DEFAULT_LISTEN,)
    assert config.modules == {}


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            "lisen: x\n",
            ["e.yaml:1:1: lisen: unknown key (did you mean 'listen'?)"],
        ),
        (
            "listen: 9859\n",
            ["e.yaml:1:9: listen: 9859 is not an address:port ([address]:port for IPv6)"],
        ),
        (
            "listen: [localhost:1]\n",
            [
                "e.yaml:1:10: listen[0]: 'localhost:1' is not an address:port "
                "([address]:port for IPv6)"
            ],
        ),
        ("runtime_dir: run\n", ["e.yaml:1:14: runtime_dir: 'run' is not an absolute path"]),
        ("modules: [a]\n", ["e.yaml:1:10: modules: must be a mapping of names, not a list"]),
        ("modules:\n  a:\n    port: 1\n", ["e.yaml:3:5: modules.a: needs a group"]),
        (
            "modules:\n  a:\n    group: 10.0.0.1\n    ttl: 0\n    count: 1000\n",
            [
                "e.yaml:3:12: modules.a.group: '10.0.0.1' is not a multicast address",
                "e.yaml:4:10: modules.a.ttl: 0 is not a TTL (1-255)",
                "e.yaml:5:12: modules.a.count: 1000 is not a number of probes (1-100)",
            ],
        ),
        (
            "modules:\n  a:\n    group: 239.0.0.9\n    min_interval: 0.5\n",
            ["e.yaml:4:19: modules.a.min_interval: 0.5 is not a number of seconds (1-86400)"],
        ),
        (
            "modules:\n  a:\n    group: 239.0.0.9\n    expect: [10.0.0.1, bob]\n",
            ["e.yaml:4:24: modules.a.expect[1]: 'bob' is not an address"],
        ),
        (
            "modules:\n  a:\n    group: 239.0.0.9\n    hops: yes please\n",
            ["e.yaml:4:11: modules.a.hops: 'yes please' is not true or false"],
        ),
        (
            "modules:\n  a b:\n    group: 239.0.0.9\n",
            ["e.yaml:3:5: modules.a b: a module name is letters, digits, '_', '-' and '.'"],
        ),
        (
            "modules:\n  a:\n    group: 239.0.0.9\n    ttll: 3\n",
            ["e.yaml:4:5: modules.a.ttll: unknown key (did you mean 'ttl'?)"],
        ),
        (
            "listen: [\n",
            ["e.yaml:2:1: not valid YAML: expected the node content, but found '<stream end>'"],
        ),
    ],
)
def test_problems(text: str, errors: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "e.yaml")
    assert [str(p) for p in caught.value.problems] == errors


def test_load_missing_named_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot be read: No such file or directory"):
        load(str(tmp_path / "absent.yaml"))


def test_load_reads_the_file(tmp_path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(FULL)
    assert set(load(str(path)).modules) == {"lan", "v6"}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        outcome: ExporterConfig | ConfigError = parse(text, "e.yaml")
    except ConfigError as e:
        outcome = e
    if isinstance(outcome, ConfigError):
        assert outcome.problems
        assert all(str(p).startswith("e.yaml:") for p in outcome.problems)
