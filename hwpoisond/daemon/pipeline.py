"""One batch of events through the daemon: dedupe → decide → persist intent → act → persist
result.

Rule: sequences the side effects of a step and owns their order (DESIGN.md); it decides nothing
(the core does) and parses nothing. An intent is durable before its sysfs write and its result
after it. When the store cannot write (disk full, a read-only file), the pipeline degrades
instead of crashing: it keeps deciding from memory, holds the batches it could not store in
order (events, intents, the journal cursor), carries out no offline whose intent is not durable,
and writes them all once the store works again; everything held or lost is counted.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hwpoisond.actions.offliner import Offliner, OfflineReport
from hwpoisond.actions.reconcile import Owed, record_report
from hwpoisond.core.model import Decision, Event
from hwpoisond.core.params import PolicyParams
from hwpoisond.core.policy import decide, expire, on_result
from hwpoisond.core.state import PolicyState
from hwpoisond.daemon.crashpoints import crash_point
from hwpoisond.daemon.outcomes import Outcomes
from hwpoisond.daemon.startup import learn_retired
from hwpoisond.sources.dedupe import Deduper
from hwpoisond.store.db import ActionOrigin, Store
from hwpoisond.tally import Tally

log = logging.getLogger("hwpoisond")

JOURNALD_CURSOR = "journald"
_UE = frozenset({"uncorrected", "fatal", "deferred"})
#: Events held in memory while the store cannot write; past this the oldest held events are
#: given up (counted), never their intents.
MAX_HELD_EVENTS = 100_000


@dataclass(slots=True)
class _Batch:
    """What one step must persist, in order."""

    events: list[Event]
    intents: list[Decision]
    origin: ActionOrigin
    cursor: str | None
    at: float


class Pipeline:
    def __init__(
        self,
        store: Store,
        offliner: Offliner,
        params: PolicyParams,
        policy: PolicyState,
        *,
        retired_pfns: set[int],
        outcomes: Outcomes,
        tally: Tally,
        boot_id: str | None,
        last_event_id: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.wall_clock = wall_clock
        self.store = store
        self.offliner = offliner
        self.params = params
        self.policy = policy
        self.retired_pfns = retired_pfns
        self.outcomes = outcomes
        self.tally = tally
        self.boot_id = boot_id
        self.last_event_id = last_event_id
        # Two seconds absorb btime's one-second resolution between trace and journal times.
        self.deduper = Deduper(window_seconds=2.0)
        #: The last store failure while batches are held; None when the store writes.
        self.store_error: str | None = None
        self._held: deque[_Batch] = deque()
        self._held_events = 0
        self._unrecorded: list[tuple[int, OfflineReport]] = []
        self.commit_seconds = 0.0
        self._untracked_logged = False

    # -- entry points -----------------------------------------------------------------------------

    def step(self, events: list[Event], now: float, cursor: str | None = None) -> None:
        """Decide a batch read from a source; `cursor` is the source's position after it."""
        # The same error read through tracefs and the journal is one event (sources/dedupe.py);
        # live sources stamp wall-clock times, and an event without one happened now.
        admitted = [
            ev if ev.time is not None else dataclasses.replace(ev, time=now)
            for ev in events
            if self.deduper.admit(ev)
        ]
        decisions: list[Decision] = []
        for ev in admitted:
            self.policy, ds = decide(self.policy, ev, self.params)
            decisions.extend(ds)
            self.tally.event(ev, now)
            if ev.kind in ("memory_error", "mce") and ev.severity in _UE:
                self.outcomes.uncorrected(ev)
            elif ev.kind == "process_killed":
                self.outcomes.process_killed(ev)
        if self.policy.untracked_events and not self._untracked_logged:
            self._untracked_logged = True
            log.warning(
                "policy state at its bound (%d pages kept, each with work owed or done): "
                "events on new pages are counted in hwpoisond_policy_untracked_events_total, "
                "not decided; set a retired-memory budget or look at this host's memory",
                len(self.policy.pages),
            )
        crash_point("step.decided")
        if admitted or cursor:
            # A batch the deduper emptied still moves the cursor: its copies were counted
            # through the other source, and reading them again after a restart would not be.
            self._hold(_Batch(admitted, self._filter_retired(decisions), "policy", cursor, now))
        self.flush(now)

    def carry_out(self, decisions: list[Decision], now: float, origin: ActionOrigin) -> None:
        """Decisions from outside a step (expire(), retries)."""
        intents = self._filter_retired(decisions)
        if intents:
            self._hold(_Batch([], intents, origin, None, now))
        self.flush(now)

    def carry_out_owed(self, owed: list[Owed], now: float) -> None:
        """Owed offlines derived at start: their intents are already durable."""
        self._act([(o.decision, o.action_id) for o in owed], now)

    def expire(self, now: float) -> None:
        self.policy, decisions = expire(self.policy, now, self.params)
        self.carry_out(list(decisions), now, origin="retry")

    @property
    def held_events(self) -> int:
        return self._held_events

    @property
    def held_batches(self) -> int:
        return len(self._held) + len(self._unrecorded)

    # -- persistence ------------------------------------------------------------------------------

    def _hold(self, batch: _Batch) -> None:
        self._held.append(batch)
        self._held_events += len(batch.events)
        while self._held_events > MAX_HELD_EVENTS:
            oldest = next(b for b in self._held if b.events)
            self.tally.events_unstored += len(oldest.events)
            self._held_events -= len(oldest.events)
            oldest.events = []

    def flush(self, now: float) -> None:
        """Write what is held, in order; act on each batch's intents once they are durable."""
        if self._unrecorded:
            self._record_results(self._unrecorded, [], now)
            if self._unrecorded:
                return
        while self._held:
            batch = self._held[0]
            started = time.monotonic()
            try:
                with self.store.transaction():
                    if batch.events:
                        self.last_event_id = self.store.record_events(batch.events, batch.at)
                    recorded = [
                        (
                            d,
                            self.store.record_intent(
                                d, now, origin=batch.origin, boot_id=self.boot_id
                            ),
                        )
                        for d in batch.intents
                    ]
                    if batch.cursor:
                        self.store.set(JOURNALD_CURSOR, batch.cursor, now)
            except sqlite3.Error as e:
                self._store_failed(e)
                return
            self.commit_seconds = time.monotonic() - started
            self._held.popleft()
            self._held_events -= len(batch.events)
            self._store_ok()
            crash_point("step.intents_recorded")
            self._act(recorded, now)

    def _record_intent(self, d: Decision, now: float, origin: ActionOrigin) -> int:
        return self.store.record_intent(d, now, origin=origin, boot_id=self.boot_id)

    def _store_failed(self, e: sqlite3.Error) -> None:
        self.tally.store_write_failures += 1
        if self.store_error is None:
            log.error(
                "state database write failed (%s): deciding from memory, holding %d events and "
                "their offlines until it works again",
                e,
                self._held_events,
                extra={"message_id": "database_write_failed"},
            )
        self.store_error = str(e)

    def _store_ok(self) -> None:
        if self.store_error is not None and not self._held:
            log.warning("state database writes again: everything held is stored")
            self.store_error = None

    # -- acting -----------------------------------------------------------------------------------

    def _filter_retired(self, decisions: list[Decision]) -> list[Decision]:
        """Offline decisions for pages the store already shows retired are answered from the
        store (the policy learns the page is retired), never written twice."""
        out = []
        for d in decisions:
            if d.kind == "offline" and d.pfn in self.retired_pfns:
                self.policy = learn_retired(self.policy, d, self.params)
            else:
                out.append(d)
        return out

    def _act(self, recorded: list[tuple[Decision, int]], now: float) -> None:
        """Carry out recorded intents: all writes of a batch, then all their results in one
        durable transaction (a crash in between leaves pending intents, which the next start
        resolves through kpageflags). Results may produce new decisions (a hard-offline
        fallback): they are recorded with the results and go the same way."""
        queue = list(recorded)
        while queue:
            batch, queue = queue, []
            reports: list[tuple[Decision, int, OfflineReport]] = []
            for decision, action_id in batch:
                if decision.kind == "escalate":
                    self.outcomes.escalated(decision)
                elif decision.kind == "budget_exhausted":
                    self.outcomes.budget_exhausted(decision)
                elif decision.kind == "offline":
                    report = self.offliner.execute(decision, self.wall_clock())
                    reports.append((decision, action_id, report))
            if not reports:
                continue
            crash_point("act.written")
            follow_ups: list[Decision] = []
            for _decision, _action_id, report in reports:
                self.tally.result(report.result)
                if report.result.result in ("offlined", "already_poisoned"):
                    self.retired_pfns.add(report.result.pfn)
                self.policy, more = on_result(self.policy, report.result, self.params)
                follow_ups.extend(self._filter_retired(list(more)))
            results = [(action_id, report) for _d, action_id, report in reports]
            queue = self._record_results(results, follow_ups, now)
            for decision, _action_id, report in reports:
                self.outcomes.offline(decision, report)
            crash_point("act.results_recorded")

    def _record_results(
        self, results: list[tuple[int, OfflineReport]], follow_ups: list[Decision], now: float
    ) -> list[tuple[Decision, int]]:
        """Results and their follow-up intents in one transaction. On a store failure the
        results are kept to be written later (the kernel side is done; until then a restart
        finds the intents pending and reads the outcome from kpageflags) and the follow-ups
        are held like a step's intents."""
        try:
            with self.store.transaction():
                for action_id, report in results:
                    record_report(self.store, action_id, report, self.boot_id)
                recorded = [(d, self._record_intent(d, now, "policy")) for d in follow_ups]
        except sqlite3.Error as e:
            if results is not self._unrecorded:
                self._unrecorded.extend(results)
            if follow_ups:
                self._hold(_Batch([], follow_ups, "retry", None, now))
            self._store_failed(e)
            return []
        if results is self._unrecorded:
            self._unrecorded = []
        return recorded
