"""The state database: one SQLite file in the state directory, the daemon's memory across restarts.

Rule: this module stores and loads; it never decides and never touches a kernel path. Every
write the daemon makes in one step happens in one transaction (`with store.transaction():`), so
an intent is durable before the sysfs write and the result after it. Times are passed in by the
caller (wall-clock seconds); the store reads no clock except to name a corrupt file it moves aside.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hwpoisond.core.model import Decision, DramLocation, Event

DB_FILENAME = "hwpoisond.db"
STATE_DIR_MODE = 0o700
DB_FILE_MODE = 0o600

#: meta keys the daemon writes and `hwpoisond status` reads (values are JSON).
META_CORE_STATE = "core_state"  # to_plain(state) of the policy core
META_FINGERPRINT = "memory_fingerprint"  # Fingerprint.to_plain()
META_BOOT_ID = "boot_id"  # proc/sys/kernel/random/boot_id of the boot that last started
META_SOURCES = "sources"  # {name: {"state": "up"|"down"|"unavailable", "detail": str, "since": t}}
META_KERNEL = (
    "kernel"  # {"sysctls": {...}, "cec": {"present", "threshold"}, "hardware_corrupted_kb"}
)
META_BUDGET = "budget"  # {"retired_bytes", "max_retired_bytes", "offlines_last_hour", ...}
META_DIMMS = "dimms"  # [{"mc", "label", "ce_count", "ue_count", ...}] from EDAC sysfs
META_POLICY = "policy"  # {"ce_threshold", "window_seconds", "action", ...}
META_RECOVERIES = "db_recoveries"  # [{"at", "moved_to", "reason"}]: corrupt databases moved aside
META_LAST_EVENT_AT = "last_event_at"
META_DAEMON = "daemon"  # {"pid", "started_at", "version", "updated_at"}
ARCHIVE_PREFIX = "archive.retired."  # + ISO time: retired pages of memory that was replaced

PageState = Literal[
    "tracked",
    "pending",
    "offlined",
    "already_poisoned",
    "failed",
    "unsupported",
    "accounted",
    "interrupted",
]
ActionOrigin = Literal["policy", "reboot", "retry"]

# Schema migrations, applied in order; PRAGMA user_version is the number applied. Append only.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        received_at REAL NOT NULL,
        time REAL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        severity TEXT,
        count INTEGER NOT NULL,
        pfn INTEGER,
        phys_addr INTEGER,
        mc INTEGER,
        label TEXT,
        data TEXT NOT NULL
    );
    CREATE INDEX events_received_at ON events(received_at);
    CREATE TABLE pages (
        pfn INTEGER PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'tracked',
        ce_count INTEGER NOT NULL DEFAULT 0,
        ue_count INTEGER NOT NULL DEFAULT 0,
        first_seen REAL,
        last_seen REAL,
        phys_addr INTEGER,
        mc INTEGER,
        label TEXT,
        dram TEXT,
        retired_at REAL,
        reason TEXT,
        action TEXT,
        verified INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_errno INTEGER,
        boot_id TEXT
    );
    CREATE TABLE actions (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL,
        pfn INTEGER,
        action TEXT,
        reason TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        label TEXT,
        mc INTEGER,
        decided_at REAL NOT NULL,
        intent_at REAL NOT NULL,
        boot_id TEXT,
        result TEXT,
        errno INTEGER,
        verified INTEGER,
        hw_corrupted_delta_kb INTEGER,
        detail TEXT,
        result_at REAL
    );
    CREATE INDEX actions_pending ON actions(id) WHERE result IS NULL;
    CREATE INDEX actions_pfn ON actions(pfn);
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL
    );
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(Exception):
    """The state database cannot be used (not corruption: permissions, a newer schema, disk)."""


class UnsafeStateDirError(StoreError):
    """The state directory could let someone else swap the daemon's files (a configuration
    problem: restarting cannot fix it)."""


class StoreMissingError(StoreError):
    """No state database exists in the state directory (read-only open)."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long and how many events are kept (config [store] event_retention/event_max_rows)."""

    event_retention_seconds: float = 90 * 86400.0
    event_max_rows: int = 1_000_000
    #: Pages the store keeps with counts only (state 'tracked': never acted on): a storm over a
    #: million pages would otherwise leave a million rows. Pages with an intent or a result are
    #: never pruned; the policy's own counts live in its checkpoint, not in these rows.
    page_max_tracked_rows: int = 200_000


