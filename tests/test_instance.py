"""mcastd.instance: a daemon's name and where a hand-started one puts its control socket."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcastd.errors import SocketSetupError
from mcastd.instance import (
    MAX_NAME,
    candidates,
    claim,
    default_name,
    in_use,
    make_directory,
    own_directory,
    search_directories,
    valid_name,
)


@pytest.mark.parametrize(
    ("config_path", "groups", "name"),
    [
        (None, (), "mcastd"),  # the built-in config
        ("/etc/mcastd.yaml", (), "mcastd"),
        ("/srv/lab/lab.yaml", (), "lab"),
        ("demo.yml", (), "demo"),
        ("/etc/mcastd.yaml", ("239.0.0.9",), "mcastd@239.0.0.9"),  # as the template unit
        (None, ("239.0.0.9", "ff05::9"), "mcastd@239.0.0.9,ff05::9"),
        ("/tmp/my lab (2).yaml", (), "my_lab__2_"),
        ("/tmp/.hidden.yaml", (), "hidden"),
        ("/tmp/---.yaml", (), "mcastd"),  # nothing usable left
    ],
)
def test_default_name(config_path: str | None, groups: tuple[str, ...], name: str):
    assert default_name(config_path, groups) == name


def test_a_name_for_many_groups_is_shortened_and_still_distinct():
    many = tuple(f"239.1.1.{n}" for n in range(20))
    other = (*many[:-1], "239.1.1.99")
    first, second = default_name(None, many), default_name(None, other)
    assert len(first) == MAX_NAME
    assert first != second
    assert first.startswith("mcastd@239.1.1.0,239.1.1.1,")


@given(st.text(max_size=80), st.lists(st.sampled_from(["239.0.0.9", "ff05::9"]), max_size=9))
def test_every_default_name_is_a_valid_name(stem: str, groups: list[str]):
    assert valid_name(default_name(f"/tmp/{stem.replace('/', '')}.yaml", groups))


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("lab", True),
        ("mcastd@239.0.0.9", True),
        ("mcastd@ff05::9", True),
        ("a-b_c.d+e,f", True),
        ("", False),
        ("../etc", False),
        ("a/b", False),
        (".hidden", False),
        ("-flag", False),
        ("x" * MAX_NAME, True),
        ("x" * (MAX_NAME + 1), False),
        ("white space", False),
    ],
)
def test_valid_name(text: str, valid: bool):
    assert valid_name(text) is valid


@pytest.mark.parametrize(
    ("euid", "environ", "own", "searched"),
    [
        (0, {"XDG_RUNTIME_DIR": "/run/user/0"}, "/run/mcastd", ("/run/mcastd",)),
        (0, {}, "/run/mcastd", ("/run/mcastd",)),
        (
            1000,
            {"XDG_RUNTIME_DIR": "/run/user/1000"},
            "/run/user/1000/mcastd",
            ("/run/mcastd", "/run/user/1000/mcastd"),
        ),
        # unset or not a path (su sessions): a private directory in the temp directory
        (1000, {}, "{tmp}/mcastd-1000", ("/run/mcastd", "{tmp}/mcastd-1000")),
        (1000, {"XDG_RUNTIME_DIR": "relative"}, "{tmp}/mcastd-1000", None),
        (1000, {"XDG_RUNTIME_DIR": ""}, "{tmp}/mcastd-1000", None),
    ],
)
def test_directories(
    euid: int, environ: dict[str, str], own: str, searched: tuple[str, ...] | None
):
    tmp = tempfile.gettempdir()
    assert own_directory(euid, environ) == own.format(tmp=tmp)
    if searched is not None:
        assert search_directories(euid, environ) == tuple(s.format(tmp=tmp) for s in searched)


def test_candidates():
    assert candidates("lab", explicit=True) == ["lab"]
    derived = candidates("lab", explicit=False)
    assert derived[:3] == ["lab", "lab-2", "lab-3"]
    assert len(set(derived)) == len(derived)
    assert all(valid_name(c) for c in candidates("x" * MAX_NAME, explicit=False))


def listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    return sock


def test_claim_takes_the_first_free_name(tmp_path: Path):
    directory = tmp_path / "mcastd"
    euid = os.geteuid()
    assert claim("lab", False, str(directory), euid) == ("lab", str(directory / "lab.sock"))
    assert directory.stat().st_mode & 0o777 == 0o700
    with listening(directory / "lab.sock"):
        assert in_use(str(directory), "lab")
        assert claim("lab", False, str(directory), euid)[0] == "lab-2"
        # an explicit --name is not renamed
        with pytest.raises(SocketSetupError, match="another mcastd has this name"):
            claim("lab", True, str(directory), euid)
    # the daemon is gone: its stale socket file does not keep the name
    assert not in_use(str(directory), "lab")
    assert claim("lab", True, str(directory), euid)[0] == "lab"


def test_a_units_runtime_directory_takes_its_name(tmp_path: Path):
    (tmp_path / "mcastd").mkdir()  # /run/mcastd/mcastd/ of the running mcastd.service
    assert claim("mcastd", False, str(tmp_path), os.geteuid())[0] == "mcastd-2"


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701])
def test_a_shared_directory_is_refused(tmp_path: Path, mode: int):
    directory = tmp_path / "mcastd-1000"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(SocketSetupError, match="not a private directory of this user"):
        make_directory(str(directory), os.geteuid())


def test_a_directory_of_another_user_is_refused(tmp_path: Path):
    directory = tmp_path / "mcastd-1000"
    directory.mkdir(mode=0o700)
    with pytest.raises(SocketSetupError, match="not a private directory of this user"):
        make_directory(str(directory), os.geteuid() + 1000)


def test_a_symlink_is_refused(tmp_path: Path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "mcastd-1000").symlink_to(target)
    with pytest.raises(SocketSetupError, match="not a private directory"):
        make_directory(str(tmp_path / "mcastd-1000"), os.geteuid())


def test_a_directory_that_cannot_be_made_is_said(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SocketSetupError, match=r"control socket directory .*: not a directory"):
        make_directory(str(tmp_path / "file" / "mcastd"), os.geteuid())
