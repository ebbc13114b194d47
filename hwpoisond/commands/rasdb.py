"""Reads rasdaemon's SQLite database (ras-mc_event.db) for `parse` and `replay`.

Rule: the only I/O is a read-only SQLite connection; rows become Events in parse/rasdaemon.py.
The file is opened read-only (`mode=ro`), and `immutable=1` when the first attempt fails (a
copy on a read-only medium), so a running rasdaemon is never disturbed. Tables rasdaemon did
not create (no memory_failure_event before v0.6.8) are skipped; columns a version lacks read as
missing. Rows that do not convert are counted, never dropped silently.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from hwpoisond.core.model import Event
from hwpoisond.parse.rasdaemon import ROW_PARSERS, TABLES

SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite(path: str) -> bool:
    """True when `path` is an SQLite database file (its 16-byte header)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


class RasdaemonDbError(Exception):
    """The file is SQLite but not a database rasdaemon wrote."""


@dataclass
class RasdaemonDb:
    """Events of one rasdaemon database in time order, and what could not be read."""

    events: list[Event] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    first_malformed: str | None = None


def _connect(path: str) -> sqlite3.Connection:
    uri = Path(path).resolve().as_uri()
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.Error:
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def read_rasdaemon_db(path: str) -> RasdaemonDb:
    """Every mc_event, mce_record and memory_failure_event row of `path` as Events, merged by
    time (then table, then row id). Raises RasdaemonDbError when none of the tables exists and
    sqlite3.Error when the file cannot be read."""
    conn = _connect(path)
    try:
        conn.row_factory = sqlite3.Row
        present = {
            r["name"] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        tables = [t for t in TABLES if t in present]
        if not tables:
            raise RasdaemonDbError(
                f"no {', '.join(TABLES)} table: not a rasdaemon database (ras-mc_event.db)"
            )
        out = RasdaemonDb()
        keyed: list[tuple[float, int, int, Event]] = []
        for order, table in enumerate(tables):
            convert = ROW_PARSERS[table]
            count = 0
            # The table name comes from TABLES, never from the file.
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY id"):  # noqa: S608
                count += 1
                values = dict(row)
                event = convert(values)
                if event is None or event.time is None:
                    out.malformed[table] = out.malformed.get(table, 0) + 1
                    if out.first_malformed is None:
                        out.first_malformed = f"{table} row {values.get('id')}: {values}"[:300]
                    continue
                row_id = values.get("id")
                keyed.append((event.time, order, row_id if isinstance(row_id, int) else 0, event))
            out.rows[table] = count
        keyed.sort(key=lambda k: k[:3])
        out.events = [k[3] for k in keyed]
        return out
    finally:
        conn.close()