@dataclass(frozen=True, slots=True)
class Recovery:
    """A corrupt database was moved aside at open and a fresh one started."""

    moved_to: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class PendingIntent:
    """An offline intent without a result: the daemon stopped between intent and result."""

    action_id: int
    decision: Decision
    intent_at: float
    boot_id: str | None
    origin: str


@dataclass(frozen=True, slots=True)
class RetiredPage:
    """A page hwpoisond retired (offlined, or found already poisoned) in some earlier boot."""

    pfn: int
    retired_at: float
    reason: str
    action: str
    verified: bool | None
    boot_id: str | None
    label: str | None


#: Field names read one by one: dataclasses.asdict() deep-copies recursively and cost most of a
#: storm step's time (bench/storm.py profile, see BENCHMARKS.md).
_EVENT_SCALARS = tuple(f.name for f in dataclasses.fields(Event) if f.name not in ("dram", "extra"))
_DRAM_FIELDS = tuple(f.name for f in dataclasses.fields(DramLocation))


def _dram_to_plain(dram: DramLocation) -> dict[str, Any]:
    return {k: v for k in _DRAM_FIELDS if (v := getattr(dram, k)) is not None}


def event_to_plain(event: Event) -> dict[str, Any]:
    """The event as JSON-able data (the stored `data` column); None fields are left out."""
    plain = {k: v for k in _EVENT_SCALARS if (v := getattr(event, k)) is not None}
    if event.dram is not None:
        plain["dram"] = _dram_to_plain(event.dram)
    if event.extra:
        plain["extra"] = [list(kv) for kv in event.extra]
    return plain


def event_from_plain(plain: dict[str, Any]) -> Event | None:
    """The inverse of `event_to_plain`; None for data that is not an event (never raises)."""
    try:
        fields = dict(plain)
        # event_to_plain leaves None fields out; severity is the one without a default.
        fields.setdefault("severity", None)
        dram = fields.pop("dram", None)
        extra = fields.pop("extra", [])
        return Event(
            **fields,
            dram=DramLocation(**dram) if dram else None,
            extra=tuple((str(k), str(v)) for k, v in extra),
        )
    except (TypeError, ValueError):
        return None


#: One encoder for every row (json.dumps with arguments builds a new encoder per call).
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


#: SQLite integers are signed 64-bit; a larger value cannot be bound (OverflowError).
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _i64(value: int | None) -> int | None:
    """`value` as an INTEGER column can hold it; None when it cannot (the full value is kept in
    the event's JSON `data`). Parsers bound integers to their kernel types; this keeps a value
    that slipped through from losing the whole batch."""
    if value is None or _I64_MIN <= value <= _I64_MAX:
        return value
    return None


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    name = getattr(e, "sqlite_errorname", "")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        return True
    # Some paths raise without an error code; SQLite's fixed messages for these two codes.
    text = str(e)
    return "malformed" in text or "not a database" in text


def ensure_state_dir(state_dir: Path) -> None:
    """Create the state directory 0700, or accept an existing one only when the daemon's user
    owns it and nobody else can write to it: whoever can write there can plant a link named
    hwpoisond.db and have root open (and chmod) whatever it points to."""
    try:
        state_dir.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
        # stat, not lstat: an administrator's link to a directory root owns is fine; what it
        # leads to is checked.
        st = state_dir.stat()
    except OSError as e:
        raise StoreError(f"state directory {state_dir}: {e.strerror or e}") from e
    euid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeStateDirError(f"state directory {state_dir} is not a directory")
    if st.st_uid != euid:
        raise UnsafeStateDirError(
            f"state directory {state_dir} is owned by uid {st.st_uid}, not by the daemon's uid "
            f"{euid}: refused (its owner could replace the database with a link)"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeStateDirError(
            f"state directory {state_dir} is writable by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}): refused; expected 0700"
        )
    if stat.S_IMODE(st.st_mode) != STATE_DIR_MODE:
        try:
            os.chmod(state_dir, STATE_DIR_MODE)
        except OSError as e:
            raise StoreError(f"state directory {state_dir}: {e.strerror or e}") from e


def _create_private(path: Path) -> None:
    """Create `path` 0600 before SQLite opens it, so the database is never briefly world-readable
    (SQLite gives the -wal and -shm files the database file's mode). Never through a link
    (O_NOFOLLOW), a new file only with O_EXCL, and an existing one only when it is a plain file
    of the daemon's user; the mode is fixed on the descriptor, not the path."""
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, DB_FILE_MODE)
        except FileExistsError:
            fd = os.open(path, flags)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise UnsafeStateDirError(
                    f"database {path} is not a plain file with one link: refused"
                )
            if st.st_uid != os.geteuid():
                raise UnsafeStateDirError(
                    f"database {path} is owned by uid {st.st_uid}, not the daemon's: refused"
                )
            if stat.S_IMODE(st.st_mode) != DB_FILE_MODE:
                os.fchmod(fd, DB_FILE_MODE)
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeStateDirError(f"database {path} is a symbolic link: refused") from e
        raise StoreError(f"database {path}: {e.strerror or e}") from e


