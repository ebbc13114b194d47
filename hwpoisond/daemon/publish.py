"""Publishing: the metrics snapshot and the status record `hwpoisond status` reads.

Rule: turns what the daemon holds in memory into the two published views (an immutable metrics
snapshot, the store's status meta keys); reads no kernel file and decides nothing.
"""

from __future__ import annotations

import os
from typing import Any

from hwpoisond import __version__
from hwpoisond.core import state as core_state
from hwpoisond.core.params import PolicyParams
from hwpoisond.core.state import PolicyState
from hwpoisond.sources.base import SourceStatus
from hwpoisond.sources.edac import EdacSnapshot
from hwpoisond.sources.memstate import MemoryState
from hwpoisond.store.db import (
    META_BUDGET,
    META_DAEMON,
    META_DIMMS,
    META_KERNEL,
    META_POLICY,
    META_SOURCES,
    Store,
)


def kernel_record(memstate: MemoryState | None, soft_offline_supported: bool) -> dict[str, Any]:
    if memstate is None:
        return {}
    m = memstate
    return {
        "hardware_corrupted_kb": None
        if m.hardware_corrupted_bytes is None
        else m.hardware_corrupted_bytes // 1024,
        "mem_total_bytes": m.mem_total_bytes,
        "sysctls": {
            "vm.memory_failure_early_kill": m.memory_failure_early_kill,
            "vm.memory_failure_recovery": m.memory_failure_recovery,
            "vm.enable_soft_offline": m.enable_soft_offline,
        },
        "cec": {"present": m.cec.present, "threshold": m.cec.action_threshold},
        "soft_offline_supported": soft_offline_supported,
    }


def dimm_records(edac: EdacSnapshot | None) -> list[dict[str, Any]]:
    dimms: list[dict[str, Any]] = []
    if edac is None:
        return dimms
    for c in edac.controllers:
        for d in c.dimms:
            dimms.append(
                {
                    "mc": c.mc,
                    "label": d.label,
                    "location": d.location,
                    "size_mb": d.size_mb,
                    "ce_count": d.ce_count,
                    "ue_count": d.ue_count,
                }
            )
        for row in c.csrows:
            for ch in row.channels:
                dimms.append(
                    {
                        "mc": c.mc,
                        "label": ch.dimm_label,
                        "location": f"csrow {row.csrow} channel {ch.channel}",
                        "size_mb": None,
                        "ce_count": ch.ce_count,
                        "ue_count": None,
                    }
                )
    return dimms


def write_status(
    store: Store,
    now: float,
    *,
    policy: PolicyState,
    params: PolicyParams,
    preset: str | None,
    sources: list[SourceStatus],
    memstate: MemoryState | None,
    edac: EdacSnapshot | None,
    soft_offline_supported: bool,
    started_at: float,
    degraded: dict[str, Any],
) -> None:
    """The status meta keys, in one transaction."""
    budget = core_state.budget_status(policy, params)
    with store.transaction():
        store.set_meta(
            META_SOURCES,
            {
                s.name: {"state": "up" if s.available else "unavailable", "detail": s.reason}
                for s in sources
            },
            now,
        )
        store.set_meta(META_KERNEL, kernel_record(memstate, soft_offline_supported), now)
        store.set_meta(
            META_BUDGET,
            {
                "retired_bytes": budget.retired_bytes,
                "max_retired_bytes": budget.max_retired_bytes,
                "remaining_bytes": budget.remaining_bytes,
                "offlines_last_hour": budget.offlines_last_hour,
                "max_offlines_per_hour": budget.max_offlines_per_hour,
                "exhausted": budget.exhausted,
            },
            now,
        )
        store.set_meta(META_DIMMS, dimm_records(edac), now)
        store.set_meta(
            META_POLICY,
            {
                "preset": preset,
                "action": params.action,
                "ce_threshold": params.ce_threshold,
                "window_seconds": params.window_seconds,
                "max_page_records": params.max_page_records,
                "pages_kept": len(policy.pages),
                "untracked_events": policy.untracked_events,
                "not_offlinable_events": policy.not_offlinable_events,
            },
            now,
        )
        store.set_meta(
            META_DAEMON,
            {
                "pid": os.getpid(),
                "version": __version__,
                "started_at": started_at,
                "updated_at": now,
                **degraded,
            },
            now,
        )
