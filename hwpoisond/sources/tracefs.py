"""The tracefs source: a private trace instance whose trace_pipe carries the RAS tracepoints.

Rule: reads tracefs only through `KernelFS`, never busy-waits (the daemon selects on `fileno()`),
never disturbs anybody else's tracing (everything happens inside our own instance), and reports a
missing tracefs or missing events as unavailable instead of raising.

Kernel behaviour relied on (kernel/trace/trace.c, Documentation/trace/ftrace.rst):
- `mkdir instances/NAME` creates a complete trace array with its own buffer, `events/`,
  `trace_clock` and `trace_pipe`; `rmdir` removes it, and fails with EBUSY while a reader holds one
  of its files open.
- Reading `trace_pipe` consumes what it returns; with O_NONBLOCK an empty buffer reads EAGAIN, and
  poll() reports readable when data arrives. It never reports end of file.
- Writing `trace_clock` resets the instance's buffer, so we only write it when it differs.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable

from hwpoisond.core.model import Event
from hwpoisond.kernelfs import KernelFS, KernelFSError
from hwpoisond.parse.stream import live_parser
from hwpoisond.sources.base import LineParserLike, SourceStatus

#: Where tracefs lives: its own mount since 4.1, else under debugfs (older kernels, and the
#: compatibility automount on newer ones).
TRACEFS_CANDIDATES = ("sys/kernel/tracing", "sys/kernel/debug/tracing")

#: The tracepoints that report memory errors, as `system/event` directories under `events/`
#: (include/ras/ras_event.h, include/trace/events/mce.h). Which exist depends on the kernel's
#: configuration (CONFIG_RAS, CONFIG_X86_MCE, CONFIG_MEMORY_FAILURE, CONFIG_ACPI_EXTLOG).
RAS_EVENTS = ("ras/mc_event", "mce/mce_record", "ras/memory_failure_event", "ras/extlog_mem_event")

DEFAULT_INSTANCE = "hwpoisond"
#: A second daemon on the same host takes `hwpoisond-1`, `-2`, ...; beyond this many we refuse.
MAX_INSTANCE_SUFFIX = 7

#: One os.read(); trace_pipe hands out at most a page of text per read anyway.
READ_CHUNK_BYTES = 64 * 1024
#: Stop one drain after this much so a storm on one source cannot starve the daemon's loop; the fd
#: stays readable and the selector brings us back.
MAX_DRAIN_BYTES = 4 * 1024 * 1024
#: A trace line longer than this is not one of ours (mc_event lines are well under 1 KiB); it is
#: dropped, counted, and the stream resynchronises at the next newline.
MAX_LINE_BYTES = 16 * 1024

#: Trace clocks we can turn into wall-clock time exactly, best first, with the matching POSIX clock.
_EXACT_CLOCKS = (("boot", time.CLOCK_BOOTTIME), ("mono", time.CLOCK_MONOTONIC))

_MS_SILENT = 0x8000  # MS_SILENT from <sys/mount.h>: do not log a failed mount attempt


def _selected_clock(text: str) -> tuple[str | None, set[str]]:
    """Parse `trace_clock`: `[local] global counter uptime perf mono mono_raw boot ...`."""
    selected = None
    names: set[str] = set()
    for token in text.split():
        name = token.strip("[]")
        names.add(name)
        if token.startswith("["):
            selected = name
    return selected, names


class TracefsSource:
    """Reads `ras:mc_event`, `mce:mce_record`, `ras:memory_failure_event` and
    `ras:extlog_mem_event` (those the kernel has) from a private instance's trace_pipe.

    Ownership of the instance is an exclusive flock(2) on its directory, held while we run: a
    second daemon finds `hwpoisond` locked and takes `hwpoisond-1` (both then see every event; no
    one steals from the other). An unlocked existing instance is a leftover of a daemon that died;
    it is adopted as is, so events it buffered while nobody was reading are still delivered.
    """

    name = "tracefs"

    def __init__(
        self,
        kfs: KernelFS,
        *,
        parser_factory: Callable[[], LineParserLike] = live_parser,
        instance_name: str = DEFAULT_INSTANCE,
        mount_if_absent: bool = True,
    ) -> None:
        self.kfs = kfs
        self._parser_factory = parser_factory
        self._parser = parser_factory()
        self._lost_malformed = 0
        self._lost_unparsed = 0
        self._first_unparsed: str | None = None
        self.instance_name = instance_name
        self.mount_if_absent = mount_if_absent
        self._status = SourceStatus(self.name, False, "not opened yet")
        self._tracefs: str | None = None
        self._instance: str | None = None  # kernel path of the claimed instance
        self._created = False
        self._dir_fd: int | None = None  # holds the flock
        self._pipe_fd: int | None = None
        self._keepalive_fd: int | None = None
        self._partial = b""
        self._discarding = False
        self._lineno = 0
        self._clock = "local"
        self.enabled_events: tuple[str, ...] = ()
        self.missing_events: tuple[str, ...] = ()
        self.lines_read = 0
        self.lines_too_long = 0

    # -- protocol ---------------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return self._status

    def fileno(self) -> int | None:
        return self._pipe_fd

    def open(self) -> SourceStatus:
        if self._pipe_fd is not None:
            return self._status
        self._status = self._open()
        return self._status

    def read_events(self) -> list[Event]:
        if self._pipe_fd is None:
            return []
        chunks: list[bytes] = []
        total = 0
        lost: str | None = None
        while total < MAX_DRAIN_BYTES:
            try:
                data = os.read(self._pipe_fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                lost = f"reading trace_pipe failed: {errno.errorcode.get(e.errno or 0, e.errno)}"
                break
            if not data:
                # trace_pipe never ends; end of file means it is gone (or a fake root's FIFO
                # without our keep-alive writer). Stop instead of spinning on a readable EOF.
                lost = "trace_pipe reported end of file"
                break
            chunks.append(data)
            total += len(data)
        events = self._parse(b"".join(chunks))
        if lost is not None:
            self._release()
            self._status = SourceStatus(self.name, False, lost)
        return events

    def parse_failures(self) -> int:
        return self._parser.malformed_lines() + self.lines_too_long + self._lost_malformed

    def unparsed_candidates(self) -> tuple[int, str | None]:
        first = self._first_unparsed or self._parser.first_unparsed()
        return self._parser.unparsed_candidates() + self._lost_unparsed, first

    def close(self) -> None:
        self._release()
        self._status = SourceStatus(self.name, False, "closed")

    # -- opening ----------------------------------------------------------------------------------

    def _unavailable(self, reason: str) -> SourceStatus:
        self._release()
        return SourceStatus(self.name, False, reason)

    def _find_tracefs(self) -> tuple[str | None, str]:
        for candidate in TRACEFS_CANDIDATES:
            if self.kfs.is_dir(f"{candidate}/instances"):
                return candidate, ""
        if not self.kfs.is_live:
            return None, "tracefs not found under the root (sys/kernel/tracing/instances absent)"
        if not self.mount_if_absent:
            return None, "tracefs not mounted at /sys/kernel/tracing and mounting is disabled"
        failure = self._mount_tracefs()
        if failure is None and self.kfs.is_dir(f"{TRACEFS_CANDIDATES[0]}/instances"):
            return TRACEFS_CANDIDATES[0], ""
        return None, f"tracefs not mounted at /sys/kernel/tracing and mounting it failed: {failure}"

    def _mount_tracefs(self) -> str | None:
        """mount -t tracefs nodev /sys/kernel/tracing (live root only). None on success."""
        target = str(self.kfs.path(TRACEFS_CANDIDATES[0]))
        if not os.path.isdir(target):
            return "no mount point /sys/kernel/tracing (kernel without tracefs?)"
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        rc = libc.mount(b"nodev", target.encode(), b"tracefs", _MS_SILENT, None)
        if rc != 0:
            return errno.errorcode.get(ctypes.get_errno(), "error")
        return None

    def _claim_instance(self, tracefs: str) -> str | None:
        """Create or adopt an instance we hold the lock on; returns a failure reason or None."""
        for suffix in range(MAX_INSTANCE_SUFFIX + 1):
            name = self.instance_name if suffix == 0 else f"{self.instance_name}-{suffix}"
            kpath = f"{tracefs}/instances/{name}"
            created = False
            try:
                self.kfs.mkdir(kpath)
                created = True
            except KernelFSError as e:
                if e.errno != errno.EEXIST:
                    return f"cannot create trace instance {name}: {e.errno_name}"
            try:
                dir_fd = os.open(self.kfs.path(kpath), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (OSError, KernelFSError) as e:
                return f"cannot open trace instance {name}: {e}"
            try:
                fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(dir_fd)  # another live hwpoisond reads this one: leave it alone
                continue
            self._dir_fd, self._instance, self._created = dir_fd, kpath, created
            return None
        return (
            f"trace instances {self.instance_name} to {self.instance_name}-{MAX_INSTANCE_SUFFIX}"
            " are all held by other running readers"
        )

    def _open(self) -> SourceStatus:
        tracefs, why = self._find_tracefs()
        if tracefs is None:
            return self._unavailable(why)
        self._tracefs = tracefs
        failure = self._claim_instance(tracefs)
        if failure is not None:
            return self._unavailable(failure)
        inst = self._instance
        assert inst is not None
        if not self.kfs.exists(f"{inst}/trace_pipe"):
            return self._unavailable(f"trace instance {inst} has no trace_pipe")
        try:
            self._set_clock(inst)
            enabled, missing = self._enable_events(inst)
        except KernelFSError as e:
            return self._unavailable(f"configuring {e.kpath} failed: {e.errno_name}")
        if not enabled:
            return self._unavailable(
                "this kernel has none of the RAS tracepoints ("
                + ", ".join(ev.replace("/", ":") for ev in RAS_EVENTS)
                + ")"
            )
        self.enabled_events, self.missing_events = enabled, missing
        try:
            self._pipe_fd = self.kfs.open_nonblocking(f"{inst}/trace_pipe")
            self._keep_fifo_open(inst)
        except (KernelFSError, OSError) as e:
            return self._unavailable(f"cannot open {inst}/trace_pipe: {e}")
        self._partial, self._discarding = b"", False
        reason = (
            f"{'created' if self._created else 'adopted'} instance {inst.rsplit('/', 1)[-1]};"
            f" clock {self._clock}; enabled {', '.join(enabled)}"
        )
        if missing:
            reason += f"; not in this kernel: {', '.join(missing)}"
        return SourceStatus(self.name, True, reason)

    def _set_clock(self, inst: str) -> None:
        """Select a trace clock we can convert to wall-clock time exactly: `boot` (4.10+,
        CLOCK_BOOTTIME, counts suspend) or `mono`. The default `local` clock is sched_clock,
        which only approximates time since boot."""
        kpath = f"{inst}/trace_clock"
        if not self.kfs.exists(kpath):
            self._clock = "local"
            return
        selected, names = _selected_clock(self.kfs.read_text(kpath))
        for name, _ in _EXACT_CLOCKS:
            if name in names:
                if selected != name:
                    self.kfs.write_text(kpath, name)
                self._clock = name
                return
        self._clock = selected or "local"

    def _enable_events(self, inst: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        enabled: list[str] = []
        missing: list[str] = []
        for ev in RAS_EVENTS:
            kpath = f"{inst}/events/{ev}/enable"
            if self.kfs.exists(kpath):
                self.kfs.write_text(kpath, "1")
                enabled.append(ev.replace("/", ":"))
            else:
                missing.append(ev.replace("/", ":"))
        if self.kfs.exists(f"{inst}/tracing_on"):
            self.kfs.write_text(f"{inst}/tracing_on", "1")
        return tuple(enabled), tuple(missing)

    def _keep_fifo_open(self, inst: str) -> None:
        """In a fake root trace_pipe is a FIFO, which reports end of file whenever its last writer
        leaves, where the real trace_pipe never does. Holding a writer of our own keeps the FIFO
        behaving like trace_pipe (readable only when there is data)."""
        assert self._pipe_fd is not None
        if stat.S_ISFIFO(os.fstat(self._pipe_fd).st_mode):
            self._keepalive_fd = os.open(
                self.kfs.path(f"{inst}/trace_pipe"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
            )

    # -- reading ----------------------------------------------------------------------------------

    def _parse(self, data: bytes) -> list[Event]:
        if not data:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE_BYTES:
            self._partial = b""
            if not self._discarding:
                self.lines_too_long += 1
            self._discarding = True
        events: list[Event] = []
        for raw in lines:
            if self._discarding:
                # The tail of an over-long line: skip up to and including its newline.
                self._discarding = False
                continue
            if len(raw) > MAX_LINE_BYTES:
                self.lines_too_long += 1
                continue
            self._lineno += 1
            self.lines_read += 1
            events.extend(self._parser.feed(raw.decode("utf-8", "replace"), self._lineno))
        if not events:
            return events
        offset = self._wall_clock_offset()
        return [
            dataclasses.replace(ev, time=ev.time + offset) if ev.time is not None else ev
            for ev in events
        ]

    def _wall_clock_offset(self) -> float:
        """Seconds to add to a trace timestamp to get epoch seconds.

        With the `boot`/`mono` clock on the live machine this is exact: CLOCK_REALTIME minus the
        same POSIX clock, sampled now (so NTP steps since boot are honoured). Otherwise (the
        `local` clock, or a fake root whose "kernel" is the test) it is the boot time from
        /proc/stat `btime`, which is what dmesg uses too.
        """
        if self.kfs.is_live:
            for name, clock_id in _EXACT_CLOCKS:
                if name == self._clock:
                    return time.time() - time.clock_gettime(clock_id)
        try:
            for line in self.kfs.read_text("proc/stat").splitlines():
                if line.startswith("btime "):
                    return float(int(line.split()[1]))
        except (KernelFSError, ValueError, IndexError):
            pass
        # No boot time at all: fall back to the boot-relative clock of this machine.
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)

    # -- shutdown ---------------------------------------------------------------------------------

    def _release(self) -> None:
        for fd_name in ("_pipe_fd", "_keepalive_fd"):
            fd = getattr(self, fd_name)
            if fd is not None:
                os.close(fd)
                setattr(self, fd_name, None)
        if self._instance is not None:
            try:
                # On tracefs this removes the whole instance (buffer, enables, files).
                self.kfs.rmdir(self._instance)
            except KernelFSError:
                # Not removable (a fake root's plain directory, or another reader still holds a
                # file): at least stop it collecting events nobody will read.
                for ev in RAS_EVENTS:
                    kpath = f"{self._instance}/events/{ev}/enable"
                    if self.kfs.exists(kpath):
                        with contextlib.suppress(KernelFSError):
                            self.kfs.write_text(kpath, "0")
            self._instance = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)  # releases the flock
            self._dir_fd = None
        # A fresh parser per opening; what the old one counted stays counted.
        self._lost_malformed += self._parser.malformed_lines()
        self._lost_unparsed += self._parser.unparsed_candidates()
        self._first_unparsed = self._first_unparsed or self._parser.first_unparsed()
        self._parser = self._parser_factory()
        self._partial, self._discarding = b"", False
        self.enabled_events = ()
