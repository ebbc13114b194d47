"""Start-up reconciliation: what the kernel shows now against what the state database remembers.

Rule: runs once at daemon start, before normal processing; reads kpageflags, boot_id and the
memory fingerprint, records what it finds in the store, and returns the offline decisions still
owed (interrupted intents, pages a reboot put back into use). It writes nothing to the kernel:
the daemon carries those decisions out through the normal intent → act → result path.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hwpoisond.actions.fingerprint import Fingerprint, read_fingerprint
from hwpoisond.actions.offliner import Offliner, OfflineReport
from hwpoisond.core.model import Decision
from hwpoisond.kernelfs import KernelFS, KernelFSError
from hwpoisond.store.db import (
    META_BOOT_ID,
    META_FINGERPRINT,
    ActionOrigin,
    Store,
)

#: A random UUID per boot (drivers/char/random.c, proc_do_uuid): a different value = a reboot.
BOOT_ID = "proc/sys/kernel/random/boot_id"


def read_boot_id(kfs: KernelFS) -> str | None:
    try:
        text = kfs.read_text(BOOT_ID, 128).strip()
    except KernelFSError:
        return None
    return text or None


@dataclass(frozen=True, slots=True)
class StartupReport:
    """What reconciliation found; the daemon logs it, exports metrics and carries out
    `retry` then `reoffline` (both already in the order they should run)."""

    boot_id: str | None
    previous_boot_id: str | None
    #: boot_id differs from the one recorded at the previous start.
    rebooted: bool
    #: Pending intents whose page kpageflags shows poisoned: recorded as offlined.
    resolved: tuple[int, ...]
    #: Pending intents whose page is not poisoned: recorded "interrupted", to be carried out again.
    retry: tuple[Decision, ...]
    #: Retired pages that are no longer poisoned (a reboot cleared them), to soft-offline again.
    reoffline: tuple[Decision, ...]
    #: Pfns whose state could not be read from kpageflags: nothing was (re)done for them.
    unverifiable: tuple[int, ...]
    fingerprint: Fingerprint
    previous_fingerprint: dict[str, Any] | None
    #: The memory changed since the pages were retired: the list was archived, nothing offlined.
    fingerprint_changed: bool
    archive_key: str | None
    archived_pages: int


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def reconcile_at_start(
    store: Store,
    offliner: Offliner,
    now: float,
    *,
    reoffline_enabled: bool = True,
    fingerprint: Fingerprint | None = None,
) -> StartupReport:
    """Resolve pending intents, detect a reboot and a memory change, and list the offlines owed.

    `now` is wall-clock seconds. `fingerprint` defaults to the one read through the offliner's
    KernelFS. All store updates happen in one transaction.
    """
    kfs = offliner.kfs
    boot_id = read_boot_id(kfs)
    current = fingerprint or read_fingerprint(kfs)
    previous_boot_id = store.get_meta(META_BOOT_ID)
    previous_fp = store.get_meta(META_FINGERPRINT)
    rebooted = previous_boot_id is not None and boot_id is not None and previous_boot_id != boot_id
    changed = isinstance(previous_fp, dict) and previous_fp.get("digest") != current.digest

    resolved: list[int] = []
    retry: list[Decision] = []
    reoffline: list[Decision] = []
    unverifiable: list[int] = []
    archive_key: str | None = None
    archived = 0

    with store.transaction():
        for intent in store.pending_intents():
            pfn = intent.decision.pfn
            assert pfn is not None  # offline intents always carry a pfn (record_intent)
            poisoned = offliner.is_poisoned(pfn)
            if poisoned:
                # The write happened (or someone else poisoned the page): either way it is
                # retired; writing again would offline it twice.
                store.record_result(
                    intent.action_id,
                    result="offlined",
                    at=now,
                    verified=True,
                    detail="reconciled at start: HWPOISON set in kpageflags",
                    boot_id=boot_id,
                )
                resolved.append(intent.action_id)
                continue
            detail = (
                "reconciled at start: kpageflags unreadable, not retried"
                if poisoned is None
                else "reconciled at start: page not poisoned, intent not carried out"
            )
            store.record_result(intent.action_id, result="interrupted", at=now, detail=detail)
            if poisoned is None:
                unverifiable.append(pfn)
            elif not changed:
                retry.append(intent.decision)

        if changed:
            archive_key, archived = store.archive_retired(
                now,
                {
                    "why": "memory fingerprint changed",
                    "old_fingerprint": previous_fp,
                    "new_fingerprint": current.to_plain(),
                },
            )
        else:
            for page in store.retired_pages():
                poisoned = offliner.is_poisoned(page.pfn)
                if poisoned is None:
                    unverifiable.append(page.pfn)
                elif not poisoned and reoffline_enabled:
                    reoffline.append(
                        Decision(
                            kind="offline",
                            at=now,
                            reason=f"re-offline after reboot (retired {_iso(page.retired_at)}: "
                            f"{page.reason})",
                            pfn=page.pfn,
                            # Soft even when it was hard before: after a reboot the page may
                            # hold anything, and soft offline migrates instead of killing.
                            action="soft",
                            label=page.label,
                        )
                    )
        if boot_id is not None:
            store.set_meta(META_BOOT_ID, boot_id, now)
        store.set_meta(META_FINGERPRINT, current.to_plain(), now)

    return StartupReport(
        boot_id=boot_id,
        previous_boot_id=previous_boot_id,
        rebooted=rebooted,
        resolved=tuple(resolved),
        retry=tuple(retry),
        reoffline=tuple(reoffline),
        unverifiable=tuple(unverifiable),
        fingerprint=current,
        previous_fingerprint=previous_fp if isinstance(previous_fp, dict) else None,
        fingerprint_changed=changed,
        archive_key=archive_key,
        archived_pages=archived,
    )


def record_report(
    store: Store, action_id: int, report: OfflineReport, boot_id: str | None = None
) -> None:
    """Record an executor report as the result of intent `action_id`."""
    r = report.result
    store.record_result(
        action_id,
        result=r.result,
        at=r.at,
        errno=r.errno,
        verified=r.verified,
        hw_corrupted_delta_kb=report.hardware_corrupted_delta_kb,
        detail=report.detail,
        boot_id=boot_id,
    )


def carry_out(
    store: Store,
    offliner: Offliner,
    decisions: Iterable[Decision],
    now: float,
    *,
    origin: ActionOrigin = "policy",
    boot_id: str | None = None,
) -> list[OfflineReport]:
    """Intent (durable) → sysfs write → result (durable), one decision at a time. For the
    start-up lists (`retry`, `reoffline`); within a daemon step the loop batches intents with
    the step's events instead. Non-offline decisions are recorded and skipped."""
    reports = []
    for decision in decisions:
        action_id = store.record_intent(decision, now, origin=origin, boot_id=boot_id)
        if decision.kind != "offline":
            continue
        report = offliner.execute(decision, now)
        record_report(store, action_id, report, boot_id)
        reports.append(report)
    return reports
