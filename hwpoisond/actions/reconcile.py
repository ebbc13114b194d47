"""Start-up reconciliation: what the kernel shows now against what the state database remembers.

Rule: reads kpageflags, boot_id and the memory fingerprint, and moves every offline the store
remembers to its next state in ONE transaction per call; it writes nothing to the kernel. What
is still owed comes back as intents that are already recorded (`Owed`), so a kill at any point
after the commit finds them again in the store: an owed offline lives in the database, never
only in memory. The daemon carries them out through the normal act → result path.

Transitions (all inside one transaction):
- pending intent, page poisoned → result "offlined" (the write happened; never write twice);
- pending intent, page not poisoned → result "interrupted" plus a successor intent, same
  decision: the one that is owed now;
- pending intent, kpageflags unreadable → left pending (nothing is known), reported as
  unverifiable; the next call decides it;
- offline the policy holds as pending with no intent at all, or whose last intent was
  interrupted without a successor → a new intent;
- retired page a reboot put back into use → a re-offline intent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hwpoisond.actions.fingerprint import Fingerprint, read_fingerprint
from hwpoisond.actions.offliner import Offliner, OfflineReport
from hwpoisond.core.model import ActionResult, Decision
from hwpoisond.kernelfs import KernelFS, KernelFSError
from hwpoisond.store.db import (
    META_BOOT_ID,
    META_FINGERPRINT,
    ActionOrigin,
    Store,
)

#: A random UUID per boot (drivers/char/random.c, proc_do_uuid): a different value = a reboot.
BOOT_ID = "proc/sys/kernel/random/boot_id"

#: Results the policy core understands (ActionResult.result); "interrupted" and "recorded" are
#: the store's own.
POLICY_RESULTS = frozenset({"offlined", "already_poisoned", "failed", "unsupported", "accounted"})


def read_boot_id(kfs: KernelFS) -> str | None:
    try:
        text = kfs.read_text(BOOT_ID, 128).strip()
    except KernelFSError:
        return None
    return text or None


@dataclass(frozen=True, slots=True)
class Owed:
    """An offline whose intent is recorded (action `action_id`) and not yet carried out."""

    action_id: int
    decision: Decision
    origin: ActionOrigin


@dataclass(frozen=True, slots=True)
class StartupReport:
    """What reconciliation found and recorded; the daemon logs it, exports metrics and carries
    out `owed` (retries first, then re-offlines, in the order they should run)."""

    boot_id: str | None
    previous_boot_id: str | None
    #: boot_id differs from the one recorded at the previous start.
    rebooted: bool
    #: Pending intents whose page kpageflags shows poisoned: recorded as offlined.
    resolved: tuple[int, ...]
    #: Intents recorded for interrupted offlines and for offlines the policy owes.
    retry: tuple[Owed, ...]
    #: Intents recorded for retired pages that are no longer poisoned (a reboot cleared them).
    reoffline: tuple[Owed, ...]
    #: Pfns whose state could not be read from kpageflags: their intents stay pending, their
    #: retired pages are not offlined again, until a later call can read it.
    unverifiable: tuple[int, ...]
    #: Results already recorded for offlines the policy still holds as pending.
    results: tuple[ActionResult, ...]
    fingerprint: Fingerprint
    previous_fingerprint: dict[str, Any] | None
    #: The memory changed since the pages were retired: the list was archived, nothing offlined.
    fingerprint_changed: bool
    archive_key: str | None
    archived_pages: int

    @property
    def owed(self) -> tuple[Owed, ...]:
        return self.retry + self.reoffline


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def _successor(store: Store, decision: Decision, now: float, boot_id: str | None) -> Owed:
    action_id = store.record_intent(decision, now, origin="retry", boot_id=boot_id)
    return Owed(action_id, decision, "retry")


def resolve_pending(
    store: Store, offliner: Offliner, now: float, boot_id: str | None
) -> tuple[list[int], list[Owed], list[int]]:
    """The pending-intent transitions, inside the caller's transaction: returns (resolved action
    ids, successor intents owed, unverifiable pfns)."""
    resolved: list[int] = []
    owed: list[Owed] = []
    unverifiable: list[int] = []
    for intent in store.pending_intents():
        pfn = intent.decision.pfn
        assert pfn is not None  # offline intents always carry a pfn (record_intent)
        poisoned = offliner.is_poisoned(pfn)
        if poisoned is None:
            unverifiable.append(pfn)
            continue
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
        store.record_result(
            intent.action_id,
            result="interrupted",
            at=now,
            detail="reconciled at start: page not poisoned, intent carried out again",
        )
        owed.append(_successor(store, intent.decision, now, boot_id))
    return resolved, owed, unverifiable


def _policy_owed(
    store: Store, policy_pending: Sequence[Decision], now: float, boot_id: str | None
) -> tuple[list[Owed], list[ActionResult]]:
    """Offlines the policy holds as pending, against the store's last intent for each."""
    owed: list[Owed] = []
    results: list[ActionResult] = []
    for d in policy_pending:
        rows = store.rows(
            "SELECT action, attempt, result, errno, verified, result_at FROM actions"
            " WHERE kind = 'offline' AND pfn = ? AND action = ? AND attempt = ?"
            " ORDER BY id DESC LIMIT 1",
            (d.pfn, d.action, d.attempt),
        )
        row = rows[0] if rows else None
        if row is None or row["result"] == "interrupted":
            # Decided but never recorded (the step failed after decide()), or interrupted with
            # no successor (a database written by an older hwpoisond): owed now.
            owed.append(_successor(store, d, now, boot_id))
        elif row["result"] in POLICY_RESULTS:
            assert d.pfn is not None and d.action is not None
            results.append(
                ActionResult(
                    pfn=d.pfn,
                    action=d.action,
                    result=row["result"],
                    at=float(row["result_at"]),
                    errno=row["errno"],
                    verified=None if row["verified"] is None else bool(row["verified"]),
                    attempt=int(row["attempt"]),
                )
            )
        # result NULL: a pending intent that resolve_pending() left alone (unverifiable).
    return owed, results


