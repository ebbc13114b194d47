"""Running tallies since daemon start, and the metrics snapshot built from them.

Rule: counts what the loop tells it and assembles immutable `MetricsSnapshot`s; reads no file,
no clock (times are passed in), and decides nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hwpoisond import metrics
from hwpoisond.core import state as core_state
from hwpoisond.core.model import ActionResult, Event
from hwpoisond.core.params import PolicyParams
from hwpoisond.sources.base import SourceStatus
from hwpoisond.sources.edac import EdacSnapshot
from hwpoisond.sources.memstate import MemoryState

_ERROR_SEVERITIES = frozenset({"corrected", "uncorrected", "deferred", "fatal"})


@dataclass
class Tally:
    start_time_seconds: float
    errors_by_source: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors_by_dimm: Counter[tuple[int | None, str | None, str]] = field(default_factory=Counter)
    offline_actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    kernel_recoveries: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Processes the kernel signalled or killed over a poisoned page, by how (sigbus, ...).
    processes_killed: Counter[str] = field(default_factory=Counter)
    escalations_by_dimm: Counter[tuple[int | None, str | None]] = field(default_factory=Counter)
    last_event_by_source: dict[str, float] = field(default_factory=dict)
    database_recoveries: int = 0
    fingerprint_changes: int = 0
    latency: metrics.LatencyHistogram = field(default_factory=metrics.LatencyHistogram)
    events_total: int = 0
    #: Store writes that failed (disk full, read-only database): the batch was held in memory.
    store_write_failures: int = 0
    #: Events given up because the store could not write them for too long (their counts and
    #: offlines were kept).
    events_unstored: int = 0
    #: Trigger scripts by (event, outcome): ok, failed, timed_out, refused, dropped.
    triggers: Counter[tuple[str, str]] = field(default_factory=Counter)

    def trigger(self, event: str, outcome: str) -> None:
        self.triggers[(event, outcome)] += 1

    def event(self, ev: Event, received_at: float) -> None:
        self.events_total += 1
        self.last_event_by_source[ev.source] = received_at
        if ev.kind in ("memory_error", "mce") and ev.severity in _ERROR_SEVERITIES:
            self.errors_by_source[(ev.source, ev.severity)] += ev.count
            if ev.kind == "memory_error":
                self.errors_by_dimm[(ev.mc, ev.label, ev.severity)] += ev.count
        elif ev.kind == "memory_failure":
            self.kernel_recoveries[(_result_word(ev.result), ev.page_type or "unknown")] += 1
        elif ev.kind == "process_killed":
            self.processes_killed[ev.result or "unknown"] += 1

    def result(self, result: ActionResult) -> None:
        self.offline_actions[(result.action, result.result)] += 1

    def escalation(self, mc: int | None, label: str | None) -> None:
        self.escalations_by_dimm[(mc, label)] += 1

    def snapshot(
        self,
        *,
        now: float,
        policy_state: core_state.PolicyState,
        params: PolicyParams,
        sources: list[SourceStatus],
        parse_failures: dict[str, int],
        edac: EdacSnapshot | None,
        memstate: MemoryState | None,
        events_held: int = 0,
        deduplicated: dict[str, int] | None = None,
        unparsed: dict[str, int] | None = None,
    ) -> metrics.MetricsSnapshot:
        """`events_held`: events the pipeline holds in memory while the store cannot write."""
        budget = core_state.budget_status(policy_state, params)
        escalated = {(d.mc, d.label) for d in core_state.escalations(policy_state)}
        dimms = tuple(
            metrics.DimmHealth(
                mc=mc,
                dimm=label,
                escalations=count,
                replacement_recommended=(mc, label) in escalated,
            )
            for (mc, label), count in sorted(
                self.escalations_by_dimm.items(), key=lambda kv: (str(kv[0][0]), str(kv[0][1]))
            )
        )
        return metrics.MetricsSnapshot(
            published_at_seconds=now,
            start_time_seconds=self.start_time_seconds,
            errors_by_source=tuple(
                metrics.SourceErrors(src, sev, n)
                for (src, sev), n in sorted(self.errors_by_source.items())
            ),
            errors_by_dimm=tuple(
                metrics.DimmErrors(mc, label, sev, n)
                for (mc, label, sev), n in sorted(
                    self.errors_by_dimm.items(), key=lambda kv: tuple(map(str, kv[0]))
                )
            ),
            edac=metrics.edac_counts(edac) if edac is not None else (),
            hardware_corrupted_bytes=memstate.hardware_corrupted_bytes if memstate else None,
            node_memory_failure=(
                metrics.node_memory_failure_counts(memstate) if memstate is not None else ()
            ),
            offline_actions=tuple(
                metrics.OfflineActions(action, result, n)
                for (action, result), n in sorted(self.offline_actions.items())
            ),
            kernel_recoveries=tuple(
                metrics.KernelRecoveries(result, page_type, n)
                for (result, page_type), n in sorted(self.kernel_recoveries.items())
            ),
            processes_killed=tuple(sorted(self.processes_killed.items())),
            retired_pages=len(core_state.retired_pages(policy_state)),
            tracked_pages=core_state.tracked_page_count(policy_state),
            policy_untracked_events=policy_state.untracked_events,
            policy_not_offlinable_events=policy_state.not_offlinable_events,
            pages_over_threshold=len(core_state.pages_over_threshold(policy_state)),
            dimms=dimms,
            budget=metrics.Budget(
                used_bytes=budget.retired_bytes,
                limit_bytes=budget.max_retired_bytes or 0,
                offlines_last_hour=budget.offlines_last_hour,
                offlines_per_hour_limit=budget.max_offlines_per_hour or 0,
                exhausted=budget.exhausted,
            ),
            sources=tuple(
                metrics.SourceHealth(
                    source=s.name,
                    available=s.available,
                    up=s.available,
                    parse_failures=parse_failures.get(s.name, 0),
                    last_event_timestamp_seconds=_last_event(self.last_event_by_source, s.name),
                )
                for s in sources
            ),
            kernel_settings=metrics.kernel_settings(memstate) if memstate is not None else None,
            database_corruption_recoveries=self.database_recoveries,
            dimm_fingerprint_changes=self.fingerprint_changes,
            latency=self.latency,
            store_write_failures=self.store_write_failures,
            events_unstored=events_held,
            events_unstored_dropped=self.events_unstored,
            events_deduplicated=tuple(sorted((deduplicated or {}).items())),
            unparsed_candidate_lines=tuple(
                metrics.UnparsedLines(name, n) for name, n in sorted((unparsed or {}).items())
            ),
            triggers=tuple((e, o, n) for (e, o), n in sorted(self.triggers.items())),
        )


#: Which event `source` values each daemon source delivers (for the last-event timestamp).
_SOURCE_EVENTS = {
    "tracefs": ("mc_event", "mce_record", "memory_failure_event", "extlog_mem_event"),
    "journald": (
        "kmsg_edac",
        "kmsg_mce",
        "kmsg_memory_failure",
        "kmsg_soft_offline",
        "kmsg_cec",
        "kmsg_cper",
    ),
}


def _last_event(last: dict[str, float], source_name: str) -> float | None:
    times = [last[s] for s in _SOURCE_EVENTS.get(source_name, ()) if s in last]
    return max(times) if times else None


def _result_word(result: str | None) -> str:
    """memory_failure results ("Recovered", "Ignored", "Failed", "Delayed") as metric labels."""
    if not result:
        return "unknown"
    word = result.strip().lower()
    return word if word in ("recovered", "ignored", "failed", "delayed") else "unknown"
