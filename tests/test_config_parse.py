"""config.parse: every error class with its line:col, the key table, and no input that escapes
ConfigError."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mcastd.config import (
    Config,
    Endpoint,
    Settings,
    StopPolicy,
    built_in_defaults,
    parse,
)
from mcastd.config.parse import SETTING_FIELDS, STOP_FIELDS
from mcastd.errors import ConfigError


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "f.yaml")
    return [str(p) for p in caught.value.problems]


def test_endpoints_of_a_full_file():
    config = parse(
        """
port: 5000
ttl: 4
reply: group
log_datagrams: false
groups:
  - group: 239.0.0.9
    ports: [5001, 5002]
  - group: FF05:0::9
    ttl: 9
    reply: none
    interface: eth0
  - 239.1.1.1
"""
    )
    top = Settings(port=5000, ttl=4, reply="group", log_datagrams=False)
    six = Settings(port=5000, ttl=9, interface="eth0", reply="none", log_datagrams=False)
    assert config.endpoints() == (
        Endpoint("239.0.0.9", 5001, top),
        Endpoint("239.0.0.9", 5002, top),
        Endpoint("ff05::9", 5000, six),
        Endpoint("239.1.1.1", 5000, top),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a port out of range, with the exact line:col of the value
        (
            "groups:\n  - group: 239.0.0.9\n    port: 70000\n",
            ["f.yaml:3:11: groups[0].port: 70000 is not a port (1-65535)"],
        ),
        (
            "groups:\n  - group: 239.0.0.9\n    ports: [1, 0]\n",
            ["f.yaml:3:16: groups[0].ports[1]: 0 is not a port (1-65535)"],
        ),
        ("ttl: 256\n", ["f.yaml:1:6: ttl: 256 is not a TTL (0-255)"]),
        ("ttl: -1\n", ["f.yaml:1:6: ttl: -1 is not a TTL (0-255)"]),
        ("unicast_ttl: 0\n", ["f.yaml:1:14: unicast_ttl: 0 is not a TTL (1-255)"]),
        ("unicast_ttl: 256\n", ["f.yaml:1:14: unicast_ttl: 256 is not a TTL (1-255)"]),
        (
            "groups:\n  - group: 239.0.0.9\n    unicast_ttl: many\n",
            ["f.yaml:3:18: groups[0].unicast_ttl: 'many' is not a TTL (1-255)"],
        ),
        # wrong types are named
        ("port: eighty\n", ["f.yaml:1:7: port: 'eighty' is not a port (1-65535)"]),
        ("port: true\n", ["f.yaml:1:7: port: 'true' is not a port (1-65535)"]),
        ("ttl: 1.5\n", ["f.yaml:1:6: ttl: '1.5' is not a TTL (0-255)"]),
        ("port: [1]\n", ["f.yaml:1:7: port: must be a single value, not a list"]),
        ("log_datagrams: maybe\n", ["f.yaml:1:16: log_datagrams: 'maybe' is not true or false"]),
        ("reply: loud\n", ["f.yaml:1:8: reply: 'loud' is not one of unicast, group, none"]),
        ("interface: 'a b'\n", ["f.yaml:1:12: interface: 'a b' is not an interface name"]),
        # not multicast
        (
            "groups:\n  - group: 10.0.0.1\n",
            [
                "f.yaml:2:12: groups[0].group: '10.0.0.1' is not a multicast address "
                "(224.0.0.0/4 or ff00::/8)"
            ],
        ),
        (
            "groups: [fe80::1]\n",
            [
                "f.yaml:1:10: groups[0].group: 'fe80::1' is not a multicast address "
                "(224.0.0.0/4 or ff00::/8)"
            ],
        ),
        # unknown keys, with a hint
        ("prot: 1\n", ["f.yaml:1:1: prot: unknown key (did you mean 'port'?)"]),
        (
            "groups:\n  - group: 239.0.0.9\n    tll: 2\n",
            ["f.yaml:3:5: groups[0].tll: unknown key (did you mean 'ttl'?)"],
        ),
        ("colour: red\n", ["f.yaml:1:1: colour: unknown key"]),
        # duplicates
        (
            "groups:\n  - group: 239.0.0.9\n  - group: 239.0.0.9\n",
            ["f.yaml:3:5: groups[1]: 239.0.0.9 port 59259 is already served by groups[0]"],
        ),
        (
            "groups:\n  - group: ff05::9\n    ports: [1, 2]\n  - group: FF05::0:9\n    port: 2\n",
            ["f.yaml:4:5: groups[1]: ff05::9 port 2 is already served by groups[0]"],
        ),
        ("port: 1\nport: 2\n", ["f.yaml:2:1: port: is given twice"]),
        # structure
        ("groups: []\n", ["f.yaml:1:9: groups: is empty: there is nothing to serve"]),
        ("groups: 239.0.0.9\n", ["f.yaml:1:9: groups: must be a list of groups"]),
        ("- 1\n- 2\n", ["f.yaml:1:1: must be a mapping, not a list"]),
        ("groups:\n  - port: 1\n", ["f.yaml:2:5: groups[0]: has no 'group'"]),
        (
            "groups:\n  - group: 239.0.0.9\n    port: 1\n    ports: [2]\n",
            ["f.yaml:4:5: groups[0].ports: give either 'port' or 'ports'"],
        ),
        (
            "groups:\n  - group: 239.0.0.9\n    interface: 'fe80::1'\n",
            [
                "f.yaml:3:16: groups[0].interface: fe80::1 is an IPv6 address "
                "but 239.0.0.9 is an IPv4 group"
            ],
        ),
        (
            "port: !!python/object:os.system x\n",
            [
                "f.yaml:1:7: port: cannot be read: could not determine a constructor "
                "for the tag 'tag:yaml.org,2002:python/object:os.system'"
            ],
        ),
        # defences
        ("reply_rate: -1\n", ["f.yaml:1:13: reply_rate: -1 is not replies per second (0-1e+09)"]),
        ("reply_burst: 0\n", ["f.yaml:1:14: reply_burst: 0 is not a count (1-1e+09)"]),
        (
            "reply_rate_total: x\n",
            ["f.yaml:1:19: reply_rate_total: 'x' is not replies per second (0-1e+09)"],
        ),
        (
            "allow_from: [10.0.0.0/8, bogus]\n",
            ["f.yaml:1:26: allow_from[1]: 'bogus' is not an address or network"],
        ),
        ("allow_from: []\n", ["f.yaml:1:13: allow_from: is empty: nothing would be allowed"]),
        ("stop: maybe\n", ["f.yaml:1:7: stop: 'maybe' is not enabled, disabled or a mapping"]),
        (
            "stop:\n  replay_window: 0\n",
            ["f.yaml:2:18: stop.replay_window: 0 is not seconds (1-3600)"],
        ),
        (
            "stop:\n  alow_from: [10.0.0.1]\n",
            ["f.yaml:2:3: stop.alow_from: unknown key (did you mean 'allow_from'?)"],
        ),
        (
            "wait_for_interface: sometimes\n",
            ["f.yaml:1:21: wait_for_interface: 'sometimes' is not true or false"],
        ),
        # source-specific multicast
        (
            "groups: [232.1.1.1]\n",
            [
                "f.yaml:1:10: groups[0].group: 232.1.1.1 is a source-specific (SSM) group: "
                "list its senders in 'sources'"
            ],
        ),
        (
            "groups:\n  - group: ff3e::1234\n",
            [
                "f.yaml:2:12: groups[0].group: ff3e::1234 is a source-specific (SSM) group: "
                "list its senders in 'sources'"
            ],
        ),
        (
            "groups:\n  - group: 232.1.1.1\n    sources: [10.0.0.1, 'ff02::1', 10.0.0.1, x]\n",
            [
                "f.yaml:3:25: groups[0].sources[1]: ff02::1 is not a unicast IPv4 sender "
                "for 232.1.1.1",
                "f.yaml:3:36: groups[0].sources[2]: 10.0.0.1 is listed twice",
                "f.yaml:3:46: groups[0].sources[3]: 'x' is not an address",
            ],
        ),
        # YAML syntax
        (
            "groups: [\n",
            ["f.yaml:2:1: not valid YAML: expected the node content, but found '<stream end>'"],
        ),
        ("a: *nothing\n", ["f.yaml:1:4: not valid YAML: found undefined alias 'nothing'"]),
        (
            "groups: [239.0.0.9]\n\x07\n",
            ["f.yaml:2:1: not valid YAML: character #x0007 is not allowed"],
        ),
    ],
)
def test_errors_are_one_line_each_with_line_and_column(text: str, expected: list[str]):
    assert errors_of(text) == expected


def test_every_error_of_a_file_is_reported_at_once():
    text = "prot: 1\nttl: 300\ngroups:\n  - group: 1.2.3.4\n  - group: 239.0.0.9\n    port: 0\n"
    assert errors_of(text) == [
        "f.yaml:1:1: prot: unknown key (did you mean 'port'?)",
        "f.yaml:2:6: ttl: 300 is not a TTL (0-255)",
        "f.yaml:4:12: groups[0].group: '1.2.3.4' is not a multicast address "
        "(224.0.0.0/4 or ff00::/8)",
        "f.yaml:6:11: groups[1].port: 0 is not a port (1-65535)",
    ]


def test_empty_file_and_missing_groups_mean_the_default_groups():
    assert parse("").endpoints() == built_in_defaults().endpoints()
    assert [e.port for e in parse("port: 4000\n").endpoints()] == [4000, 4000]


def test_defences_parse_into_settings():
    config = parse(
        """
