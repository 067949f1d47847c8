"""stopauth: the STOP text is built where it is checked; a signed one round-trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcastd.protocol import is_stop
from mcastd.stopauth import (
    MAC_HEX,
    NONCE_HEX,
    PREFIX,
    STOP_WORD,
    ReplayGuard,
    StopRefusal,
    looks_signed,
    sign,
    stop_request,
)

KEY = b"k" * 32
T0 = 1_800_000_000.0


def test_stop_request_is_plain_stop_without_a_key():
    text = stop_request(None, "239.0.0.9", 59259, T0)
    assert text == STOP_WORD
    assert is_stop(text)
    assert not looks_signed(text)


def test_stop_request_with_a_key_is_signed_for_that_group_and_port():
    text = stop_request(KEY, "239.0.0.9", 59259, T0)
    assert text.startswith(PREFIX)
    stamp, nonce, mac = text.removeprefix(PREFIX).split(" ")
    assert (stamp, len(nonce), len(mac)) == (f"{T0:.3f}", NONCE_HEX, MAC_HEX)
    assert looks_signed(text)
    guard = ReplayGuard(KEY, 30.0)
    assert guard.check(text, "239.0.0.9", 59259, T0) is None
    assert guard.check(text, "239.0.0.9", 59259, T0) is StopRefusal.REPLAYED
    other = stop_request(KEY, "239.0.0.9", 59259, T0)
    assert other != text  # a fresh nonce each time
    assert guard.check(other, "239.0.0.10", 59259, T0) is StopRefusal.BAD_MAC


@given(
    st.floats(min_value=0, max_value=1e11),
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
)
def test_every_signed_stop_is_accepted_once_within_the_window(wall: float, nonce: str):
    text = sign(KEY, "ff05::9", 1, wall, nonce)
    guard = ReplayGuard(KEY, 30.0)
    assert guard.check(text, "ff05::9", 1, wall) is None
    assert guard.check(text, "ff05::9", 1, wall) is StopRefusal.REPLAYED