class Store:
    """The state database. Open with `Store.open()` (the daemon) or `Store.open_readonly()`
    (status). Also the source `CursorStore` (`get`/`set`)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        readonly: bool,
        retention: Retention,
        recovery: Recovery | None,
        created: bool,
    ) -> None:
        self._conn = conn
        self.path = path
        self.readonly = readonly
        self.retention = retention
        #: Set when a corrupt database was moved aside by this open (log it, count it).
        self.recovery = recovery
        #: True when this open created the database (first start, or after a recovery).
        self.created = created
        self._in_tx = False

    # -- opening ----------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        retention: Retention | None = None,
    ) -> Store:
        """Open (creating or migrating) the database for the daemon.

        A database that fails `PRAGMA quick_check` (or is not a database at all) is renamed to
        `hwpoisond.db.corrupt-<UTC time>` with its -wal/-shm, and a fresh one is started; the
        returned store's `recovery` says so and the fact is kept in meta `db_recoveries`. Any
        other failure (permissions, full disk, a newer schema) raises `StoreError`: moving a
        healthy database aside would lose state, and retrying cannot help.
        """
        retention = retention or Retention()
        directory = Path(state_dir)
        ensure_state_dir(directory)
        path = directory / DB_FILENAME
        existed = path.exists() and path.stat().st_size > 0
        recovery: Recovery | None = None
        try:
            conn = cls._connect_checked(path)
        except sqlite3.DatabaseError as e:
            if not _is_corruption(e):
                raise StoreError(f"database {path}: {e}") from e
            recovery = cls._move_aside(path, str(e))
            existed = False
            try:
                conn = cls._connect_checked(path)
            except sqlite3.DatabaseError as e2:
                raise StoreError(f"fresh database {path}: {e2}") from e2
        store = cls(
            conn,
            path,
            readonly=False,
            retention=retention,
            recovery=recovery,
            created=not existed,
        )
        if recovery is not None:
            history = store.get_meta(META_RECOVERIES) or []
            history.append(
                {"at": recovery.at, "moved_to": recovery.moved_to, "reason": recovery.reason}
            )
            store.set_meta(META_RECOVERIES, history, now=recovery.at)
        return store

    @classmethod
    def _connect_checked(cls, path: Path) -> sqlite3.Connection:
        _create_private(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            row = conn.execute("PRAGMA quick_check").fetchall()
            if [r[0] for r in row] != ["ok"]:
                problems = "; ".join(str(r[0]) for r in row[:3])
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problems}")
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed transaction survives power loss, not just a process crash.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            cls._migrate(conn, path)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _migrate(conn: sqlite3.Connection, path: Path) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {path} has schema {version}, newer than this hwpoisond's "
                f"{SCHEMA_VERSION}; refusing to touch it"
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _move_aside(path: Path, reason: str) -> Recovery:
        now = time.time()
        suffix = ".corrupt-" + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        target = path.with_name(path.name + suffix)
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}{suffix}.{n}")
            n += 1
        try:
            os.rename(path, target)
            for ext in ("-wal", "-shm"):
                side = path.with_name(path.name + ext)
                if side.exists():
                    os.rename(side, target.with_name(target.name + ext))
        except OSError as e:
            raise StoreError(f"cannot move corrupt database {path} aside: {e.strerror}") from e
        return Recovery(moved_to=str(target), reason=reason, at=now)

    @classmethod
    def open_readonly(cls, state_dir: str | os.PathLike[str]) -> Store:
        """Open for reading only (`hwpoisond status`), safe while the daemon writes: WAL readers
        see the last committed transaction and never block the writer."""
        path = Path(state_dir) / DB_FILENAME
        if not path.exists():
            raise StoreMissingError(f"no state database at {path}")
        uri = "file:" + str(path.resolve()).replace("?", "%3f").replace("#", "%23") + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as e:
            raise StoreError(f"database {path}: {e}") from e
        if version == 0:
            conn.close()
            raise StoreMissingError(f"state database {path} is empty (the daemon has not started)")
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"database {path} has schema {version}, newer than {SCHEMA_VERSION}")
        return cls(conn, path, readonly=True, retention=Retention(), recovery=None, created=False)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One daemon step: everything inside commits together (durably: synchronous=FULL) or
        not at all. Not reentrant."""
        if self.readonly:
            raise StoreError("read-only store")
        if self._in_tx:
            raise StoreError("transaction already open")
        self._conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
            # COMMIT itself can fail (SQLITE_FULL when the WAL cannot grow): then the transaction
            # is still open and must be rolled back, or every later BEGIN fails too.
            self._conn.execute("COMMIT")
        except BaseException:
            self._in_tx = False
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        self._in_tx = False

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Inside the caller's transaction if one is open, else in a transaction of its own."""
        if self._in_tx:
            yield self._conn
        else:
            with self.transaction():
                yield self._conn

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        cur = self._conn.cursor()
        cur.row_factory = sqlite3.Row
        return list(cur.execute(sql, params))

    # -- events and pages -------------------------------------------------------------------------

    def record_event(self, event: Event, received_at: float) -> int:
        """Store one event and fold it into its page's counts; returns the event id."""
        return self.record_events([event], received_at)

    def record_events(self, events: list[Event], received_at: float) -> int:
        """Store a step's events and fold them into their pages' counts, in statement batches
        (a corrected-error storm is thousands of events a second); returns the last event id
        (0 when `events` is empty)."""
        if not events:
            return 0
        event_rows = []
        page_rows = []
        for event in events:
            event_rows.append(
                (
                    received_at,
                    event.time,
                    event.kind,
                    event.source,
                    event.severity,
                    _i64(event.count) or 0,
                    _i64(event.pfn),
                    _i64(event.phys_addr),
                    _i64(event.mc),
                    event.label,
                    _dumps(event_to_plain(event)),
                )
            )
            if _i64(event.pfn) is not None and event.kind in ("memory_error", "mce"):
                count = _i64(event.count) or 0
                ce = count if event.severity == "corrected" else 0
                ue = count if event.severity in ("uncorrected", "fatal", "deferred") else 0
                dram = _dumps(_dram_to_plain(event.dram)) if event.dram is not None else None
                page_rows.append(
                    (
                        event.pfn,
                        ce,
                        ue,
                        received_at,
                        received_at,
                        _i64(event.phys_addr),
                        _i64(event.mc),
                        event.label,
                        dram,
                    )
                )
        with self._write() as c:
            c.executemany(
                "INSERT INTO events (received_at, time, kind, source, severity, count, pfn,"
                " phys_addr, mc, label, data) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                event_rows,
            )
            last_id = int(c.execute("SELECT max(id) FROM events").fetchone()[0] or 0)
            c.executemany(
                "INSERT INTO pages (pfn, ce_count, ue_count, first_seen, last_seen,"
                " phys_addr, mc, label, dram) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(pfn) DO UPDATE SET ce_count = ce_count + excluded.ce_count,"
                " ue_count = ue_count + excluded.ue_count, last_seen = excluded.last_seen,"
                " phys_addr = coalesce(excluded.phys_addr, phys_addr),"
                " mc = coalesce(excluded.mc, mc), label = coalesce(excluded.label, label),"
                " dram = coalesce(excluded.dram, dram)",
                page_rows,
            )
            self._set_meta(c, META_LAST_EVENT_AT, received_at, received_at)
        return last_id

    def prune_events(self, now: float) -> int:
        """Apply the retention: drop events older than the age limit, then the oldest beyond
        the row cap. Returns the number deleted. Pages keep their counts."""
        with self._write() as c:
            cutoff = now - self.retention.event_retention_seconds
            deleted = c.execute("DELETE FROM events WHERE received_at < ?", (cutoff,)).rowcount
            row = c.execute(
                "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?",
                (self.retention.event_max_rows,),
            ).fetchone()
            if row is not None:
                deleted += c.execute("DELETE FROM events WHERE id <= ?", (row[0],)).rowcount
        return int(deleted)

    def prune_pages(self, now: float) -> int:
        """Drop count-only pages ('tracked': no intent, no result) idle past the event
        retention, then the least recently seen beyond the row cap. Returns the number
        deleted; a page acted on is never deleted here."""
        with self._write() as c:
            cutoff = now - self.retention.event_retention_seconds
            deleted = c.execute(
                "DELETE FROM pages WHERE state = 'tracked' AND last_seen < ?", (cutoff,)
            ).rowcount
            deleted += c.execute(
                "DELETE FROM pages WHERE pfn IN (SELECT pfn FROM pages WHERE state = 'tracked'"
                " ORDER BY last_seen DESC, pfn DESC LIMIT -1 OFFSET ?)",
                (self.retention.page_max_tracked_rows,),
            ).rowcount
        return int(deleted)

    def event_count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM events").fetchone()[0])

    # -- actions ----------------------------------------------------------------------------------

    def record_intent(
        self,
        decision: Decision,
        at: float,
        *,
        origin: ActionOrigin = "policy",
        boot_id: str | None = None,
    ) -> int:
        """Record a decision before it is carried out; returns the action id for its result.

        Offline decisions become pending until `record_result`; escalations and budget
        exhaustion have no kernel side and are recorded as done ("recorded") at once."""
        with self._write() as c:
            done = decision.kind != "offline"
            cur = c.execute(
                "INSERT INTO actions (kind, origin, pfn, action, reason, attempt, label, mc,"
                " decided_at, intent_at, boot_id, result, result_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    decision.kind,
                    origin,
                    decision.pfn,
                    decision.action,
                    decision.reason,
                    decision.attempt,
                    decision.label,
                    decision.mc,
                    decision.at,
                    at,
                    boot_id,
                    "recorded" if done else None,
                    at if done else None,
                ),
            )
            if decision.kind == "offline" and decision.pfn is not None:
                c.execute(
                    "INSERT INTO pages (pfn, state, first_seen, last_seen, attempts,"
                    " phys_addr, label, mc) VALUES (?, 'pending', ?, ?, 1, ?, ?, ?)"
                    " ON CONFLICT(pfn) DO UPDATE SET state = 'pending', attempts = attempts + 1",
                    (decision.pfn, at, at, decision.pfn << 12, decision.label, decision.mc),
                )
        return int(cur.lastrowid or 0)

    def record_result(
        self,
        action_id: int,
        *,
        result: str,
        at: float,
        errno: int | None = None,
        verified: bool | None = None,
        hw_corrupted_delta_kb: int | None = None,
        detail: str | None = None,
        boot_id: str | None = None,
    ) -> None:
        """Record what an intent came to and update its page (state, retired_at, verified).

        `result` is an ActionResult.result, or "interrupted" for an intent that reconciliation
        found not carried out. Use `record_report` for an executor `OfflineReport`."""
        with self._write() as c:
            row = c.execute(
                "SELECT pfn, reason, action, result FROM actions WHERE id = ?", (action_id,)
            ).fetchone()
            if row is None:
                raise StoreError(f"no action {action_id}")
            pfn, reason, action, previous = row
            if previous is not None:
                raise StoreError(f"action {action_id} already has result {previous!r}")
            c.execute(
                "UPDATE actions SET result = ?, errno = ?, verified = ?, hw_corrupted_delta_kb = ?,"
                " detail = ?, result_at = ? WHERE id = ?",
                (result, errno, verified, hw_corrupted_delta_kb, detail, at, action_id),
            )
            if pfn is None:
                return
            if result in ("offlined", "already_poisoned"):
                c.execute(
                    "UPDATE pages SET state = ?, retired_at = ?, reason = ?, action = ?,"
                    " verified = ?, last_errno = ?, boot_id = ? WHERE pfn = ?",
                    (result, at, reason, action, verified, errno, boot_id, pfn),
                )
            else:
                c.execute(
                    "UPDATE pages SET state = ?, last_errno = ?, reason = ?, action = ?"
                    " WHERE pfn = ?",
                    (result, errno, reason, action, pfn),
                )

    def pending_intents(self) -> list[PendingIntent]:
        rows = self._query(
            "SELECT * FROM actions WHERE result IS NULL AND kind = 'offline' ORDER BY id"
        )
        return [
            PendingIntent(
                action_id=r["id"],
                decision=Decision(
                    kind="offline",
                    at=r["decided_at"],
                    reason=r["reason"],
                    pfn=r["pfn"],
                    action=r["action"],
                    attempt=r["attempt"],
                    label=r["label"],
                    mc=r["mc"],
                ),
                intent_at=r["intent_at"],
                boot_id=r["boot_id"],
                origin=r["origin"],
            )
            for r in rows
        ]

    def retired_pages(self) -> list[RetiredPage]:
        """Pages hwpoisond retired, oldest first (what a reboot puts back into use)."""
        rows = self._query(
            "SELECT * FROM pages WHERE state IN ('offlined', 'already_poisoned')"
            " ORDER BY retired_at,"
            " (SELECT max(a.id) FROM actions a WHERE a.pfn = pages.pfn), pfn"
        )
        return [
            RetiredPage(
                pfn=r["pfn"],
                retired_at=r["retired_at"],
                reason=r["reason"] or "",
                action=r["action"] or "soft",
                verified=None if r["verified"] is None else bool(r["verified"]),
                boot_id=r["boot_id"],
                label=r["label"],
            )
            for r in rows
        ]

    def archive_retired(self, now: float, why: dict[str, Any]) -> tuple[str, int]:
        """Move the retired-page list into meta `archive.retired.<time>` (with `why`, e.g. the
        old and new memory fingerprints) and forget those pages: they belong to memory that is
        no longer installed. Returns (meta key, number of pages)."""
        pages = self.retired_pages()
        key = ARCHIVE_PREFIX + time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        with self._write() as c:
            self._set_meta(
                c,
                key,
                {"archived_at": now, **why, "pages": [dataclasses.asdict(p) for p in pages]},
                now,
            )
            c.executemany("DELETE FROM pages WHERE pfn = ?", [(p.pfn,) for p in pages])
        return key, len(pages)

    # -- cursors (the sources' CursorStore protocol) ----------------------------------------------

    def get(self, name: str) -> str | None:
        row = self._conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, name: str, value: str, now: float | None = None) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at",
                (name, value, now),
            )

    # -- meta -------------------------------------------------------------------------------------

    @staticmethod
    def _set_meta(c: sqlite3.Connection, key: str, value: Any, now: float | None) -> None:
        c.execute(
            "INSERT INTO meta (key, value, updated_at) VALUES (?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
            " updated_at = excluded.updated_at",
            (key, _dumps(value), now),
        )

    def set_meta(self, key: str, value: Any, now: float | None = None) -> None:
        """Store a JSON-able value under `key` (see the META_* keys)."""
        with self._write() as c:
            self._set_meta(c, key, value, now)

    def get_meta(self, key: str) -> Any:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def meta_keys(self, prefix: str = "") -> list[str]:
        rows = self._conn.execute(
            "SELECT key FROM meta WHERE substr(key, 1, ?) = ? ORDER BY key", (len(prefix), prefix)
        ).fetchall()
        return [str(r[0]) for r in rows]

    def set_checkpoint(self, plain_state: dict[str, Any], now: float) -> None:
        """The core's state as `to_plain(state)` returns it; reload with `checkpoint()`."""
        self.set_meta(META_CORE_STATE, plain_state, now)

    def checkpoint(self) -> dict[str, Any] | None:
        value = self.get_meta(META_CORE_STATE)
        return value if isinstance(value, dict) else None

    # -- reading for status -----------------------------------------------------------------------

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Rows of a read query as dicts (status, tests)."""
        return [dict(r) for r in self._query(sql, params)]
