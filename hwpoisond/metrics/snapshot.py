"""The metrics snapshot: plain frozen records of everything a scrape shows.

Rule: records and pure converters only; a snapshot is built by the daemon loop, never mutated,
and swapped in whole, so a scrape sees one snapshot or the next, never a mix. A value that could
not be read is None (its series is left out), never 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwpoisond.sources.edac import EdacSnapshot
    from hwpoisond.sources.memstate import MemoryState

#: Event-to-decision latency buckets: the loop decides within milliseconds unless it is starved.
DEFAULT_LATENCY_BOUNDS_SECONDS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


# -- the snapshot: plain frozen records ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceErrors:
    """Memory errors (summing each event's `count`) that arrived through one source with one
    severity (`corrected`, `uncorrected`, `deferred`, `fatal`)."""

    source: str
    severity: str
    count: int


@dataclass(frozen=True, slots=True)
class DimmErrors:
    """Memory errors attributed to one memory controller / DIMM label (None = not known)."""

    mc: int | None
    dimm: str | None
    severity: str
    count: int


@dataclass(frozen=True, slots=True)
class EdacCsrowChannel:
    """`csrowN/chK_ce_count` and `chK_dimm_label` (legacy csrow layout)."""

    channel: int
    dimm_label: str | None
    ce_count: int | None


@dataclass(frozen=True, slots=True)
class EdacCsrowCounts:
    """`mcN/csrowM/{ce_count,ue_count}`: the legacy layout node_exporter reads."""

    csrow: int
    ce_count: int | None
    ue_count: int | None
    channels: tuple[EdacCsrowChannel, ...] = ()


@dataclass(frozen=True, slots=True)
class EdacDimmCounts:
    """`mcN/dimmM/` or `mcN/rankM/` (the per-DIMM layout, kernel 3.6+): `dimm_ce_count`,
    `dimm_ue_count`, `dimm_label`, `dimm_location`, `size` (MiB). `entry` is the directory name."""

    entry: str
    label: str | None
    location: str | None
    ce_count: int | None
    ue_count: int | None
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class EdacMcCounts:
    """One `/sys/devices/system/edac/mc/mcN` controller (Documentation/admin-guide/ras.rst).
    A counter that could not be read is None and its series is left out, never shown as 0."""

    mc: int
    name: str | None
    ce_count: int | None
    ue_count: int | None
    ce_noinfo_count: int | None
    ue_noinfo_count: int | None
    size_bytes: int | None = None
    csrows: tuple[EdacCsrowCounts, ...] = ()
    dimms: tuple[EdacDimmCounts, ...] = ()

    @property
    def layout(self) -> str:
        """`dimm` or `rank` (per-DIMM directories), `csrow` (legacy only), or `none`."""
        if self.dimms:
            return "rank" if self.dimms[0].entry.startswith("rank") else "dimm"
        return "csrow" if self.csrows else "none"


@dataclass(frozen=True, slots=True)
class NodeMemoryFailure:
    """`/sys/devices/system/node/nodeN/memory_failure/<result>` (kernel 6.5+,
    Documentation/ABI/stable/sysfs-devices-node): pages memory_failure() handled, by outcome
    (`recovered`, `ignored`, `failed`, `delayed`; their sum is the kernel's `total`)."""

    node: int
    result: str
    count: int


@dataclass(frozen=True, slots=True)
class OfflineActions:
    """Offline attempts by this daemon: action `soft`/`hard`/`account`, result as in
    `ActionResult.result` (`offlined`, `already_poisoned`, `failed`, `unsupported`, `accounted`)."""

    action: str
    result: str
    count: int


@dataclass(frozen=True, slots=True)
class KernelRecoveries:
    """Uncorrected errors the kernel's memory_failure() handled itself, from the
    `memory_failure_event` tracepoint / `Memory failure:` kmsg: result (`recovered`, `ignored`,
    `failed`, `delayed`) and page type (mm/memory-failure.c action_page_types, a fixed set)."""

    result: str
    page_type: str
    count: int


@dataclass(frozen=True, slots=True)
class DimmHealth:
    """Escalations the policy raised for one DIMM, and whether replacing it is recommended
    (an escalation outstanding since the DIMM's fingerprint last changed)."""

    mc: int | None
    dimm: str | None
    escalations: int
    replacement_recommended: bool


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """One kernel interface the daemon reads. `available`: the interface exists on this kernel;
    `up`: it is being read without error right now."""

    source: str
    available: bool
    up: bool
    parse_failures: int = 0
    last_event_timestamp_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class KernelSettings:
    """Kernel knobs that decide what happens to a bad page (None = could not be read):
    vm.memory_failure_early_kill, vm.memory_failure_recovery, vm.enable_soft_offline (6.11+),
    CONFIG_RAS_CEC's debugfs `ras/cec` and its `action_threshold`."""

    early_kill: int | None
    recovery: int | None
    enable_soft_offline: int | None
    cec_present: bool | None
    cec_threshold: int | None


@dataclass(frozen=True, slots=True)
class Budget:
    """The retirement budget: bytes retired against the limit, and offlines in the rolling hour."""

    used_bytes: int
    limit_bytes: int
    offlines_last_hour: int
    offlines_per_hour_limit: int
    exhausted: bool

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.limit_bytes - self.used_bytes)


@dataclass(frozen=True, slots=True)
class LatencyHistogram:
    """Event-to-decision latency. `counts[i]` observations fell in (bounds[i-1], bounds[i]];
    the last count (len(bounds) + 1 entries in all) is the overflow above the last bound."""

    bounds_seconds: tuple[float, ...] = DEFAULT_LATENCY_BOUNDS_SECONDS
    counts: tuple[int, ...] = (0,) * (len(DEFAULT_LATENCY_BOUNDS_SECONDS) + 1)
    sum_seconds: float = 0.0

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds_seconds) + 1:
            raise ValueError("counts needs one entry per bound plus the overflow")
        if list(self.bounds_seconds) != sorted(set(self.bounds_seconds)):
            raise ValueError("bounds must be strictly increasing")

    def observe(self, latency_seconds: float, count: int = 1) -> LatencyHistogram:
        """A new histogram with `count` more observations of `latency_seconds`."""
        index = len(self.bounds_seconds)
        for i, bound in enumerate(self.bounds_seconds):
            if latency_seconds <= bound:
                index = i
                break
        counts = list(self.counts)
        counts[index] += count
        return replace(
            self, counts=tuple(counts), sum_seconds=self.sum_seconds + latency_seconds * count
        )


