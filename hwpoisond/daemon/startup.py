"""Start-up: open the store, restore the policy, reconcile with the kernel, derive owed work.

Rule: what is owed is derived from the store alone, once, here: the policy state of the last
checkpoint, the events recorded after it fed again (decide() is deterministic), and every
intent and result in the `actions` table. Each transition is one transaction
(actions/reconcile.py), so a kill at any point of a start leaves a state the next start derives
the same owed work from. Nothing here writes to the kernel: the daemon carries out `owed`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from hwpoisond.actions.offliner import Offliner
from hwpoisond.actions.reconcile import StartupReport, reconcile_at_start
from hwpoisond.core import state as core_state
from hwpoisond.core.model import ActionResult, Decision
from hwpoisond.core.params import PolicyParams
from hwpoisond.core.policy import decide, on_result
from hwpoisond.core.state import PlainStateError, PolicyState, from_plain, new_state
from hwpoisond.daemon.crashpoints import crash_point
from hwpoisond.sources.dedupe import Deduper, has_counterpart
from hwpoisond.store.db import Store, event_from_plain

log = logging.getLogger("hwpoisond")

#: Events fed back per query at start: a long gap since the checkpoint must not load every
#: recorded event into memory at once.
REFEED_BATCH = 5000


@dataclass(frozen=True, slots=True)
class Restored:
    """The policy as the store remembers it, before reconciliation."""

    policy: PolicyState
    #: Id of the last recorded event the policy has seen.
    last_event_id: int
    #: Id of the last event the checkpoint included (later ones were fed again).
    checkpointed_event_id: int
    refed: int


@dataclass(frozen=True, slots=True)
class Started:
    policy: PolicyState
    last_event_id: int
    checkpointed_event_id: int
    report: StartupReport
    #: Pages the store shows retired: an offline decision for one is answered, never written.
    retired_pfns: frozenset[int]


def learn_retired(policy: PolicyState, d: Decision, params: PolicyParams) -> PolicyState:
    """Tell the policy that the page of offline decision `d` is retired."""
    assert d.pfn is not None and d.action is not None
    result = ActionResult(
        pfn=d.pfn, action=d.action, result="offlined", at=d.at, verified=True, attempt=d.attempt
    )
    policy, _ = on_result(policy, result, params)
    return policy


def restore_policy(store: Store, params: PolicyParams, retired_pfns: set[int]) -> Restored:
    """The last checkpoint plus the events recorded after it."""
    policy = new_state()
    checkpointed = 0
    plain = store.checkpoint()
    if plain is not None:
        try:
            policy = from_plain(plain["policy"])
            checkpointed = int(plain.get("last_event_id", 0))
        except (KeyError, TypeError, ValueError, PlainStateError) as e:
            log.error("policy checkpoint unreadable (%s): starting from empty counts", e)
            policy = new_state()
            checkpointed = 0
    last_id = checkpointed
    refed = 0
    while True:
        rows = store.rows(
            "SELECT id, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (last_id, REFEED_BATCH),
        )
        if not rows:
            break
        for row in rows:
            last_id = int(row["id"])
            event = event_from_plain(json.loads(row["data"]))
            if event is None:
                continue
            policy, decisions = decide(policy, event, params)
            refed += 1
            for d in decisions:
                if d.kind == "offline" and d.pfn in retired_pfns:
                    policy = learn_retired(policy, d, params)
    if refed:
        log.info("fed %d events recorded after the last checkpoint back to the policy", refed)
    return Restored(policy, last_id, checkpointed, refed)


def policy_pending(policy: PolicyState) -> list[Decision]:
    """The offline decisions the policy holds as out, with no result yet."""
    return [
        Decision("offline", rec.at, rec.reason, pfn=rec.pfn, action=rec.action, attempt=rec.attempt)
        for rec in core_state.pages_over_threshold(policy)
        if rec.status == "pending" and rec.action is not None
    ]


def start_up(
    store: Store,
    offliner: Offliner,
    params: PolicyParams,
    now: float,
    *,
    reoffline_enabled: bool,
) -> Started:
    """Restore, reconcile and derive owed work; see the module docstring."""
    retired = {p.pfn for p in store.retired_pages()}
    restored = restore_policy(store, params, retired)
    crash_point("startup.restored")
    report = reconcile_at_start(
        store,
        offliner,
        now,
        reoffline_enabled=reoffline_enabled,
        policy_pending=policy_pending(restored.policy),
    )
    crash_point("startup.reconciled")
    policy = restored.policy
    for result in report.results:
        policy, _ = on_result(policy, result, params)
    retired_now = {p.pfn for p in store.retired_pages()}
    pending_by_pfn = {d.pfn: d for d in policy_pending(policy)}
    for pfn in retired_now:
        # Resolved from kpageflags just now: the policy learns the page is retired.
        d = pending_by_pfn.get(pfn)
        if d is not None:
            policy = learn_retired(policy, d, params)
    return Started(
        policy=policy,
        last_event_id=restored.last_event_id,
        checkpointed_event_id=restored.checkpointed_event_id,
        report=report,
        retired_pfns=frozenset(retired_now),
    )


#: How far back recorded events are shown to the deduper at start: the journal can lag tracefs
#: by many seconds in a storm, and a copy read after a restart must still meet its twin.
DEDUPE_SEED_SECONDS = 600.0


def seed_deduper(store: Store, deduper: Deduper, now: float) -> int:
    """Show the deduper the recently recorded events that have a counterpart source, so that the
    journal copy of an error recorded through tracefs before a restart is not counted again.
    Returns how many were shown."""
    rows = store.rows(
        "SELECT data FROM events WHERE received_at >= ? ORDER BY id DESC LIMIT ?",
        (now - DEDUPE_SEED_SECONDS, deduper.max_entries),
    )
    shown = 0
    for row in reversed(rows):
        event = event_from_plain(json.loads(row["data"]))
        if event is not None and has_counterpart(event):
            deduper.remember(event)
            shown += 1
    return shown
