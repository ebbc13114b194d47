"""The event loop: one selector over file descriptors, monotonic timers and a signal pipe.

Rule: knows nothing of memory, pages or the kernel: it waits without busy polling and calls
back. Signals are turned into bytes on a pipe (signal.set_wakeup_fd), so a signal wakes the loop
and is handled between callbacks, never inside one.
"""

from __future__ import annotations

import heapq
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

Callback = Callable[[], None]


@dataclass(order=True)
class _Timer:
    due: float
    name: str = field(compare=False)
    interval: float = field(compare=False)
    callback: Callback = field(compare=False)


class Timers:
    """Periodic callbacks on the monotonic clock; the loop sleeps until the earliest is due."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[_Timer] = []

    def every(self, name: str, interval_seconds: float, callback: Callback) -> None:
        heapq.heappush(
            self._heap, _Timer(self._clock() + interval_seconds, name, interval_seconds, callback)
        )

    def once(self, name: str, delay_seconds: float, callback: Callback) -> None:
        """Run `callback` once after `delay_seconds` (interval 0 marks it one-shot)."""
        heapq.heappush(self._heap, _Timer(self._clock() + delay_seconds, name, 0.0, callback))

    def __contains__(self, name: str) -> bool:
        return any(t.name == name for t in self._heap)

    def cancel(self, name: str) -> None:
        self._heap = [t for t in self._heap if t.name != name]
        heapq.heapify(self._heap)

    def timeout(self) -> float | None:
        """Seconds until the next timer is due (None: no timers, sleep until an fd wakes us)."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0].due - self._clock())

    def run_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0].due <= now:
            timer = heapq.heappop(self._heap)
            if timer.interval > 0:
                # Re-arm from now, not from `due`: after a long stall we tick once, not in a burst.
                timer.due = max(timer.due + timer.interval, now)
                heapq.heappush(self._heap, timer)
            timer.callback()


class SignalPipe:
    """SIGTERM/SIGINT/SIGHUP as bytes on a non-blocking pipe (the self-pipe trick)."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, object] = {}
        self._old_wakeup = -1
        self._installed = False

    def install(self) -> None:
        for sig in self.HANDLED:
            self._previous[sig] = signal.signal(sig, self._noop)
        self._old_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self._installed = True

    @staticmethod
    def _noop(signum: int, frame: FrameType | None) -> None:
        # The byte written by set_wakeup_fd is what the loop reads; nothing to do here.
        return None

    def send(self, signum: int) -> None:
        """Queue `signum` as if it had been received (from any thread)."""
        os.write(self.write_fd, bytes([signum]))

    def drain(self) -> list[int]:
        received: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 512)
            except BlockingIOError:
                break
            if not data:
                break
            received.extend(data)
        return received

    def close(self) -> None:
        if self._installed:
            signal.set_wakeup_fd(self._old_wakeup)
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self._installed = False
        os.close(self.read_fd)
        os.close(self.write_fd)


class EventLoop:
    """A selector, timers and a stop flag. `run_once()` waits for the first fd or timer (or the
    extra deadline `extra_timeout()` gives, e.g. a trigger's time limit) and calls back."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.stopped = False
        self.wakeups = 0
        self._owners: dict[int, str] = {}

    def register(self, fd: int, owner: str, callback: Callback) -> None:
        if fd in self._owners:
            return
        self.selector.register(fd, selectors.EVENT_READ, callback)
        self._owners[fd] = owner

    def unregister(self, fd: int) -> None:
        if self._owners.pop(fd, None) is not None:
            self.selector.unregister(fd)

    def fds(self, owner: str) -> list[int]:
        return [fd for fd, o in self._owners.items() if o == owner]

    def __contains__(self, fd: int) -> bool:
        return fd in self._owners

    def run_once(self, extra_timeout: float | None = None) -> None:
        timeout = self.timers.timeout()
        if extra_timeout is not None:
            timeout = extra_timeout if timeout is None else min(timeout, extra_timeout)
        ready = self.selector.select(timeout)
        self.wakeups += 1
        for key, _mask in ready:
            callback: Callback = key.data
            callback()
            if self.stopped:
                return
        self.timers.run_due()

    def close(self) -> None:
        self.selector.close()