@dataclass(frozen=True, slots=True)
class UnparsedLines:
    """Lines from one daemon source (`journald`, `tracefs`) with a memory-error word in them that
    no parser accepted (hwpoisond.parse.stream, "unparsed candidates")."""

    source: str
    count: int


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """The metrics HTTP endpoint itself: whether it listens (it may not, when its port is taken:
    the daemon then runs without it and keeps retrying), and the connections it refused or cut,
    by reason (see `hwpoisond.metrics.server.REJECT_REASONS`)."""

    up: bool
    connections_rejected: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything a scrape shows, as of `published_at_seconds` (wall clock). Optional parts that
    could not be read are None and their metrics are left out rather than shown as 0."""

    published_at_seconds: float | None = None
    start_time_seconds: float | None = None
    errors_by_source: tuple[SourceErrors, ...] = ()
    errors_by_dimm: tuple[DimmErrors, ...] = ()
    edac: tuple[EdacMcCounts, ...] = ()
    hardware_corrupted_bytes: int | None = None
    node_memory_failure: tuple[NodeMemoryFailure, ...] = ()
    offline_actions: tuple[OfflineActions, ...] = ()
    kernel_recoveries: tuple[KernelRecoveries, ...] = ()
    #: (how, count): processes the kernel signalled (sigbus) or killed (killed, force_killed)
    #: because they used a poisoned page.
    processes_killed: tuple[tuple[str, int], ...] = ()
    retired_pages: int = 0
    tracked_pages: int = 0
    pages_over_threshold: int = 0
    dimms: tuple[DimmHealth, ...] = ()
    budget: Budget | None = None
    sources: tuple[SourceHealth, ...] = ()
    kernel_settings: KernelSettings | None = None
    database_corruption_recoveries: int = 0
    dimm_fingerprint_changes: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    #: Store writes that failed (disk full, read-only database); the batch was held in memory.
    store_write_failures: int = 0
    #: Events held in memory now because the store cannot write them (a gauge).
    events_unstored: int = 0
    #: Events given up unstored after too long (their counts and offlines were kept).
    events_unstored_dropped: int = 0
    #: Events the policy could not track (its state is bounded) and events on a page that can
    #: never be offlined (page 0, the driver's unknown address): counted, never decided.
    policy_untracked_events: int = 0
    policy_not_offlinable_events: int = 0
    unparsed_candidate_lines: tuple[UnparsedLines, ...] = ()
    #: Copies of one kernel error read through a second interface and dropped as duplicates
    #: (sources/dedupe.py), as (event family, count): dropped on purpose, still counted.
    events_deduplicated: tuple[tuple[str, int], ...] = ()
    #: Trigger scripts as (event, outcome, count); outcome: ok, failed, timed_out, refused,
    #: dropped (the queue was full).
    triggers: tuple[tuple[str, str, int], ...] = ()
    #: Stamped by the exporter at publish when an HTTP endpoint is configured; None otherwise.
    endpoint: EndpointHealth | None = None


# -- converters from the sources' records ---------------------------------------------------------

_MIB = 1024 * 1024


def _mib_bytes(size_mb: int | None) -> int | None:
    return None if size_mb is None else size_mb * _MIB


def edac_counts(snapshot: EdacSnapshot) -> tuple[EdacMcCounts, ...]:
    """The EDAC part of a `MetricsSnapshot` from `hwpoisond.sources.edac.read_edac()`."""
    return tuple(
        EdacMcCounts(
            mc=c.mc,
            name=c.name,
            ce_count=c.ce_count,
            ue_count=c.ue_count,
            ce_noinfo_count=c.ce_noinfo_count,
            ue_noinfo_count=c.ue_noinfo_count,
            size_bytes=_mib_bytes(c.size_mb),
            csrows=tuple(
                EdacCsrowCounts(
                    csrow=r.csrow,
                    ce_count=r.ce_count,
                    ue_count=r.ue_count,
                    channels=tuple(
                        EdacCsrowChannel(ch.channel, ch.dimm_label, ch.ce_count)
                        for ch in r.channels
                    ),
                )
                for r in c.csrows
            ),
            dimms=tuple(
                EdacDimmCounts(
                    entry=f"{d.kind}{d.index}",
                    label=d.label,
                    location=d.location,
                    ce_count=d.ce_count,
                    ue_count=d.ue_count,
                    size_bytes=_mib_bytes(d.size_mb),
                )
                for d in c.dimms
            ),
        )
        for c in snapshot.controllers
    )


def node_memory_failure_counts(state: MemoryState) -> tuple[NodeMemoryFailure, ...]:
    """Per-node memory_failure() outcomes from `hwpoisond.sources.memstate.read_memory_state()`;
    `total` is left out (it is the sum of the others)."""
    out = []
    for n in state.nodes:
        for result in ("recovered", "ignored", "failed", "delayed"):
            count = getattr(n, result)
            if count is not None:
                out.append(NodeMemoryFailure(n.node, result, count))
    return tuple(out)


def kernel_settings(state: MemoryState) -> KernelSettings:
    """The kernel-settings info metric's values from `read_memory_state()`."""
    return KernelSettings(
        early_kill=state.memory_failure_early_kill,
        recovery=state.memory_failure_recovery,
        enable_soft_offline=state.enable_soft_offline,
        cec_present=state.cec.present,
        cec_threshold=state.cec.action_threshold,
    )
