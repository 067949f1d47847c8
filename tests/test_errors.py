"""errors: typed errors that say where and what, in the operator's words."""

from __future__ import annotations

import errno

from mcastd.errors import ConfigError, ConfigProblem, SocketSetupError, strerror


def test_a_config_problem_is_located():
    with_key = ConfigProblem("/etc/mcastd.yaml", 3, 7, "groups[0].ttl", "300 is not a TTL")
    assert str(with_key) == "/etc/mcastd.yaml:3:7: groups[0].ttl: 300 is not a TTL"
    without = ConfigProblem("/etc/mcastd.yaml", 1, 1, "", "cannot read: denied")
    assert str(without) == "/etc/mcastd.yaml:1:1: cannot read: denied"
    error = ConfigError([with_key, without])
    assert error.problems == (with_key, without)
    assert str(error).splitlines() == [str(with_key), str(without)]


def test_a_socket_setup_error_keeps_its_errno():
    error = SocketSetupError("239.0.0.9:59259", errno.EADDRINUSE, "address already in use")
    assert str(error) == "239.0.0.9:59259: address already in use"
    assert (error.where, error.errno) == ("239.0.0.9:59259", errno.EADDRINUSE)


def test_strerror_is_lower_cased_like_our_messages():
    assert strerror(errno.ENODEV) == "no such device"
    assert strerror(errno.EACCES) == "permission denied"
