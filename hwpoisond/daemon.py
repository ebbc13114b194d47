"""The daemon loop: one thread, one selector over source fds and timers, no busy polling.

Rule: this module sequences side effects and owns their order; it decides nothing (the core does)
and parses nothing (parse/ does). Per step: gather → decide → persist intent → act → persist
result → publish metrics.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hwpoisond import config as config_mod
from hwpoisond.kernelfs import KernelFS
from hwpoisond.notify import Notifier

log = logging.getLogger("hwpoisond")


@dataclass(order=True)
class _Timer:
    due: float
    name: str = field(compare=False)
    interval: float = field(compare=False)
    callback: Callable[[], None] = field(compare=False)


class Timers:
    """Periodic callbacks on the monotonic clock; the loop sleeps until the earliest is due."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[_Timer] = []

    def every(self, name: str, interval_seconds: float, callback: Callable[[], None]) -> None:
        heapq.heappush(
            self._heap, _Timer(self._clock() + interval_seconds, name, interval_seconds, callback)
        )

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
            timer.callback()
            # Re-arm from now, not from `due`: after a long stall we tick once, not in a burst.
            timer.due = max(timer.due + timer.interval, now)
            heapq.heappush(self._heap, timer)


class SignalPipe:
    """Turns SIGTERM/SIGINT/SIGHUP into bytes on a pipe the selector watches (self-pipe trick via
    signal.set_wakeup_fd), so a signal wakes the loop and is handled between steps, never inside
    one."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, object] = {}
        self._old_wakeup = -1

    def install(self) -> None:
        for sig in self.HANDLED:
            self._previous[sig] = signal.signal(sig, self._noop)
        self._old_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    @staticmethod
    def _noop(signum: int, frame: FrameType | None) -> None:
        # The byte written by set_wakeup_fd is what the loop reads; nothing to do here.
        return None

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
        signal.set_wakeup_fd(self._old_wakeup)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        os.close(self.read_fd)
        os.close(self.write_fd)


class Daemon:
    """Owns the loop. Components are opened in `start()` and closed in `shutdown()`."""

    def __init__(
        self,
        cfg: config_mod.Config,
        kfs: KernelFS,
        state_dir: Path,
        config_path: str | None,
        notifier: Notifier | None = None,
    ) -> None:
        self.cfg = cfg
        self.kfs = kfs
        self.state_dir = state_dir
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.signals = SignalPipe()
        self._stop = False
        self.wakeups = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        _ensure_state_dir(self.state_dir)
        self.signals.install()
        self.selector.register(self.signals.read_fd, selectors.EVENT_READ, self._on_signal)
        if self.notifier.watchdog_interval_seconds:
            self.timers.every("watchdog", self.notifier.watchdog_interval_seconds, self._watchdog)

    def status_line(self) -> str:
        return "watching"

    def run(self) -> int:
        self.start()
        self.notifier.ready(self.status_line())
        log.info("hwpoisond ready: %s", self.status_line())
        try:
            while not self._stop:
                self._run_once()
        finally:
            self.notifier.stopping()
            self.shutdown()
        log.info("hwpoisond stopped")
        return 0

    def _run_once(self) -> None:
        ready = self.selector.select(self.timers.timeout())
        self.wakeups += 1
        for key, _mask in ready:
            callback: Callable[[], None] = key.data
            callback()
            if self._stop:
                return
        self.timers.run_due()

    def shutdown(self) -> None:
        self.selector.close()
        self.signals.close()

    # -- signals ----------------------------------------------------------------------------------

    def _on_signal(self) -> None:
        for signum in self.signals.drain():
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s, stopping", signal.Signals(signum).name)
                self._stop = True
            elif signum == signal.SIGHUP:
                self.reload()

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is reported and the old one stays in force."""
        self.notifier.reloading()
        try:
            new_cfg = config_mod.load(self.config_path)
        except config_mod.ConfigError as e:
            for problem in e.problems:
                log.error(
                    "config reload rejected, keeping the old config: %s: %s", e.source, problem
                )
            self.notifier.reloaded(self.status_line())
            return
        self.apply_config(new_cfg)
        log.info("config reloaded from %s", self.config_path or "(built-in defaults)")
        self.notifier.reloaded(self.status_line())

    def apply_config(self, new_cfg: config_mod.Config) -> None:
        self.cfg = new_cfg
        logging.getLogger("hwpoisond").setLevel(new_cfg.daemon.log_level.upper())

    def _watchdog(self) -> None:
        self.notifier.watchdog()


def _ensure_state_dir(state_dir: Path) -> None:
    """The state directory is 0700 (DESIGN.md): it holds what the daemon knows about the machine."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno or errno.EIO, f"cannot create state directory {state_dir}") from e
    os.chmod(state_dir, 0o700)
