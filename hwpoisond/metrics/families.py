"""What a scrape shows: the snapshot's metric families, in exposition order, part by part.

Rule: a pure function of the snapshot (no I/O, no clock): each part takes the snapshot fields it
shows as its inputs, so equal inputs always give equal families, which lets the exposition reuse
a part's text while its inputs are unchanged. Label cardinality is bounded by hardware (sources,
controllers, DIMMs, NUMA nodes), never by pages.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.registry import Collector

from hwpoisond import __version__
from hwpoisond.core.model import PAGE_SIZE_BYTES
from hwpoisond.metrics.builders import (
    Family,
    counter,
    gauge,
    histogram,
    info,
    label,
    scalar,
    scalar_counter,
)
from hwpoisond.metrics.kernel_families import edac_families, kernel_families, settings_families
from hwpoisond.metrics.snapshot import (
    Budget,
    DimmErrors,
    DimmHealth,
    EndpointHealth,
    LatencyHistogram,
    MetricsSnapshot,
    OfflineActions,
    SourceErrors,
    SourceHealth,
    UnparsedLines,
)


def _build_families() -> Iterator[Family]:
    yield info(
        "build",
        "hwpoisond build information.",
        [(("version", __version__), ("python_version", platform.python_version()))],
    )


def _clock_families(
    start_time_seconds: float | None, published_at_seconds: float | None
) -> Iterator[Family]:
    if start_time_seconds is not None:
        yield scalar(
            "start_time_seconds",
            "When the daemon started, seconds since the Unix epoch.",
            start_time_seconds,
        )
    if published_at_seconds is not None:
        yield scalar(
            "snapshot_timestamp_seconds",
            "When the daemon loop last published these metrics (seconds since the Unix epoch); "
            "a stale value means a stalled loop.",
            published_at_seconds,
        )


def _error_families(
    errors_by_source: tuple[SourceErrors, ...], errors_by_dimm: tuple[DimmErrors, ...]
) -> Iterator[Family]:
    yield counter(
        "memory_errors",
        "Memory errors seen, by the kernel interface that reported them and error severity.",
        # Not `severity`: Alertmanager routes on that label, and an alert built on these series
        # would carry the error's severity ("corrected") where the alert's belongs.
        ("source", "error_severity"),
        (((label(e.source), label(e.severity)), e.count) for e in errors_by_source),
    )
    yield counter(
        "dimm_memory_errors",
        "Memory errors seen, by memory controller and DIMM label.",
        ("mc", "dimm", "error_severity"),
        (((label(e.mc), label(e.dimm), label(e.severity)), e.count) for e in errors_by_dimm),
    )


def _action_families(
    offline_actions: tuple[OfflineActions, ...],
    retired_pages: int,
    tracked_pages: int,
    pages_over_threshold: int,
    dimms: tuple[DimmHealth, ...],
) -> Iterator[Family]:
    yield counter(
        "offline_actions",
        "Page offline attempts by hwpoisond, by action and result.",
        ("action", "result"),
        (((label(a.action), label(a.result)), a.count) for a in offline_actions),
    )
    yield scalar("retired_pages", "Pages hwpoisond has retired this boot.", retired_pages)
    yield scalar(
        "retired_bytes",
        "Memory hwpoisond has retired this boot.",
        retired_pages * PAGE_SIZE_BYTES,
    )
    yield scalar("tracked_pages", "Pages with recent corrected errors under watch.", tracked_pages)
    yield scalar(
        "pages_over_threshold",
        "Tracked pages whose corrected errors reached the policy threshold.",
        pages_over_threshold,
    )
    yield counter(
        "dimm_escalations",
        "Escalations the policy raised for a DIMM (too many bad pages, error storm).",
        ("mc", "dimm"),
        (((label(d.mc), label(d.dimm)), d.escalations) for d in dimms),
    )
    yield gauge(
        "dimm_replacement_recommended",
        "1 while the policy recommends replacing the DIMM.",
        ("mc", "dimm"),
        (((label(d.mc), label(d.dimm)), 1.0 if d.replacement_recommended else 0.0) for d in dimms),
    )


def _budget_families(b: Budget | None) -> Iterator[Family]:
    if b is None:
        return
    yield scalar("budget_used_bytes", "Retirement budget used.", b.used_bytes)
    yield scalar("budget_remaining_bytes", "Retirement budget left.", b.remaining_bytes)
    yield scalar("budget_limit_bytes", "Retirement budget in all.", b.limit_bytes)
    yield scalar(
        "budget_offlines_last_hour",
        "Offline actions in the last rolling hour.",
        b.offlines_last_hour,
    )
    yield scalar(
        "budget_offlines_per_hour_limit",
        "Offline actions allowed per rolling hour.",
        b.offlines_per_hour_limit,
    )
    yield scalar(
        "budget_exhausted",
        "1 when the retirement budget is spent and pages are only accounted.",
        1.0 if b.exhausted else 0.0,
    )


def _source_families(unordered: tuple[SourceHealth, ...]) -> Iterator[Family]:
    sources = sorted(unordered, key=lambda s: s.source)
    yield gauge(
        "source_available",
        "1 when the kernel interface exists on this machine.",
        ("source",),
        (((s.source,), 1.0 if s.available else 0.0) for s in sources),
    )
    yield gauge(
        "source_up",
        "1 when the source is being read without error.",
        ("source",),
        (((s.source,), 1.0 if s.up else 0.0) for s in sources),
    )
    yield counter(
        "parse_failures",
        "Lines from a source that looked like an error report but could not be parsed.",
        ("source",),
        (((s.source,), s.parse_failures) for s in sources),
    )
    yield gauge(
        "last_event_timestamp_seconds",
        "When a source last delivered an event, seconds since the Unix epoch.",
        ("source",),
        (((s.source,), s.last_event_timestamp_seconds) for s in sources),
    )


def _daemon_families(
    database_corruption_recoveries: int, dimm_fingerprint_changes: int
) -> Iterator[Family]:
    yield scalar_counter(
        "database_corruption_recoveries",
        "Times the state database was found corrupt and rebuilt.",
        database_corruption_recoveries,
    )
    yield scalar_counter(
        "dimm_fingerprint_changes",
        "Times the installed DIMMs' fingerprint changed (a DIMM was replaced or moved).",
        dimm_fingerprint_changes,
    )


def _latency_families(latency: LatencyHistogram) -> Iterator[Family]:
    yield histogram(
        "event_decision_latency_seconds",
        "Time from an event's arrival to the policy's decision on it.",
        latency.bounds_seconds,
        latency.counts,
        latency.sum_seconds,
    )


def _store_families(
    store_write_failures: int, events_unstored: int, events_unstored_dropped: int
) -> Iterator[Family]:
    yield scalar_counter(
        "store_write_failures",
        "Writes to the state database that failed (disk full, read-only database); the events "
        "are held in memory and written once it works again.",
        store_write_failures,
    )
    yield scalar(
        "events_unstored",
        "Events held in memory now because the state database does not write.",
        events_unstored,
    )
    yield scalar_counter(
        "events_unstored_dropped",
        "Events given up unstored after the database failed too long (their counts and "
        "offlines were kept).",
        events_unstored_dropped,
    )


def _policy_families(untracked: int, not_offlinable: int) -> Iterator[Family]:
    yield scalar_counter(
        "policy_untracked_events",
        "Events the policy could not track because its state is full (counted, not decided).",
        untracked,
    )
    yield scalar_counter(
        "policy_not_offlinable_events",
        "Corrected errors at page 0 (the driver did not know the address): counted for their "
        "DIMM and controller, no page to offline.",
        not_offlinable,
    )


def _parse_families(unparsed: tuple[UnparsedLines, ...]) -> Iterator[Family]:
    yield counter(
        "parse_candidate_lines_unparsed",
        "Lines about memory errors (EDAC, Hardware Error, Machine Check, Memory failure, soft "
        "offline, mce:, RAS:) that no parser understood, by daemon source: not acted on.",
        ("source",),
        (((label(u.source),), u.count) for u in unparsed),
    )


def _dedupe_families(deduplicated: tuple[tuple[str, int], ...]) -> Iterator[Family]:
    yield counter(
        "events_deduplicated",
        "Copies of one kernel error read through a second interface (trace event and kernel "
        "log line) and dropped as duplicates, by event family.",
        ("family",),
        (((label(family),), n) for family, n in deduplicated),
    )


def _trigger_families(triggers: tuple[tuple[str, str, int], ...]) -> Iterator[Family]:
    yield counter(
        "triggers",
        "Operator trigger scripts by event and outcome: ok, failed (non-zero exit), timed_out "
        "(killed), refused (path or ownership check), dropped (64 already waiting), shutdown "
        "(killed or never started because the daemon stopped or reloaded).",
        ("event", "outcome"),
        (((event, outcome), n) for event, outcome, n in triggers),
    )


def _endpoint_families(endpoint: EndpointHealth | None) -> Iterator[Family]:
    if endpoint is None:
        return
    yield scalar(
        "metrics_endpoint_up",
        "1 while the metrics HTTP endpoint listens; 0 while its address cannot be bound (the "
        "daemon runs on without it and retries).",
        1.0 if endpoint.up else 0.0,
    )
    yield counter(
        "metrics_connections_rejected",
        "Connections to the metrics endpoint refused or cut, by reason (too many at once, file "
        "descriptors reserved for the daemon, deadline, oversized headers, bad request, TLS).",
        ("reason",),
        (((reason,), count) for reason, count in endpoint.connections_rejected),
    )


#: A part of the exposition: a pure function of the snapshot fields passed to it, so the same
#: inputs always give the same families (and the same text: see `PartRenderer`).
Part = tuple[Callable[..., Iterator[Family]], tuple[object, ...]]


def snapshot_parts(snap: MetricsSnapshot) -> tuple[Part, ...]:
    """The parts of a scrape of `snap`, in exposition order, each with its inputs."""
    return (
        (_build_families, ()),
        (_clock_families, (snap.start_time_seconds, snap.published_at_seconds)),
        (_error_families, (snap.errors_by_source, snap.errors_by_dimm)),
        (edac_families, (snap.edac,)),
        (
            kernel_families,
            (
                snap.hardware_corrupted_bytes,
                snap.node_memory_failure,
                snap.kernel_recoveries,
                snap.processes_killed,
            ),
        ),
        (
            _action_families,
            (
                snap.offline_actions,
                snap.retired_pages,
                snap.tracked_pages,
                snap.pages_over_threshold,
                snap.dimms,
            ),
        ),
        (_budget_families, (snap.budget,)),
        (_source_families, (snap.sources,)),
        (settings_families, (snap.kernel_settings,)),
        (_daemon_families, (snap.database_corruption_recoveries, snap.dimm_fingerprint_changes)),
        (_latency_families, (snap.latency,)),
        (
            _store_families,
            (snap.store_write_failures, snap.events_unstored, snap.events_unstored_dropped),
        ),
        (_policy_families, (snap.policy_untracked_events, snap.policy_not_offlinable_events)),
        (_parse_families, (snap.unparsed_candidate_lines,)),
        (_dedupe_families, (snap.events_deduplicated,)),
        (_trigger_families, (snap.triggers,)),
        (_endpoint_families, (snap.endpoint,)),
    )


def snapshot_families(snap: MetricsSnapshot) -> Iterator[Family]:
    """The metric families a scrape of `snap` shows (pure: no I/O)."""
    for families_of, inputs in snapshot_parts(snap):
        yield from families_of(*inputs)


class PartCollector(Collector):
    """One part of the exposition as a prometheus-client collector: what `generate_latest`
    renders."""

    def __init__(self, families_of: Callable[..., Iterator[Family]], inputs: Iterable[object]):
        self._families_of = families_of
        self._inputs = tuple(inputs)

    def collect(self) -> Iterator[Family]:
        return self._families_of(*self._inputs)


class SnapshotCollector(Collector):
    """Every family of one snapshot, for a prometheus-client registry or `generate_latest`."""

    def __init__(self, snap: MetricsSnapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Family]:
        return snapshot_families(self._snap)
