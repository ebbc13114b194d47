"""The journald source: this boot's kernel messages from the systemd journal, resumable by cursor.

Rule: reads the journal (systemd-python `journal.Reader`) of the root `KernelFS` names, never
blocks (the daemon selects on the reader's inotify fd), hands MESSAGE lines to the same
`LineParser` the other sources use, and reports a missing journal as unavailable.

Position: `cursor` is the journal cursor of the last entry whose events have been returned. The
daemon persists it (`CursorStore`, key `CURSOR_KEY`) after recording those events and passes it
back to the constructor on the next start, so a restart neither loses nor repeats events. Without
a cursor, or with one from an earlier boot, the source backfills: it reads this boot's kernel
messages from the start, once.

A machine-check record spans several kernel lines (several entries). The parser closes a record
when its last line arrives; whatever is still open when the reader has caught up is flushed, so
the cursor never sits inside a half-read record. (The kernel prints a record's lines in one go, so
journald almost always stores them together.)
"""

from __future__ import annotations

import dataclasses
import importlib
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from hwpoisond.core.model import Event
from hwpoisond.kernelfs import KernelFS, KernelFSError
from hwpoisond.parse.stream import live_parser
from hwpoisond.sources.base import LineParserLike, SourceStatus

CURSOR_KEY = "journald"
JOURNAL_DIRS = ("var/log/journal", "run/log/journal")
BOOT_ID_PATH = "proc/sys/kernel/random/boot_id"

#: journald reads /dev/kmsg some time after the kernel printed; at boot it ingests the whole ring
#: buffer seconds late. A correction larger than this is not believed.
MAX_INGEST_LAG_SECONDS = 24 * 3600.0
#: Entries read per `read_events()` call. A first start backfills the whole boot (hundreds of
#: thousands of entries on a long-running host): read in one go, that was one transaction of
#: 25 s and 500 MiB before READY (issue 19). Bounded, each call is one modest batch and the
#: daemon comes back for more (`more_pending`) between its other work.
MAX_ENTRIES_PER_READ = 2000
#: A machine-check record is never split across calls; past this many extra entries a record
#: that is still open is a broken one and is flushed as it stands.
MAX_EXTRA_ENTRIES_FOR_RECORD = 256
#: How many recent lines keep their entry time, so an event that started a few lines back (a
#: multi-line machine-check record) gets the time of its first line.
LINE_TIMES_KEPT = 256


def entry_time(entry: dict[str, Any]) -> float | None:
    """Epoch seconds at which the kernel logged the entry.

    `__REALTIME_TIMESTAMP` is when journald stored the entry; for kernel messages
    `_SOURCE_MONOTONIC_TIMESTAMP` is the kernel's own printk time and `__MONOTONIC_TIMESTAMP` the
    monotonic time of storing, so their difference is journald's ingestion lag, which we take off.
    That puts journal times on the same footing as trace timestamps (both then say when the
    kernel reported the error), which is what cross-source dedupe compares.
    """
    realtime = entry.get("__REALTIME_TIMESTAMP")
    if not isinstance(realtime, datetime):
        return None
    t = realtime.timestamp()
    monotonic = entry.get("__MONOTONIC_TIMESTAMP")
    source = entry.get("_SOURCE_MONOTONIC_TIMESTAMP")
    stored = getattr(monotonic, "timestamp", None)
    if isinstance(stored, timedelta) and isinstance(source, timedelta):
        lag = (stored - source).total_seconds()
        if 0.0 <= lag <= MAX_INGEST_LAG_SECONDS:
            t -= lag
    return t


def cursor_boot_id(cursor: str) -> str | None:
    """The `b=` (boot id, 32 hex digits) field of a journal cursor."""
    for part in cursor.split(";"):
        if part.startswith("b="):
            return part[2:].lower()
    return None


def _message_lines(entry: dict[str, Any]) -> list[str]:
    message = entry.get("MESSAGE")
    if isinstance(message, bytes):  # systemd-python hands over undecodable text as bytes
        message = message.decode("utf-8", "replace")
    if not isinstance(message, str):
        return []
    return message.split("\n")


