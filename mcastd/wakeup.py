"""Signals into the event loop: handlers that only record, and a self-pipe that wakes `select`.

Python runs a signal handler between bytecodes of the main thread, which may be blocked in
epoll_wait: `signal.set_wakeup_fd` makes the C-level handler write a byte to the pipe, so the
loop wakes up at once and looks at what the handler recorded.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from types import FrameType, TracebackType

Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class Wakeup:
    """`with Wakeup({SIGTERM: on_stop, ...}) as wakeup:` select on `wakeup.fd`, then `drain()`.

    On entry the handlers (called with the signal) are installed and the pipe made; on exit
    the previous handlers and wake-up fd are put back and the pipe closed. Raises OSError on
    entry when no pipe can be made (out of descriptors); nothing is changed then.
    """

    def __init__(self, handlers: Mapping[signal.Signals, Callable[[signal.Signals], None]]):
        self.handlers = handlers
        self.fd = -1
        self._write_fd = -1
        self._saved_fd = -1
        self._saved: dict[signal.Signals, Handler] = {}

    def __enter__(self) -> Wakeup:
        self.fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._saved_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        except BaseException:
            self._close()  # not the main thread: nothing was changed
            raise
        try:
            for signum, handler in self.handlers.items():
                self._saved[signum] = signal.signal(signum, _caller(handler))
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)
        self._saved = {}
        signal.set_wakeup_fd(self._saved_fd)
        self._close()

    def _close(self) -> None:
        os.close(self.fd)
        os.close(self._write_fd)
        self.fd = self._write_fd = -1

    def drain(self) -> None:
        """Empty the pipe (the bytes are signal numbers; the handlers already saw them)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 512):
                pass


def _caller(handler: Callable[[signal.Signals], None]) -> Callable[[int, FrameType | None], None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler(signal.Signals(signum))

    return on_signal
