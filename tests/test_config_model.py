"""config.model: the dataclasses and what an Endpoint derives from its settings."""

from __future__ import annotations

import socket

from mcastd.config import (
    BUILT_IN,
    DEFAULT_GROUPS,
    DEFAULT_PORT,
    Endpoint,
    Settings,
    built_in_defaults,
)


def test_built_in_defaults_serve_the_default_groups_on_the_default_port():
    config = built_in_defaults()
    assert config.source == BUILT_IN
    assert [(e.group, e.port) for e in config.endpoints()] == [
        (g, DEFAULT_PORT) for g in DEFAULT_GROUPS
    ]


def test_endpoint_derives_from_its_settings():
    settings = Settings(ttl=4, unicast_ttl=64, interface="eth0", reply="group")
    four = Endpoint("239.0.0.9", 1, settings)
    six = Endpoint("ff05::9", 2)
    assert (four.key, four.family, str(four)) == (("239.0.0.9", 1), socket.AF_INET, "239.0.0.9:1")
    assert (six.key, six.family, str(six)) == (("ff05::9", 2), socket.AF_INET6, "[ff05::9]:2")
    assert (four.ttl, four.unicast_ttl, four.interface, four.reply) == (4, 64, "eth0", "group")
    assert (six.ttl, six.unicast_ttl, six.interface, six.reply) == (1, None, None, "unicast")


def test_ttl_defaults_follow_upstream():
    # group replies: one hop, as upstream's TTL; unicast replies: the system default
    assert (Settings().ttl, Settings().unicast_ttl) == (1, None)
