"""What `hwpoisond status` shows, gathered from the state database alone.

Rule: reads a (read-only) Store and returns plain JSON-able data; never touches the kernel,
never writes, renders nothing.
"""

from __future__ import annotations

import errno as errno_mod
from typing import Any

from hwpoisond.store.db import (
    ARCHIVE_PREFIX,
    META_BUDGET,
    META_DAEMON,
    META_DIMMS,
    META_FINGERPRINT,
    META_KERNEL,
    META_LAST_EVENT_AT,
    META_POLICY,
    META_RECOVERIES,
    META_SOURCES,
    Store,
)

NEAR_THRESHOLD_LIMIT = 20
RECENT_LIMIT = 20


def _errno_name(value: int | None) -> str | None:
    if value is None:
        return None
    return errno_mod.errorcode.get(value, str(value))


def _dimms(store: Store) -> list[dict[str, Any]]:
    """Per-DIMM counts: the EDAC sysfs counters the daemon sampled (authoritative, they survive
    event retention) merged with what the recorded events and pages say per label."""
    by_label: dict[str, dict[str, Any]] = {}
    for row in store.rows(
        "SELECT coalesce(label, '') AS label, min(mc) AS mc,"
        " sum(CASE WHEN severity = 'corrected' THEN count ELSE 0 END) AS ce,"
        " sum(CASE WHEN severity IN ('uncorrected', 'fatal', 'deferred') THEN count ELSE 0 END)"
        " AS ue FROM events WHERE kind = 'memory_error' GROUP BY coalesce(label, '')"
    ):
        by_label[row["label"]] = {
            "label": row["label"] or None,
            "mc": row["mc"],
            "ce_count": None,
            "ue_count": None,
            "events_ce": row["ce"],
            "events_ue": row["ue"],
            "pages_retired": 0,
        }
    for dimm in store.get_meta(META_DIMMS) or []:
        label = str(dimm.get("label") or "")
        entry = by_label.setdefault(
            label,
            {"label": label or None, "mc": dimm.get("mc"), "events_ce": 0, "events_ue": 0},
        )
        entry.update(
            {
                "ce_count": dimm.get("ce_count"),
                "ue_count": dimm.get("ue_count"),
                "pages_retired": 0,
                "location": dimm.get("location"),
                "size_mb": dimm.get("size_mb"),
            }
        )
    for row in store.rows(
        "SELECT coalesce(label, '') AS label, count(*) AS n FROM pages"
        " WHERE state IN ('offlined', 'already_poisoned') GROUP BY coalesce(label, '')"
    ):
        entry = by_label.setdefault(
            row["label"],
            {"label": row["label"] or None, "mc": None, "events_ce": 0, "events_ue": 0},
        )
        entry["pages_retired"] = row["n"]
    for entry in by_label.values():
        entry.setdefault("ce_count", None)
        entry.setdefault("ue_count", None)
        entry.setdefault("pages_retired", 0)
    return sorted(by_label.values(), key=lambda d: (d["mc"] is None, d["mc"], d["label"] or ""))


def collect_status(store: Store) -> dict[str, Any]:
    """Everything status prints, as one JSON-able dict."""
    policy = store.get_meta(META_POLICY) or {}
    threshold = policy.get("ce_threshold")
    near = store.rows(
        "SELECT pfn, ce_count, ue_count, first_seen, last_seen, label, state FROM pages"
        " WHERE state NOT IN ('offlined', 'already_poisoned', 'pending') AND ce_count > 0"
        " ORDER BY ce_count DESC, last_seen DESC LIMIT ?",
        (NEAR_THRESHOLD_LIMIT,),
    )
    retired = store.rows(
        "SELECT pfn, phys_addr, retired_at, reason, action, state AS result, verified, label,"
        " ce_count, ue_count, boot_id FROM pages WHERE state IN ('offlined', 'already_poisoned')"
        " ORDER BY retired_at DESC, pfn"
    )
    for r in retired:
        r["verified"] = None if r["verified"] is None else bool(r["verified"])
    failures = store.rows(
        "SELECT id, pfn, action, reason, attempt, result, errno, detail, result_at AS at"
        " FROM actions WHERE kind = 'offline'"
        " AND result IN ('failed', 'unsupported', 'interrupted')"
        " ORDER BY id DESC LIMIT ?",
        (RECENT_LIMIT,),
    )
    for f in failures:
        f["errno_name"] = _errno_name(f["errno"])
    escalations = store.rows(
        "SELECT id, kind, label, mc, reason, decided_at AS at FROM actions"
        " WHERE kind IN ('escalate', 'budget_exhausted') ORDER BY id DESC LIMIT ?",
        (RECENT_LIMIT,),
    )
    pending = store.rows(
        "SELECT id, pfn, action, reason, intent_at FROM actions"
        " WHERE kind = 'offline' AND result IS NULL ORDER BY id"
    )
    archives = []
    for key in store.meta_keys(ARCHIVE_PREFIX):
        archive = store.get_meta(key) or {}
        archives.append(
            {
                "key": key,
                "archived_at": archive.get("archived_at"),
                "pages": len(archive.get("pages", [])),
                "why": archive.get("why"),
            }
        )
    kernel = store.get_meta(META_KERNEL) or {}
    return {
        "database": str(store.path),
        "daemon": store.get_meta(META_DAEMON),
        "last_event_at": store.get_meta(META_LAST_EVENT_AT),
        "events_stored": store.event_count(),
        "hardware_corrupted_kb": kernel.get("hardware_corrupted_kb"),
        "kernel": kernel,
        "sources": store.get_meta(META_SOURCES) or {},
        "budget": store.get_meta(META_BUDGET),
        "policy": policy,
        "dimms": _dimms(store),
        "near_threshold": [dict(r, threshold=threshold) for r in near],
        "retired": retired,
        "pending": pending,
        "failures": failures,
        "escalations": escalations,
        "memory_fingerprint": store.get_meta(META_FINGERPRINT),
        "archives": archives,
        "db_recoveries": store.get_meta(META_RECOVERIES) or [],
    }