def reconcile_at_start(
    store: Store,
    offliner: Offliner,
    now: float,
    *,
    reoffline_enabled: bool = True,
    fingerprint: Fingerprint | None = None,
    policy_pending: Sequence[Decision] = (),
) -> StartupReport:
    """Resolve pending intents, detect a reboot and a memory change, and record every offline
    still owed, all in one transaction.

    `now` is wall-clock seconds. `fingerprint` defaults to the one read through the offliner's
    KernelFS. `policy_pending` are the offline decisions the restored policy holds as pending.
    """
    kfs = offliner.kfs
    boot_id = read_boot_id(kfs)
    current = fingerprint or read_fingerprint(kfs)
    previous_boot_id = store.get_meta(META_BOOT_ID)
    previous_fp = store.get_meta(META_FINGERPRINT)
    rebooted = previous_boot_id is not None and boot_id is not None and previous_boot_id != boot_id
    changed = isinstance(previous_fp, dict) and previous_fp.get("digest") != current.digest

    reoffline: list[Owed] = []
    archive_key: str | None = None
    archived = 0

    with store.transaction():
        resolved, retry, unverifiable = resolve_pending(store, offliner, now, boot_id)
        policy_retry, results = _policy_owed(store, policy_pending, now, boot_id)
        retry.extend(policy_retry)
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
                    decision = Decision(
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
                    action_id = store.record_intent(decision, now, origin="reboot", boot_id=boot_id)
                    reoffline.append(Owed(action_id, decision, "reboot"))
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
        results=tuple(results),
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


def carry_out_owed(
    store: Store,
    offliner: Offliner,
    owed: Iterable[Owed],
    now: float,
    *,
    boot_id: str | None = None,
) -> list[OfflineReport]:
    """Write each owed offline (its intent is already durable), then record its result."""
    reports = []
    for item in owed:
        report = offliner.execute(item.decision, now)
        record_report(store, item.action_id, report, boot_id)
        reports.append(report)
    return reports


def carry_out(
    store: Store,
    offliner: Offliner,
    decisions: Iterable[Decision],
    now: float,
    *,
    origin: ActionOrigin = "policy",
    boot_id: str | None = None,
) -> list[OfflineReport]:
    """Intent (durable) → sysfs write → result (durable), one decision at a time, for callers
    outside the daemon loop (tests, tools). Non-offline decisions are recorded and skipped."""
    reports = []
    for decision in decisions:
        action_id = store.record_intent(decision, now, origin=origin, boot_id=boot_id)
        if decision.kind != "offline":
            continue
        report = offliner.execute(decision, now)
        record_report(store, action_id, report, boot_id)
        reports.append(report)
    return reports