class JournaldSource:
    """Kernel-transport entries of this boot, live and (on first start) backfilled."""

    name = "journald"

    def __init__(
        self,
        kfs: KernelFS,
        cursor: str | None = None,
        *,
        backfill: bool = True,
        parser_factory: Callable[[], LineParserLike] = live_parser,
    ) -> None:
        self.kfs = kfs
        self.cursor = cursor
        #: Without a cursor: read this boot's messages from its start (True) or only new ones.
        self.backfill = backfill
        self._parser_factory = parser_factory
        self._parser = parser_factory()
        self._lost_malformed = 0
        self._lost_unparsed = 0
        self._first_unparsed: str | None = None
        self._reader: Any = None
        self._fd: int | None = None
        self._status = SourceStatus(self.name, False, "not opened yet")
        self._lineno = 0
        self._line_times: dict[int, float | None] = {}
        self._first_entry: dict[str, Any] | None = None
        self.entries_read = 0
        #: The last read stopped at MAX_ENTRIES_PER_READ with entries still waiting: read again
        #: without waiting for the fd (it will not wake for entries already stored).
        self.more_pending = False

    # -- protocol ---------------------------------------------------------------------------------

    def status(self) -> SourceStatus:
        return self._status

    def fileno(self) -> int | None:
        return self._fd

    def open(self) -> SourceStatus:
        if self._reader is not None:
            return self._status
        self._status = self._open()
        return self._status

    def read_events(self) -> list[Event]:
        if self._reader is None:
            return []
        events: list[Event] = []
        self.more_pending = False
        entries = 0
        try:
            # Acknowledge the wake-up (re-arms the inotify fd, picks up new/rotated files).
            self._reader.process()
            if self._first_entry is not None:
                entry, self._first_entry = self._first_entry, None
                events.extend(self._feed_entry(entry))
                entries += 1
            while not self._batch_full(entries):
                entry = self._reader.get_next()
                if not entry:
                    break
                events.extend(self._feed_entry(entry))
                entries += 1
            else:
                self.more_pending = True
        except OSError as e:
            self._drop_reader()
            self._status = SourceStatus(self.name, False, f"reading the journal failed: {e}")
            self.more_pending = False
        # Caught up, or stopped at the bound between records (`_batch_full`): a record still
        # open has seen every line journald has stored for it, or is broken.
        events.extend(self._timed(self._parser.flush()))
        return events

    def _batch_full(self, entries: int) -> bool:
        if entries < MAX_ENTRIES_PER_READ:
            return False
        # At the bound, but never inside a multi-line record (its cursor would split it).
        return (
            not self._parser.record_open()
            or entries >= MAX_ENTRIES_PER_READ + MAX_EXTRA_ENTRIES_FOR_RECORD
        )

    def parse_failures(self) -> int:
        return self._parser.malformed_lines() + self._lost_malformed

    def unparsed_candidates(self) -> tuple[int, str | None]:
        first = self._first_unparsed or self._parser.first_unparsed()
        return self._parser.unparsed_candidates() + self._lost_unparsed, first

    def close(self) -> None:
        self._drop_reader()
        self._status = SourceStatus(self.name, False, "closed")

    # -- internals --------------------------------------------------------------------------------

    def _open(self) -> SourceStatus:
        try:
            # Imported here: a machine without libsystemd still runs the other sources.
            journal: Any = importlib.import_module("systemd.journal")
        except ImportError:
            return SourceStatus(self.name, False, "systemd-python is not installed")
        if not any(self.kfs.is_dir(d) for d in JOURNAL_DIRS):
            return SourceStatus(
                self.name,
                False,
                f"no systemd journal under {self.kfs.root} ({' and '.join(JOURNAL_DIRS)} absent)",
            )
        try:
            boot_id = uuid.UUID(self.kfs.read_text(BOOT_ID_PATH).strip())
        except (KernelFSError, ValueError) as e:
            return SourceStatus(self.name, False, f"cannot tell this boot's id: {e}")
        try:
            # OS_ROOT: the path is the root of an OS tree; its var/log/journal and run/log/journal
            # are read, so a fake root with journal files behaves like the live machine.
            reader = journal.Reader(path=str(self.kfs.root), flags=journal.OS_ROOT)
            # Take the fd before reading, so changes from here on wake it (sd_journal_get_fd(3)).
            fd = int(reader.fileno())
            reader.add_match(_TRANSPORT="kernel")
            reader.this_boot(boot_id)
        except OSError as e:
            return SourceStatus(self.name, False, f"cannot open the journal: {e}")
        how = self._position(reader, boot_id.hex)
        self._reader, self._fd = reader, fd
        return SourceStatus(self.name, True, f"kernel messages of boot {boot_id.hex}; {how}")

    def _position(self, reader: Any, boot_hex: str) -> str:
        if self.cursor is None and not self.backfill:
            # sd_journal_seek_tail(3): the next entry read is the first one after the current
            # last; stepping back once makes the reader stand on that last entry.
            reader.seek_tail()
            reader.get_previous()
            return "no cursor, backfill off: reading new messages only"
        if self.cursor is None:
            reader.seek_head()
            return "no cursor: backfilling this boot from its start"
        if cursor_boot_id(self.cursor) != boot_hex:
            reader.seek_head()
            return "cursor is from an earlier boot: reading this boot from its start"
        reader.seek_cursor(self.cursor)
        entry = reader.get_next()
        if entry and not reader.test_cursor(self.cursor):
            # The cursor's own entry is gone (vacuumed): we stand on the first entry after it,
            # which has not been read yet; read_events() starts with it.
            self._first_entry = entry
            return "saved cursor's entry is gone: resuming at the next entry"
        return "resuming after the saved cursor"

    def _feed_entry(self, entry: dict[str, Any]) -> list[Event]:
        self.entries_read += 1
        when = entry_time(entry)
        events: list[Event] = []
        for line in _message_lines(entry):
            self._lineno += 1
            self._line_times[self._lineno] = when
            events.extend(self._parser.feed(line, self._lineno))
        while len(self._line_times) > LINE_TIMES_KEPT:
            del self._line_times[next(iter(self._line_times))]
        cursor = entry.get("__CURSOR")
        if isinstance(cursor, str):
            self.cursor = cursor
        return self._timed(events)

    def _timed(self, events: list[Event]) -> list[Event]:
        """Give each event the wall-clock time of the entry its first line came from."""
        return [
            dataclasses.replace(ev, time=self._line_times.get(ev.line or -1, ev.time))
            for ev in events
        ]

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader, self._fd, self._first_entry = None, None, None
        # A fresh parser per opening; what the old one counted stays counted.
        self._lost_malformed += self._parser.malformed_lines()
        self._lost_unparsed += self._parser.unparsed_candidates()
        self._first_unparsed = self._first_unparsed or self._parser.first_unparsed()
        self._parser = self._parser_factory()