reply_rate: 50
reply_burst: 100
reply_rate_total: 2000.5
allow_from: 10.0.0.0/8
stop:
  allow_from: [192.0.2.1, 2001:db8::/32]
  replay_window: 10
  answer_refused: false
groups:
  - group: 232.1.1.1
    sources: [10.0.0.1]
    stop: disabled
    wait_for_interface: yes
"""
    )
    (endpoint,) = config.endpoints()
    assert endpoint.sources == ("10.0.0.1",)
    s = endpoint.settings
    assert (s.reply_rate, s.reply_burst, s.wait_for_interface) == (50, 100, True)
    assert [str(n) for n in s.allow_from or ()] == ["10.0.0.0/8"]
    assert s.stop == StopPolicy(enabled=False)
    top = config.defaults.stop
    assert [str(n) for n in top.allow_from or ()] == ["192.0.2.1/32", "2001:db8::/32"]
    assert (top.replay_window, top.answer_refused) == (10.0, False)
    assert config.reply_rate_total == 2000.5


@pytest.mark.parametrize(
    ("text", "top", "group"),
    [
        ("groups: [239.0.0.9]\n", None, None),  # unset: the system default for both
        ("unicast_ttl: 64\ngroups: [239.0.0.9]\n", 64, 64),  # inherited by the group
        ("unicast_ttl: 64\ngroups:\n  - {group: 239.0.0.9, unicast_ttl: 3}\n", 64, 3),
        ("unicast_ttl: 64\ngroups:\n  - {group: 239.0.0.9, unicast_ttl: null}\n", 64, None),
        ("unicast_ttl: null\ngroups:\n  - {group: 239.0.0.9, unicast_ttl: 255}\n", None, 255),
        ("unicast_ttl: 1\ngroups: [239.0.0.9]\n", 1, 1),
    ],
)
def test_unicast_ttl_is_separate_from_ttl(text: str, top: int | None, group: int | None):
    config = parse(text)
    (endpoint,) = config.endpoints()
    assert (config.defaults.unicast_ttl, endpoint.unicast_ttl) == (top, group)
    assert endpoint.ttl == 1  # the group-reply hop limit keeps its own default


def test_yaml_words_for_no_mean_reply_none():
    assert parse("reply: no\n").defaults.reply == "none"


def outcome(text: str, filename: str) -> Config | ConfigError:
    try:
        return parse(text, filename)
    except ConfigError as e:
        return e


# -- property-based: whatever the document, parse gives a Config or a ConfigError -----------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["239.0.0.9", "ff05::9", "eth0", "unicast", "group", "none", "224.0.0.1"]),
)
keys = st.one_of(
    st.sampled_from(
        [
            "port",
            "ports",
            "ttl",
            "unicast_ttl",
            "interface",
            "reply",
            "log_datagrams",
            "groups",
            "group",
        ]
    ),
    st.text(max_size=8),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(documents)
def test_any_yaml_document_gives_a_config_or_a_config_error(document: object):
    result = outcome(yaml.safe_dump(document), "h.yaml")
    if isinstance(result, ConfigError):
        assert result.problems
        assert all(str(p).startswith("h.yaml:") and "\n" not in str(p) for p in result.problems)
    else:
        assert isinstance(result, Config)
        assert result.endpoints()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_a_config_or_a_config_error(text: str):
    result = outcome(text, "t.yaml")
    assert isinstance(result, Config) or result.problems


# -- the key tables: one row per dataclass field ---------------------------------------------


def test_every_setting_has_one_row_in_the_table():
    assert list(SETTING_FIELDS) == [f.name for f in fields(Settings)]
    assert set(STOP_FIELDS) == {f.name for f in fields(StopPolicy)} - {"enabled"}


def test_null_is_a_value_only_where_the_table_says_so():
    text = "unicast_ttl: ~\ninterface: ~\nallow_from: ~\nstop: {allow_from: ~, key_file: ~}\n"
    assert parse(text).defaults == Settings()
    for name, row in SETTING_FIELDS.items():
        if not row.nullable:
            assert errors_of(f"{name}: ~\n"), name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a null sender used to be skipped silently, leaving an SSM group with no source
        (
            "groups:\n  - group: 232.1.1.1\n    sources: [~]\n",
            ["f.yaml:3:15: groups[0].sources[0]: must be an address, not empty"],
        ),
        (
            "groups:\n  - group: 232.1.1.1\n    sources: ~\n",
            ["f.yaml:3:14: groups[0].sources: must be an address, not empty"],
        ),
        # a top-level interface address that cannot carry a default group
        (
            "interface: 192.0.2.1\n",
            [
                "f.yaml:1:12: groups.interface: 192.0.2.1 is an IPv4 address "
                "but ff05::9 is an IPv6 group"
            ],
        ),
    ],
)
def test_more_errors(text: str, expected: list[str]):
    assert errors_of(text) == expected


def test_groups_key_position_is_kept_for_select():
    assert parse("port: 1\n\ngroups:\n  - 239.0.0.9\n").groups_at == (3, 1)
    assert parse("port: 1\n").groups_at == (1, 1)
