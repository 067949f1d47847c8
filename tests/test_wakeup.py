"""wakeup: a real signal to this process runs the handler and makes the pipe readable."""

from __future__ import annotations

import os
import select
import signal
import threading

import pytest

from mcastd.wakeup import Wakeup


def readable(fd: int) -> bool:
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def test_a_signal_is_recorded_and_wakes_the_pipe_then_everything_is_put_back():
    seen: list[signal.Signals] = []
    before = signal.getsignal(signal.SIGHUP)
    with Wakeup({signal.SIGHUP: seen.append, signal.SIGUSR1: seen.append}) as wakeup:
        assert not readable(wakeup.fd)
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGHUP, signal.SIGUSR1]
        assert readable(wakeup.fd)
        wakeup.drain()
        assert not readable(wakeup.fd)
        fd = wakeup.fd
    assert signal.getsignal(signal.SIGHUP) is before
    assert signal.set_wakeup_fd(-1) == -1  # the previous wake-up fd (none) is back
    with pytest.raises(OSError, match="Bad file descriptor"):  # the pipe is closed
        os.fstat(fd)


def test_outside_the_main_thread_it_fails_and_changes_nothing():
    errors: list[BaseException] = []
    before = signal.getsignal(signal.SIGHUP)

    def enter() -> None:
        try:
            with Wakeup({signal.SIGHUP: lambda s: None}):
                pass
        except ValueError as e:
            errors.append(e)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert signal.getsignal(signal.SIGHUP) is before
