"""Operator trigger scripts: run without a shell, event data only in the environment, never
blocking the event loop.

Rule: starts, watches and kills child processes; it never waits for one. The loop calls
`poll()` when one of `fds()` (pidfds, readable when a child exits) is ready or `timeout()`
seconds have passed. A script is refused unless its path is absolute, root-owned and not
writable by group or others (nor is any directory above it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import subprocess
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

TriggerEvent = Literal[
    "page_retired", "offline_failed", "uncorrected_error", "dimm_escalation", "budget_exhausted"
]
TRIGGER_EVENTS: tuple[TriggerEvent, ...] = (
    "page_retired",
    "offline_failed",
    "uncorrected_error",
    "dimm_escalation",
    "budget_exhausted",
)

#: The whole environment a script gets besides HWPOISOND_*: nothing of the daemon's leaks.
BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
ENV_PREFIX = "HWPOISOND_"
MAX_ENV_VALUE_CHARS = 4096
_ENV_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def check_script(path: str, allowed_uids: Collection[int] = (0,)) -> str | None:
    """Why `path` must not be run as a trigger, or None when it may.

    Follows symlinks and checks the file and every directory above it: a file anyone else can
    write, or a directory where anyone else can swap it, would hand them root."""
    if not os.path.isabs(path):
        return "not an absolute path"
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        return f"cannot stat: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in allowed_uids:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if not st.st_mode & stat.S_IXUSR:
        return "not executable"
    directory = os.path.dirname(real)
    while True:
        dst = os.stat(directory)
        loose = dst.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not dst.st_mode & stat.S_ISVTX
        if dst.st_uid not in allowed_uids and dst.st_uid != 0:
            return f"directory {directory} owned by uid {dst.st_uid}"
        if loose:
            return f"directory {directory} writable by group or others"
        if directory == "/":
            return None
        directory = os.path.dirname(directory)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def trigger_env(event: TriggerEvent, data: Mapping[str, object]) -> dict[str, str]:
    """BASE_ENV plus HWPOISOND_EVENT and one HWPOISOND_<KEY> per datum. Keys that are not plain
    identifiers and None values are left out; NULs are dropped and long values cut, so nothing
    from a kernel line can break the environment block."""
    env = dict(BASE_ENV)
    env[ENV_PREFIX + "EVENT"] = event
    for key, value in data.items():
        name = key.upper()
        if value is None or not _ENV_KEY.fullmatch(name):
            continue
        text = str(value).replace("\x00", "")[:MAX_ENV_VALUE_CHARS]
        env[ENV_PREFIX + name] = text
    return env


@dataclass(frozen=True, slots=True)
class TriggerOutcome:
    """A trigger that finished, was killed, or never started (`refused` says why)."""

    event: TriggerEvent
    path: str
    returncode: int | None
    timed_out: bool
    duration_seconds: float
    refused: str | None = None


@dataclass
class _Running:
    event: TriggerEvent
    path: str
    proc: subprocess.Popen[bytes]
    pidfd: int
    started: float
    deadline: float
    timed_out: bool = False


class TriggerRunner:
    """Runs the configured scripts asynchronously: at most `max_running` at once, at most
    `max_queued` waiting; beyond that a trigger is dropped (and counted in `dropped`)."""

    def __init__(
        self,
        scripts: Mapping[TriggerEvent, str | None],
        timeout_seconds: float,
        *,
        allowed_uids: Collection[int] = (0,),
        max_running: int = 4,
        max_queued: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scripts = {e: p for e, p in scripts.items() if p}
        self.timeout_seconds = timeout_seconds
        self.allowed_uids = tuple(allowed_uids)
        self.max_running = max_running
        self.max_queued = max_queued
        self._clock = clock
        self._queue: deque[tuple[TriggerEvent, str, dict[str, str]]] = deque()
        self._running: list[_Running] = []
        self._done: list[TriggerOutcome] = []
        self.dropped = 0
        self.started = 0

    def problems(self) -> dict[TriggerEvent, str]:
        """Each configured script that would be refused, with the reason (log it at start)."""
        out: dict[TriggerEvent, str] = {}
        for event, path in self.scripts.items():
            problem = check_script(path, self.allowed_uids)
            if problem:
                out[event] = f"{path}: {problem}"
        return out

    def fire(self, event: TriggerEvent, data: Mapping[str, object]) -> bool:
        """Queue the script for `event` with `data` in its environment and start it if a slot is
        free. Returns False when no script is configured, it is refused (an outcome with
        `refused` follows from the next poll), or the queue is full."""
        path = self.scripts.get(event)
        if path is None:
            return False
        problem = check_script(path, self.allowed_uids)
        if problem:
            self._done.append(TriggerOutcome(event, path, None, False, 0.0, refused=problem))
            return False
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            return False
        self._queue.append((event, path, trigger_env(event, data)))
        self._start_queued()
        return True

    def _start_queued(self) -> None:
        while self._queue and len(self._running) < self.max_running:
            event, path, env = self._queue.popleft()
            now = self._clock()
            try:
                proc = subprocess.Popen(
                    [path],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd="/",
                    close_fds=True,
                    # Its own process group, so a timeout kills whatever the script started too.
                    start_new_session=True,
                )
            except OSError as e:
                self._done.append(
                    TriggerOutcome(event, path, None, False, 0.0, refused=f"exec: {e.strerror}")
                )
                continue
            self.started += 1
            self._running.append(
                _Running(
                    event, path, proc, os.pidfd_open(proc.pid), now, now + self.timeout_seconds
                )
            )

    def poll(self) -> list[TriggerOutcome]:
        """Reap finished scripts, kill those past the timeout, start queued ones. Never blocks."""
        now = self._clock()
        still: list[_Running] = []
        for r in self._running:
            code = r.proc.poll()
            if code is not None:
                os.close(r.pidfd)
                self._done.append(
                    TriggerOutcome(r.event, r.path, code, r.timed_out, now - r.started)
                )
                continue
            if now >= r.deadline and not r.timed_out:
                r.timed_out = True
                _kill_group(r.proc.pid)
            still.append(r)
        self._running = still
        self._start_queued()
        done, self._done = self._done, []
        return done

    def fds(self) -> list[int]:
        """pidfds of the running scripts: each becomes readable when its script exits."""
        return [r.pidfd for r in self._running]

    def timeout(self) -> float | None:
        """Seconds until the earliest running script's deadline (None: nothing running)."""
        pending = [r.deadline for r in self._running if not r.timed_out]
        if self._done or any(r.timed_out for r in self._running):
            return 0.0 if self._done else 0.05
        return max(0.0, min(pending) - self._clock()) if pending else None

    def running(self) -> int:
        return len(self._running)

    def close(self) -> list[TriggerOutcome]:
        """Kill every running script and drop the queue (daemon shutdown)."""
        self._queue.clear()
        for r in self._running:
            if r.proc.poll() is None:
                r.timed_out = True
                _kill_group(r.proc.pid)
            r.proc.wait()
        return self.poll()
