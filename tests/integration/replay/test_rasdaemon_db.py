"""`parse` and `replay` read rasdaemon's own database, across the schema versions it has used.

The databases are created with the DDL rasdaemon itself issues: ras-record.c ras_mc_create_table
builds "CREATE TABLE IF NOT EXISTS <name> (<field> <type>, ...)" from its db_fields arrays, copied
below as facts for two versions (git tags of github.com/mchehab/rasdaemon): v0.6.0 (no
memory_failure_event table, mce_record without ppin/microcode) and v0.8.5. Rows are bound the way
ras_store_* binds them (timestamps "%Y-%m-%d %H:%M:%S %z", 64-bit registers through
sqlite3_bind_int64, so MCi_STATUS above 2^63 is stored negative). Their values are those of real
captures: the mc_event lines of tests/fixtures/parse/trace_mc_event_v3.5-v6.x.txt, the Debian 12
6.1 guest's machine check and memory_failure (tests/e2e/captures/6.1.0-56-amd64/dmesg.txt).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MC_EVENT_FIELDS = (
    ("id", "INTEGER PRIMARY KEY"), ("timestamp", "TEXT"), ("err_count", "INTEGER"),
    ("err_type", "TEXT"), ("err_msg", "TEXT"), ("label", "TEXT"), ("mc", "INTEGER"),
    ("top_layer", "INTEGER"), ("middle_layer", "INTEGER"), ("lower_layer", "INTEGER"),
    ("address", "INTEGER"), ("grain", "INTEGER"), ("syndrome", "INTEGER"),
    ("driver_detail", "TEXT"),
)  # fmt: skip
MCE_V060 = (
    ("id", "INTEGER PRIMARY KEY"), ("timestamp", "TEXT"), ("mcgcap", "INTEGER"),
    ("mcgstatus", "INTEGER"), ("status", "INTEGER"), ("addr", "INTEGER"), ("misc", "INTEGER"),
    ("ip", "INTEGER"), ("tsc", "INTEGER"), ("walltime", "INTEGER"), ("cpu", "INTEGER"),
    ("cpuid", "INTEGER"), ("apicid", "INTEGER"), ("socketid", "INTEGER"), ("cs", "INTEGER"),
    ("bank", "INTEGER"), ("cpuvendor", "INTEGER"), ("bank_name", "TEXT"), ("error_msg", "TEXT"),
    ("mcgstatus_msg", "TEXT"), ("mcistatus_msg", "TEXT"), ("mcastatus_msg", "TEXT"),
    ("user_action", "TEXT"), ("mc_location", "TEXT"),
)  # fmt: skip
MCE_V085 = (
    *MCE_V060[:10], ("ppin", "INTEGER"), *MCE_V060[10:17], ("microcode", "INTEGER"),
    *MCE_V060[17:],
)  # fmt: skip
MF_FIELDS = (
    ("id", "INTEGER PRIMARY KEY"), ("timestamp", "TEXT"), ("pfn", "TEXT"),
    ("page_type", "TEXT"), ("action_result", "TEXT"),
)  # fmt: skip
SCHEMAS = {
    "v0.6.0": {"mc_event": MC_EVENT_FIELDS, "mce_record": MCE_V060},
    "v0.8.5": {
        "mc_event": MC_EVENT_FIELDS,
        "mce_record": MCE_V085,
        "memory_failure_event": MF_FIELDS,
    },
}

CE = {
    "err_count": 1, "err_type": "Corrected", "err_msg": "memory read error",
    "label": "CPU_SrcID#0_MC#0_Chan#1_DIMM#0", "mc": 0, "top_layer": 1, "middle_layer": 0,
    "lower_layer": -1, "address": 0x12345678, "grain": 32, "syndrome": 0,
    "driver_detail": "err_code:0x0000:0x009f socket:0 imc:0 rank:0 bg:1 ba:2 row:0x1f col:0x8",
}  # fmt: skip
STATUS = 0x9C0000000008009F
MCE = {
    "mcgcap": 0x1000C14, "mcgstatus": 0, "status": STATUS - (1 << 64), "addr": 0x7654000,
    "misc": 0x86, "ip": 0, "tsc": 0x364EEEA5CD, "walltime": 1795737110, "cpu": 0,
    "cpuid": 0x806F8, "apicid": 0, "socketid": 0, "cs": 0, "bank": 7, "cpuvendor": 0,
}  # fmt: skip
MF = {"pfn": "0x3ff1f", "page_type": "free buddy page", "action_result": "Recovered"}


def make_db(path: Path, version: str, rows: list[tuple[str, str, dict[str, Any]]]) -> Path:
    conn = sqlite3.connect(path)
    for table, fields in SCHEMAS[version].items():
        cols = ", ".join(f"{name} {kind}" for name, kind in fields)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
    for table, stamp, values in rows:
        names = ["timestamp", *values]
        conn.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",  # noqa: S608
            [stamp, *values.values()],
        )
    conn.commit()
    conn.close()
    return path


def hwpoisond(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwpoisond", *argv], capture_output=True, text=True, check=False
    )


def test_parse_reads_every_table_in_time_order(tmp_path: Path) -> None:
    db = make_db(
        tmp_path / "ras-mc_event.db",
        "v0.8.5",
        [
            ("memory_failure_event", "2026-11-30 10:00:05 +0100", MF),
            ("mc_event", "2026-11-30 10:00:01 +0100", CE),
            ("mce_record", "2026-11-30 10:00:03 +0100", MCE),
            ("mc_event", "not a time", CE),
        ],
    )
    proc = hwpoisond("parse", "--stats", str(db))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(e["source"], e["kind"], e["pfn"]) for e in events] == [
        ("mc_event", "memory_error", 0x12345),
        ("mce_record", "memory_error", 0x7654),
        ("memory_failure_event", "memory_failure", 0x3FF1F),
    ]
    assert events[0]["time"] == datetime(2026, 11, 30, 9, 0, 1, tzinfo=UTC).timestamp()
    assert events[0]["dram"] == {"socket": 0, "mc": 0, "rank": 0, "bank_group": 1, "bank": 2,
                                 "row": 0x1F, "column": 8}  # fmt: skip
    assert events[1]["status"] == "0x9c0000000008009f"  # read back unsigned
    assert events[2]["result"] == "recovered"
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert stats["events"] == {"mc_event": 1, "mce_record": 1, "memory_failure_event": 1}
    assert stats["malformed"] == {"rasdaemon_mc_event": 1}


def test_replay_of_rasdaemon_history_differs_by_preset_and_reads_old_schemas(
    tmp_path: Path,
) -> None:
    rows = [("mc_event", f"2026-11-30 {h:02d}:00:00 +0000", CE) for h in (1, 5)]
    for version in ("v0.6.0", "v0.8.5"):
        db = make_db(tmp_path / f"{version}.db", version, rows)
        default = hwpoisond("replay", "--json", str(db))
        rasdaemon = hwpoisond("replay", "--json", "--policy", "rasdaemon", str(db))
        assert default.returncode == rasdaemon.returncode == 0, default.stderr
        # Two corrected errors on one page in 4 h: our default retires it; rasdaemon's 50/24h
        # does not, which is what rasdaemon itself did with this history.
        assert json.loads(default.stdout)["pages_offlined"] == [0x12345], version
        assert json.loads(rasdaemon.stdout)["pages_offlined"] == [], version


def test_a_database_that_is_not_rasdaemons_is_refused_with_its_reason(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    for command in ("parse", "replay"):
        proc = hwpoisond(command, str(other))
        assert proc.returncode == 66, proc.stderr
        assert "not a rasdaemon database" in proc.stderr
