"""Operator trigger scripts: run without a shell, event data only in the environment, never
blocking the event loop.

Rule: starts, watches and kills child processes; it never waits for one. The loop calls
`poll()` when one of `fds()` (pidfds, readable when a child exits) is ready or `timeout()`
seconds have passed. A script is refused unless its path is absolute, root-owned and not
writable by group or others (nor is any directory or link on the way to it), and it is run
from the descriptor that was checked, never by its path again.
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


#: Symbolic links followed while opening one script, as the kernel's own limit (fs/namei.c,
#: MAXSYMLINKS).
MAX_SYMLINKS = 40


def _loose_dir(st: os.stat_result, allowed_uids: Collection[int]) -> str | None:
    """Why a directory on the way to a script would let someone else swap what is below it."""
    if st.st_uid not in allowed_uids and st.st_uid != 0:
        return f"owned by uid {st.st_uid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return "writable by group or others"
    return None


def open_script(path: str, allowed_uids: Collection[int] = (0,)) -> int | str:
    """An O_PATH descriptor of the script at `path`, or why it must not be run.

    Walks `path` one component at a time from "/" with O_NOFOLLOW, following symbolic links by
    hand: every directory passed through (the ones a link leads to included) must be owned by
    an allowed uid or root and not writable by group or others unless sticky; a link in a sticky
    directory must be owned by an allowed uid (the rule of fs.protected_symlinks); the file must
    be a regular, executable file owned by an allowed uid and not writable by group or others.
    Execute the descriptor (`/proc/self/fd/N`), never the path again: what was checked is what
    runs, whoever later re-points a link."""
    if not os.path.isabs(path):
        return "not an absolute path"
    pending = [c for c in reversed(path.split("/")) if c and c != "."]
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    where, links = "/", 0
    try:
        problem = _loose_dir(os.fstat(fd), allowed_uids)
        if problem:
            return f"directory / {problem}"
        while pending:
            name = pending.pop()
            try:
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                return f"cannot stat: {e.strerror}"
            st = os.fstat(nfd)
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(name, dir_fd=fd)
                finally:
                    os.close(nfd)
                links += 1
                if links > MAX_SYMLINKS:
                    return "too many levels of symbolic links"
                if os.fstat(fd).st_mode & stat.S_ISVTX and st.st_uid not in allowed_uids:
                    return f"link {os.path.join(where, name)} owned by uid {st.st_uid}"
                pending += [c for c in reversed(target.split("/")) if c and c != "."]
                if target.startswith("/"):
                    os.close(fd)
                    fd, where = os.open("/", os.O_PATH | os.O_DIRECTORY), "/"
                continue
            here = os.path.normpath(os.path.join(where, name))
            if pending:  # a directory on the way
                if not stat.S_ISDIR(st.st_mode):
                    os.close(nfd)
                    return f"{here} is not a directory"
                problem = _loose_dir(st, allowed_uids)
                if problem:
                    os.close(nfd)
                    return f"directory {here} {problem}"
                os.close(fd)
                fd, where = nfd, here
                continue
            problem = _script_problem(st, allowed_uids)
            if problem:
                os.close(nfd)
                return problem
            return nfd
        return "not a regular file"  # the path named a directory ("/", or ending in "..")
    finally:
        os.close(fd)


def _script_problem(st: os.stat_result, allowed_uids: Collection[int]) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in allowed_uids:
        return f"owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    if not st.st_mode & stat.S_IXUSR:
        return "not executable"
    return None


def check_script(path: str, allowed_uids: Collection[int] = (0,)) -> str | None:
    """Why `path` must not be run as a trigger, or None when it may (see `open_script`)."""
    opened = open_script(path, allowed_uids)
    if isinstance(opened, str):
        return opened
    os.close(opened)
    return None


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
    #: Not run because `max_queued` were already waiting.
    dropped: bool = False
    #: Killed, or never started, because the daemon stopped.
    at_shutdown: bool = False

    @property
    def kind(self) -> str:
        """The metric's `outcome` label: ok, failed, timed_out, refused, dropped, shutdown."""
        if self.at_shutdown:
            return "shutdown"
        if self.dropped:
            return "dropped"
        if self.refused is not None:
            return "refused"
        if self.timed_out:
            return "timed_out"
        return "ok" if self.returncode == 0 else "failed"


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
        free. Returns False when no script is configured, it is refused or the queue is full
        (an outcome with `refused` or `dropped` follows from the next poll)."""
        path = self.scripts.get(event)
        if path is None:
            return False
        problem = check_script(path, self.allowed_uids)
        if problem:
            self._done.append(TriggerOutcome(event, path, None, False, 0.0, refused=problem))
            return False
        if len(self._queue) >= self.max_queued:
            self.dropped += 1
            self._done.append(TriggerOutcome(event, path, None, False, 0.0, dropped=True))
            return False
        env = trigger_env(event, data)
        # $0 of the script is /proc/self/fd/N (it runs from the checked descriptor): its path.
        env[ENV_PREFIX + "SCRIPT"] = path
        self._queue.append((event, path, env))
        self._start_queued()
        return True

    def _start_queued(self) -> None:
        while self._queue and len(self._running) < self.max_running:
            event, path, env = self._queue.popleft()
            now = self._clock()
            # Checked again now, on the file that will run: fire() checked it when it was queued.
            script_fd = open_script(path, self.allowed_uids)
            if isinstance(script_fd, str):
                self._done.append(TriggerOutcome(event, path, None, False, 0.0, refused=script_fd))
                continue
            try:
                proc = subprocess.Popen(
                    [path],
                    # The checked file itself: the child's copy of the descriptor has the same
                    # number; a #! interpreter opens it through the same /proc path.
                    executable=f"/proc/self/fd/{script_fd}",
                    pass_fds=(script_fd,),
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
            finally:
                os.close(script_fd)
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

    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> list[TriggerOutcome]:
        """Kill every running script and drop the queue (daemon shutdown); every script not
        run to its end comes back as an `at_shutdown` outcome."""
        queued = [
            TriggerOutcome(event, path, None, False, 0.0, at_shutdown=True)
            for event, path, _ in self._queue
        ]
        self._queue.clear()
        killed: set[int] = set()
        for r in self._running:
            if r.proc.poll() is None:
                r.timed_out = True
                killed.add(id(r))
                _kill_group(r.proc.pid)
            r.proc.wait()
        for r in self._running:
            os.close(r.pidfd)
            code = r.proc.returncode
            shut = id(r) in killed
            self._done.append(TriggerOutcome(r.event, r.path, code, shut, 0.0, at_shutdown=shut))
        self._running = []
        done, self._done = self._done + queued, []
        return done
