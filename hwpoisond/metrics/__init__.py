"""Prometheus exposition of hwpoisond's state: one collector over an immutable snapshot.

Rule: a scrape only reads the snapshot the daemon loop last published (an atomic reference swap);
it never touches the kernel or the database. The loop builds a `MetricsSnapshot` from plain frozen
records (`snapshot`) and calls `Exporter.publish()`; the families (`families`) are
prometheus-client metric families, written by client_python (`exposition`, text format 0.0.4 or
OpenMetrics on request), rendered once per publish, served by a bounded endpoint (`server`) and,
optionally, written atomically for node_exporter (`textfile`). Counters are cumulative since the
daemon started; EDAC and memory_failure counters are the kernel's own.
"""

from hwpoisond.metrics.builders import MAX_LABEL_VALUE_CHARS, PREFIX, UNKNOWN, Family
from hwpoisond.metrics.exporter import Exporter
from hwpoisond.metrics.exposition import (
    CONTENT_TYPE,
    OPENMETRICS,
    OPENMETRICS_CONTENT_TYPE,
    TEXT,
    PartRenderer,
    choose_format,
    render_snapshot,
)
from hwpoisond.metrics.families import SnapshotCollector, snapshot_families, snapshot_parts
from hwpoisond.metrics.snapshot import (
    DEFAULT_LATENCY_BOUNDS_SECONDS,
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
    edac_counts,
    kernel_settings,
    node_memory_failure_counts,
)
from hwpoisond.metrics.textfile import TEXTFILE_NAME

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_LATENCY_BOUNDS_SECONDS",
    "MAX_LABEL_VALUE_CHARS",
    "OPENMETRICS",
    "OPENMETRICS_CONTENT_TYPE",
    "PREFIX",
    "TEXT",
    "TEXTFILE_NAME",
    "UNKNOWN",
    "Budget",
    "DimmErrors",
    "DimmHealth",
    "EdacCsrowChannel",
    "EdacCsrowCounts",
    "EdacDimmCounts",
    "EdacMcCounts",
    "EndpointHealth",
    "Exporter",
    "Family",
    "KernelRecoveries",
    "KernelSettings",
    "LatencyHistogram",
    "MetricsSnapshot",
    "NodeMemoryFailure",
    "OfflineActions",
    "PartRenderer",
    "SnapshotCollector",
    "SourceErrors",
    "SourceHealth",
    "UnparsedLines",
    "choose_format",
    "edac_counts",
    "kernel_settings",
    "node_memory_failure_counts",
    "render_snapshot",
    "snapshot_families",
    "snapshot_parts",
]
