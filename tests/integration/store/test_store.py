"""The state database on real SQLite files in temporary state directories."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from hwpoisond.core.model import Decision, DramLocation, Event
from hwpoisond.store import (
    DB_FILENAME,
    Retention,
    Store,
    StoreError,
    StoreMissingError,
)
from hwpoisond.store.db import META_RECOVERIES, SCHEMA_VERSION

T0 = 1_700_000_000.0


def ce(pfn: int, label: str = "CPU_SrcID#0_MC#0_Chan#1_DIMM#0", count: int = 1) -> Event:
    return Event(
        kind="memory_error",
        source="mc_event",
        severity="corrected",
        count=count,
        phys_addr=pfn << 12 | 0x40,
        pfn=pfn,
        mc=0,
        label=label,
        dram=DramLocation(socket=0, mc=0, channel=1, dimm=0, rank=1, bank=3, row=0x1F2A),
    )


def offline(pfn: int) -> Decision:
    return Decision(kind="offline", at=T0, reason="2 CEs in 24h", pfn=pfn, action="soft")


def test_fresh_store_is_private_wal_full_sync(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Store.open(state) as store:
        assert store.created and store.recovery is None
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE((state / DB_FILENAME).stat().st_mode) == 0o600
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        store.set_meta("x", 1)
        wal = state / (DB_FILENAME + "-wal")
        assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == 0o600
    with Store.open(state) as again:
        assert not again.created
        assert again.get_meta("x") == 1


def test_loose_state_dir_is_tightened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # noqa: S103 - the loose mode is the point of the test
    Store.open(state).close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_events_fold_into_pages(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.record_event(ce(0x1000), T0)
        store.record_event(ce(0x1000, count=3), T0 + 10)
        ue = Event(kind="memory_error", source="mc_event", severity="uncorrected", pfn=0x1000)
        store.record_event(ue, T0 + 20)
        store.record_event(Event(kind="mce", source="mce_record", severity="corrected"), T0 + 30)
        page = store.rows("SELECT * FROM pages WHERE pfn = ?", (0x1000,))[0]
        assert (page["ce_count"], page["ue_count"]) == (4, 1)
        assert (page["first_seen"], page["last_seen"]) == (T0, T0 + 20)
        assert page["label"] == "CPU_SrcID#0_MC#0_Chan#1_DIMM#0"
        assert '"row":7978' in page["dram"]
        assert store.event_count() == 4
        assert store.get_meta("last_event_at") == T0 + 30


def test_retention_by_age_and_row_cap(tmp_path: Path) -> None:
    retention = Retention(event_retention_seconds=100.0, event_max_rows=5)
    with Store.open(tmp_path, retention) as store:
        with store.transaction():
            for i in range(20):
                store.record_event(ce(i), T0 + i * 10)
        # age: received_at < (T0+190) - 100 = T0+90 → events 0..8 go (9 rows), 11 remain;
        # cap: keep the newest 5.
        assert store.prune_events(T0 + 190) == 15
        kept = [r["pfn"] for r in store.rows("SELECT pfn FROM events ORDER BY id")]
        assert kept == [15, 16, 17, 18, 19]
        # pages keep their counts after their events are pruned
        assert store.rows("SELECT count(*) AS n FROM pages")[0]["n"] == 20


def test_count_only_pages_are_pruned_and_pages_acted_on_never(tmp_path: Path) -> None:
    retention = Retention(event_retention_seconds=100.0, page_max_tracked_rows=5)
    with Store.open(tmp_path, retention) as store:
        with store.transaction():
            for i in range(20):
                store.record_event(ce(i), T0 + i * 10)
        # An intent on the oldest page and one in the middle: they stay whatever their age.
        store.record_intent(offline(0), T0)
        store.record_intent(offline(10), T0)
        # age: last_seen < T0+90 -> pages 1..8 go (0 has an intent); cap 5 of the tracked
        # pages 9, 11..19 keeps 15..19.
        assert store.prune_pages(T0 + 190) == 8 + 5
        kept = [r["pfn"] for r in store.rows("SELECT pfn FROM pages ORDER BY pfn")]
        assert kept == [0, 10, 15, 16, 17, 18, 19]


def test_intent_then_result_and_pending(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        a = store.record_intent(offline(0x10), T0, boot_id="b1")
        b = store.record_intent(offline(0x11), T0)
        esc = store.record_intent(
            Decision(kind="escalate", at=T0, reason="64 pages on DIMM", label="DIMM_A1"), T0
        )
        assert [p.action_id for p in store.pending_intents()] == [a, b]
        assert store.rows("SELECT result FROM actions WHERE id = ?", (esc,))[0]["result"] == (
            "recorded"
        )
        store.record_result(a, result="offlined", at=T0 + 1, verified=True, boot_id="b1")
        store.record_result(b, result="failed", at=T0 + 1, errno=16)
        assert store.pending_intents() == []
        with pytest.raises(StoreError):
            store.record_result(a, result="failed", at=T0 + 2)
        retired = store.retired_pages()
        assert [(p.pfn, p.verified, p.boot_id, p.reason) for p in retired] == [
            (0x10, True, "b1", "2 CEs in 24h")
        ]
        states = {r["pfn"]: r["state"] for r in store.rows("SELECT pfn, state FROM pages")}
        assert states == {0x10: "offlined", 0x11: "failed"}


def test_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.record_event(ce(1), T0)
            store.set("journal", "cursor-1")
            raise RuntimeError("crash inside the step")
        assert store.event_count() == 0 and store.get("journal") is None
        with store.transaction():
            store.record_event(ce(1), T0)
            store.set("journal", "cursor-1")
    with Store.open(tmp_path) as reopened:
        assert reopened.event_count() == 1 and reopened.get("journal") == "cursor-1"


def test_cursors(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        assert store.get("tracefs") is None
        store.set("tracefs", "12.5")
        store.set("tracefs", "13.0")
        assert store.get("tracefs") == "13.0"


def test_checkpoint_roundtrip(tmp_path: Path) -> None:
    plain = {"pages": {"4096": [T0, T0 + 1]}, "budget": {"used": 3}}
    with Store.open(tmp_path) as store:
        assert store.checkpoint() is None
        store.set_checkpoint(plain, T0)
    with Store.open(tmp_path) as store:
        assert store.checkpoint() == plain


def test_garbage_database_is_moved_aside(tmp_path: Path) -> None:
    # A file that is not SQLite at all (SQLITE_NOTADB).
    (tmp_path / DB_FILENAME).write_bytes(b"this is not a database\n" * 300)
    with Store.open(tmp_path) as store:
        assert store.recovery is not None and store.created
        moved = Path(store.recovery.moved_to)
        assert moved.name.startswith(DB_FILENAME + ".corrupt-")
        assert moved.read_bytes().startswith(b"this is not a database")
        history = store.get_meta(META_RECOVERIES)
        assert len(history) == 1 and history[0]["moved_to"] == str(moved)
        store.record_event(ce(1), T0)  # the fresh database works
    # and the next start is a normal one, not another recovery (no crash loop)
    with Store.open(tmp_path) as store:
        assert store.recovery is None and store.event_count() == 1


def test_damaged_pages_fail_quick_check_and_are_moved_aside(tmp_path: Path) -> None:
    # A real database whose table b-tree pages are overwritten in the middle: SQLite opens it,
    # quick_check reports the damage.
    with Store.open(tmp_path) as store:
        with store.transaction():
            for i in range(3000):
                store.record_event(ce(i), T0 + i)
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    path = tmp_path / DB_FILENAME
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for offset in range(4096 * 3, size - 4096, 4096 * 7):
            f.seek(offset)
            f.write(b"\xff" * 600)
    with Store.open(tmp_path) as store:
        assert store.recovery is not None
        assert store.event_count() == 0
        assert os.path.exists(store.recovery.moved_to)


def test_newer_schema_is_refused_not_moved(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / DB_FILENAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store.open(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name] == []


def test_readonly_open(tmp_path: Path) -> None:
    with pytest.raises(StoreMissingError):
        Store.open_readonly(tmp_path / "nothing")
    writer = Store.open(tmp_path)
    writer.record_event(ce(7), T0)
    reader = Store.open_readonly(tmp_path)
    assert reader.readonly and reader.event_count() == 1
    # The daemon holds a write transaction open: the reader still sees the last commit.
    with writer.transaction():
        writer.record_event(ce(8), T0 + 1)
        assert reader.event_count() == 1
    assert reader.event_count() == 2
    with pytest.raises(StoreError):
        reader.set_meta("x", 1)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader._conn.execute("INSERT INTO meta (key, value) VALUES ('y', '1')")
    reader.close()
    writer.close()


def test_readonly_open_after_daemon_exit(tmp_path: Path) -> None:
    # The daemon stopped cleanly (-wal/-shm removed at last close): status still reads.
    with Store.open(tmp_path) as store:
        store.set_meta("budget", {"used": 1})
    assert not (tmp_path / (DB_FILENAME + "-wal")).exists()
    with Store.open_readonly(tmp_path) as reader:
        assert reader.get_meta("budget") == {"used": 1}
