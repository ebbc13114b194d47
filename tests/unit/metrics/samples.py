"""Metrics snapshots for tests (one with every part populated, so every family shows) and a
parser that turns an exposition into {(name, labels): value}, refusing duplicate series."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_text_to_families,
)
from prometheus_client.parser import text_string_to_metric_families

from hwpoisond.metrics import (
    Budget,
    DimmErrors,
    DimmHealth,
    EdacCsrowChannel,
    EdacCsrowCounts,
    EdacDimmCounts,
    EdacMcCounts,
    EndpointHealth,
    KernelRecoveries,
    KernelSettings,
    LatencyHistogram,
    MetricsSnapshot,
    NodeMemoryFailure,
    OfflineActions,
    SourceErrors,
    SourceHealth,
    UnparsedLines,
)

MIB = 1024**2


def populated_snapshot() -> MetricsSnapshot:
    """Two controllers (one per EDAC layout) and every other part filled with distinct values."""
    latency = LatencyHistogram()
    for seconds in (0.0004, 0.003, 0.003, 0.2, 30.0):
        latency = latency.observe(seconds)
    return MetricsSnapshot(
        published_at_seconds=1_700_000_100.5,
        start_time_seconds=1_700_000_000.0,
        errors_by_source=(
            SourceErrors("mc_event", "corrected", 41),
            SourceErrors("mc_event", "uncorrected", 1),
            SourceErrors("mce_record", "corrected", 7),
            SourceErrors("mce_record", "deferred", 2),
        ),
        errors_by_dimm=(
            DimmErrors(0, "CPU_SrcID#0_MC#0_Chan#0_DIMM#0", "corrected", 40),
            DimmErrors(0, "CPU_SrcID#0_MC#0_Chan#0_DIMM#0", "uncorrected", 1),
            DimmErrors(1, "DIMM_B1", "corrected", 1),
            DimmErrors(None, None, "corrected", 7),
            DimmErrors(None, None, "deferred", 2),
        ),
        edac=(
            EdacMcCounts(
                mc=0,
                name="Skylake Socket#0 IMC#0",
                ce_count=40,
                ue_count=1,
                ce_noinfo_count=3,
                ue_noinfo_count=0,
                size_bytes=32768 * MIB,
                dimms=(
                    EdacDimmCounts(
                        "dimm0",
                        "CPU_SrcID#0_MC#0_Chan#0_DIMM#0",
                        "channel 0 slot 0",
                        37,
                        1,
                        16384 * MIB,
                    ),
                    EdacDimmCounts(
                        "dimm1",
                        "CPU_SrcID#0_MC#0_Chan#1_DIMM#0",
                        "channel 1 slot 0",
                        0,
                        0,
                        16384 * MIB,
                    ),
                ),
            ),
            EdacMcCounts(
                mc=1,
                name="i5000",
                ce_count=5,
                ue_count=2,
                ce_noinfo_count=0,
                ue_noinfo_count=1,
                size_bytes=4096 * MIB,
                csrows=(
                    EdacCsrowCounts(
                        0,
                        4,
                        1,
                        (EdacCsrowChannel(0, "DIMM_A1", 3), EdacCsrowChannel(1, "DIMM_B1", 1)),
                    ),
                    EdacCsrowCounts(1, 1, 0, (EdacCsrowChannel(0, "DIMM_A2", 1),)),
                ),
            ),
        ),
        hardware_corrupted_bytes=12 * 1024,
        node_memory_failure=(
            NodeMemoryFailure(0, "recovered", 3),
            NodeMemoryFailure(0, "failed", 1),
            NodeMemoryFailure(1, "ignored", 2),
            NodeMemoryFailure(1, "delayed", 0),
        ),
        offline_actions=(
            OfflineActions("soft", "offlined", 3),
            OfflineActions("soft", "failed", 2),
            OfflineActions("hard", "already_poisoned", 1),
            OfflineActions("account", "accounted", 4),
        ),
        kernel_recoveries=(
            KernelRecoveries("Recovered", "free buddy page", 1),
            KernelRecoveries("Failed", "reserved kernel page", 1),
        ),
        processes_killed=(("killed", 1), ("sigbus", 2)),
        retired_pages=3,
        tracked_pages=120,
        pages_over_threshold=2,
        dimms=(
            DimmHealth(0, "CPU_SrcID#0_MC#0_Chan#0_DIMM#0", 2, True),
            DimmHealth(1, "DIMM_B1", 0, False),
        ),
        budget=Budget(
            used_bytes=3 * 4096,
            limit_bytes=256 * MIB,
            offlines_last_hour=3,
            offlines_per_hour_limit=64,
            exhausted=False,
        ),
        sources=(
            SourceHealth("tracefs", True, True, 1, 1_700_000_090.0),
            SourceHealth("journald", True, False, 0, None),
            SourceHealth("edac_sysfs", True, True, 0, 1_700_000_080.0),
            SourceHealth("memory_state", False, False),
        ),
        kernel_settings=KernelSettings(
            early_kill=0, recovery=1, enable_soft_offline=None, cec_present=True, cec_threshold=2
        ),
        database_corruption_recoveries=1,
        dimm_fingerprint_changes=2,
        latency=latency,
        store_write_failures=4,
        events_unstored=120,
        events_unstored_dropped=6,
        policy_untracked_events=9,
        policy_not_offlinable_events=2,
        unparsed_candidate_lines=(UnparsedLines("mc_event", 3), UnparsedLines("kmsg_edac", 1)),
        events_deduplicated=(("mc_event", 2), ("memory_failure", 1)),
        triggers=(("page_retired", "dropped", 32), ("page_retired", "ok", 68)),
        endpoint=EndpointHealth(
            up=True, connections_rejected=(("deadline", 3), ("too_many_connections", 5))
        ),
    )


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples_of(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def openmetrics_samples_of(text: str) -> Samples:
    """Like samples_of, through the strict OpenMetrics parser (a missing `# EOF`, a misnamed
    sample or a histogram without +Inf raises)."""
    parse: Callable[[str], Iterable[Metric]] = openmetrics_text_to_families
    out: Samples = {}
    for family in parse(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out
