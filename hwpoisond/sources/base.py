"""What every source promises the daemon: a status with a reason, an fd to wait on, events to drain.

Rule: sources read kernel interfaces (through `KernelFS`) and hand over text-derived `Event`s; they
never decide, and a missing interface is a `SourceStatus(available=False, reason=...)`, never an
exception. This module holds the shared contracts only, plus the file-backed `CursorStore` used
until the SQLite store takes over.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hwpoisond.core.model import Event


@dataclass(frozen=True)
class SourceStatus:
    """`available` says whether the source delivers anything right now; `reason` says why not
    (or, when available, what it is reading), in words an operator can act on."""

    name: str
    available: bool
    reason: str


class EventSource(Protocol):
    """A kernel interface that reports errors as they happen.

    Life cycle, driven by the daemon: `open()` once (and again later when it returned unavailable:
    it is cheap and idempotent); register `fileno()` in a selector when it is not None; on
    readiness call `read_events()`, which drains without blocking; `close()` at shutdown. After
    `read_events()` the source may have become unavailable (its fd went away): `fileno()` is then
    None and the daemon unregisters the old fd and retries `open()` on a timer.
    """

    name: str

    def open(self) -> SourceStatus: ...

    def fileno(self) -> int | None: ...

    def read_events(self) -> list[Event]: ...

    def status(self) -> SourceStatus: ...

    def parse_failures(self) -> int:
        """Lines read that could not be used (malformed, too long), since the source began."""
        ...

    def unparsed_candidates(self) -> tuple[int, str | None]:
        """Lines read with a memory-error word that no parser accepted, since the source
        began, and the first of them (None when there is none)."""
        ...

    def close(self) -> None: ...


class LineParserLike(Protocol):
    """The part of `hwpoisond.parse.stream.LineParser` sources use: kernel text line by line in,
    events out (a multi-line record comes out when it is complete, or on `flush()`)."""

    def feed(self, line: str, lineno: int) -> list[Event]: ...

    def flush(self) -> list[Event]: ...

    def record_open(self) -> bool:
        """True while a multi-line record is half read."""
        ...

    def malformed_lines(self) -> int:
        """Lines that looked like a known format and did not parse, so far."""
        ...

    def unparsed_candidates(self) -> int:
        """Lines with a memory-error word that no parser accepted, so far."""
        ...

    def first_unparsed(self) -> str | None:
        """The first such line, if any."""
        ...


class CursorStore(Protocol):
    """Where a source's resume position lives between runs (the journal cursor). The daemon
    persists it after it has recorded the events read up to that position."""

    def get(self, name: str) -> str | None: ...

    def set(self, name: str, value: str) -> None: ...


class FileCursorStore:
    """A `CursorStore` in one small JSON file, replaced atomically (write temp, fsync, rename), so
    a crash leaves either the old or the new cursor and never a torn one."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # A damaged cursor file must not stop the daemon: the journal source then backfills
            # this boot once, and the dedupe/store layers absorb the repeats.
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    def get(self, name: str) -> str | None:
        return self._load().get(name)

    def set(self, name: str, value: str) -> None:
        data = self._load()
        data[name] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".cursors-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
