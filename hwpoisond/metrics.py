"""Prometheus exposition of hwpoisond's state: one renderer over an immutable snapshot.

Rule: a scrape only reads the snapshot the daemon loop last published (an atomic reference swap);
it never touches the kernel or the database. The loop builds a `MetricsSnapshot` from plain frozen
records and calls `Exporter.publish()`; the exporter renders each snapshot once into the text
format, serves those bytes from a small stdlib HTTP(S) server until the next publish and,
optionally, writes the same exposition atomically into a node_exporter textfile directory.
Counters are cumulative since the daemon started (Prometheus' `rate()`/`increase()` handle the
reset at a restart); EDAC and memory_failure counters are the kernel's own (since boot or the
last `reset_counters`). Label cardinality is bounded by hardware (sources, controllers, DIMMs,
NUMA nodes), never by pages.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import platform
import selectors
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.utils import floatToGoString

from hwpoisond import __version__
from hwpoisond.core.model import PAGE_SIZE_BYTES

if TYPE_CHECKING:
    from hwpoisond.config import MetricsConfig
    from hwpoisond.sources.edac import EdacSnapshot
    from hwpoisond.sources.memstate import MemoryState

PREFIX = "hwpoisond_"
#: node_exporter's textfile collector reads only `*.prom` files in its directory.
TEXTFILE_NAME = "hwpoisond.prom"
#: A label value longer than this is cut: DIMM labels come from firmware (SMBIOS, ACPI) and a
#: runaway string must not bloat every scrape.
MAX_LABEL_VALUE_CHARS = 128
UNKNOWN = "unknown"
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


# -- the families: what a scrape shows, as plain data -------------------------------------------

#: One sample: its full name (`…_total`, `…_bucket`), its label pairs and its value.
Sample = tuple[str, tuple[tuple[str, str], ...], float]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family in the OpenMetrics data model, as prometheus-client names it: `name`
    without the `_total`/`_info` suffix its samples carry; `type` is `counter`, `gauge`, `info` or
    `histogram`."""

    name: str
    type: str
    documentation: str
    samples: tuple[Sample, ...]


def _label(value: object) -> str:
    if value is None or value == "":
        return UNKNOWN
    text = str(value)
    return text[:MAX_LABEL_VALUE_CHARS]


Rows = Iterable[tuple[tuple[str, ...], float | None]]


def _summed(rows: Rows) -> dict[tuple[str, ...], float]:
    # Two records with the same labels (e.g. two unknown DIMMs) must become one series: a
    # duplicate series is an invalid exposition that Prometheus rejects whole. A value that could
    # not be read (None) leaves its series out: an absent series is honest, a 0 is not.
    out: dict[tuple[str, ...], float] = {}
    for labels, value in rows:
        if value is not None:
            out[labels] = out.get(labels, 0.0) + value
    return out


def _labelled(kind: str, name: str, doc: str, labels: tuple[str, ...], rows: Rows) -> Family:
    # Series are ordered by their label values in `labels` order; each sample's pairs are put in
    # name order once here rather than sorted again for every line written.
    sample_name = PREFIX + name + ("_total" if kind == "counter" else "")
    order = sorted(range(len(labels)), key=labels.__getitem__)
    names = tuple(labels[i] for i in order)
    in_name_order: Callable[[tuple[str, ...]], tuple[str, ...]] = (
        itemgetter(*order) if len(order) > 1 else tuple
    )
    return Family(
        PREFIX + name,
        kind,
        doc,
        tuple(
            (sample_name, tuple(zip(names, in_name_order(values), strict=True)), value)
            for values, value in sorted(_summed(rows).items())
        ),
    )


def _counter(name: str, doc: str, labels: tuple[str, ...], rows: Rows) -> Family:
    return _labelled("counter", name, doc, labels, rows)


def _gauge(name: str, doc: str, labels: tuple[str, ...], rows: Rows) -> Family:
    return _labelled("gauge", name, doc, labels, rows)


def _scalar(name: str, doc: str, value: float) -> Family:
    return Family(PREFIX + name, "gauge", doc, ((PREFIX + name, (), float(value)),))


def _scalar_counter(name: str, doc: str, value: float) -> Family:
    return Family(PREFIX + name, "counter", doc, ((PREFIX + name + "_total", (), float(value)),))


def _info(name: str, doc: str, rows: Iterable[tuple[tuple[str, str], ...]]) -> Family:
    """An info family: each row's label pairs make one series whose value is always 1."""
    sample_name = PREFIX + name + "_info"
    return Family(
        PREFIX + name, "info", doc, tuple((sample_name, tuple(sorted(r)), 1.0) for r in rows)
    )


def _edac_families(controllers: tuple[EdacMcCounts, ...]) -> Iterator[Family]:
    mcs = sorted(controllers, key=lambda c: c.mc)
    yield _info(
        "edac_mc",
        "EDAC memory controller: driver name and sysfs layout.",
        ((("mc", str(c.mc)), ("mc_name", _label(c.name)), ("layout", c.layout)) for c in mcs),
    )
    per_mc: list[tuple[str, str, str]] = [
        ("edac_corrected_errors", "ce_count", "Corrected errors the EDAC controller counted."),
        ("edac_uncorrected_errors", "ue_count", "Uncorrected errors the EDAC controller counted."),
        (
            "edac_noinfo_corrected_errors",
            "ce_noinfo_count",
            "Corrected errors EDAC could not attribute to a DIMM or csrow.",
        ),
        (
            "edac_noinfo_uncorrected_errors",
            "ue_noinfo_count",
            "Uncorrected errors EDAC could not attribute to a DIMM or csrow.",
        ),
    ]
    for name, attr, doc in per_mc:
        yield _counter(name, doc, ("mc",), (((str(c.mc),), getattr(c, attr)) for c in mcs))
    yield _gauge(
        "edac_mc_size_bytes",
        "Memory behind the EDAC controller (size_mb).",
        ("mc",),
        (((str(c.mc),), c.size_bytes) for c in mcs),
    )
    csrows = [(c.mc, r) for c in mcs for r in c.csrows]
    yield _counter(
        "edac_csrow_corrected_errors",
        "Corrected errors per EDAC csrow (legacy layout).",
        ("mc", "csrow"),
        (((str(mc), str(r.csrow)), r.ce_count) for mc, r in csrows),
    )
    yield _counter(
        "edac_csrow_uncorrected_errors",
        "Uncorrected errors per EDAC csrow (legacy layout).",
        ("mc", "csrow"),
        (((str(mc), str(r.csrow)), r.ue_count) for mc, r in csrows),
    )
    yield _counter(
        "edac_csrow_channel_corrected_errors",
        "Corrected errors per EDAC csrow channel, with the channel's DIMM label.",
        ("mc", "csrow", "channel", "dimm"),
        (
            ((str(mc), str(r.csrow), str(ch.channel), _label(ch.dimm_label)), ch.ce_count)
            for mc, r in csrows
            for ch in r.channels
        ),
    )
    dimms = [(c.mc, d) for c in mcs for d in c.dimms]
    dimm_labels = ("mc", "entry", "dimm", "location")

    def key(mc: int, d: EdacDimmCounts) -> tuple[str, ...]:
        return (str(mc), d.entry, _label(d.label), _label(d.location))

    yield _counter(
        "edac_dimm_corrected_errors",
        "Corrected errors per EDAC DIMM/rank entry (per-DIMM layout).",
        dimm_labels,
        ((key(mc, d), d.ce_count) for mc, d in dimms),
    )
    yield _counter(
        "edac_dimm_uncorrected_errors",
        "Uncorrected errors per EDAC DIMM/rank entry (per-DIMM layout).",
        dimm_labels,
        ((key(mc, d), d.ue_count) for mc, d in dimms),
    )
    yield _gauge(
        "edac_dimm_size_bytes",
        "Size of the EDAC DIMM/rank entry.",
        dimm_labels,
        ((key(mc, d), d.size_bytes) for mc, d in dimms),
    )


def _histogram(latency: LatencyHistogram) -> Family:
    name = PREFIX + "event_decision_latency_seconds"
    cumulative, samples = 0, list[Sample]()
    for bound, count in zip(latency.bounds_seconds, latency.counts, strict=False):
        cumulative += count
        samples.append((name + "_bucket", (("le", _float_text(bound)),), float(cumulative)))
    cumulative += latency.counts[-1]
    samples.append((name + "_bucket", (("le", "+Inf"),), float(cumulative)))
    samples.append((name + "_count", (), float(cumulative)))
    samples.append((name + "_sum", (), latency.sum_seconds))
    return Family(
        name,
        "histogram",
        "Time from an event's arrival to the policy's decision on it.",
        tuple(samples),
    )


def _float_text(value: float) -> str:
    # prometheus-client's own histograms write bucket bounds this way ("0.005", "1.0").
    return repr(float(value))


def _settings_info(settings: KernelSettings) -> Family:
    def text(value: int | None) -> str:
        return UNKNOWN if value is None else str(value)

    cec_present = UNKNOWN if settings.cec_present is None else str(int(settings.cec_present))
    return _info(
        "kernel_settings",
        "Kernel settings that decide what happens to a bad page (vm.memory_failure_early_kill, "
        "vm.memory_failure_recovery, vm.enable_soft_offline, RAS CEC).",
        [
            (
                ("early_kill", text(settings.early_kill)),
                ("recovery", text(settings.recovery)),
                ("enable_soft_offline", text(settings.enable_soft_offline)),
                ("cec_present", cec_present),
                ("cec_threshold", text(settings.cec_threshold)),
            )
        ],
    )


def _build_families() -> Iterator[Family]:
    yield _info(
        "build",
        "hwpoisond build information.",
        [(("version", __version__), ("python_version", platform.python_version()))],
    )


def _clock_families(
    start_time_seconds: float | None, published_at_seconds: float | None
) -> Iterator[Family]:
    if start_time_seconds is not None:
        yield _scalar(
            "start_time_seconds",
            "When the daemon started, seconds since the Unix epoch.",
            start_time_seconds,
        )
    if published_at_seconds is not None:
        yield _scalar(
            "snapshot_timestamp_seconds",
            "When the daemon loop last published these metrics (seconds since the Unix epoch); "
            "a stale value means a stalled loop.",
            published_at_seconds,
        )


def _error_families(
    errors_by_source: tuple[SourceErrors, ...], errors_by_dimm: tuple[DimmErrors, ...]
) -> Iterator[Family]:
    yield _counter(
        "memory_errors",
        "Memory errors seen, by the kernel interface that reported them and severity.",
        ("source", "severity"),
        (((_label(e.source), _label(e.severity)), e.count) for e in errors_by_source),
    )
    yield _counter(
        "dimm_memory_errors",
        "Memory errors seen, by memory controller and DIMM label.",
        ("mc", "dimm", "severity"),
        (((_label(e.mc), _label(e.dimm), _label(e.severity)), e.count) for e in errors_by_dimm),
    )


def _kernel_families(
    hardware_corrupted_bytes: int | None,
    node_memory_failure: tuple[NodeMemoryFailure, ...],
    kernel_recoveries: tuple[KernelRecoveries, ...],
) -> Iterator[Family]:
    if hardware_corrupted_bytes is not None:
        yield _scalar(
            "hardware_corrupted_bytes",
            "HardwareCorrupted from /proc/meminfo: memory the kernel has poisoned.",
            hardware_corrupted_bytes,
        )
    yield _counter(
        "node_memory_failure_pages",
        "Pages the kernel's memory_failure() handled per NUMA node, by result "
        "(/sys/devices/system/node/nodeN/memory_failure).",
        ("node", "result"),
        (((str(n.node), _label(n.result)), n.count) for n in node_memory_failure),
    )
    yield _counter(
        "kernel_uncorrected_errors",
        "Uncorrected errors the kernel's memory_failure() handled, by result and page type.",
        ("result", "page_type"),
        (((_label(k.result).lower(), _label(k.page_type)), k.count) for k in kernel_recoveries),
    )


def _action_families(
    offline_actions: tuple[OfflineActions, ...],
    retired_pages: int,
    tracked_pages: int,
    pages_over_threshold: int,
    dimms: tuple[DimmHealth, ...],
) -> Iterator[Family]:
    yield _counter(
        "offline_actions",
        "Page offline attempts by hwpoisond, by action and result.",
        ("action", "result"),
        (((_label(a.action), _label(a.result)), a.count) for a in offline_actions),
    )
    yield _scalar("retired_pages", "Pages hwpoisond has retired this boot.", retired_pages)
    yield _scalar(
        "retired_bytes",
        "Memory hwpoisond has retired this boot.",
        retired_pages * PAGE_SIZE_BYTES,
    )
    yield _scalar("tracked_pages", "Pages with recent corrected errors under watch.", tracked_pages)
    yield _scalar(
        "pages_over_threshold",
        "Tracked pages whose corrected errors reached the policy threshold.",
        pages_over_threshold,
    )
    yield _counter(
        "dimm_escalations",
        "Escalations the policy raised for a DIMM (too many bad pages, error storm).",
        ("mc", "dimm"),
        (((_label(d.mc), _label(d.dimm)), d.escalations) for d in dimms),
    )
    yield _gauge(
        "dimm_replacement_recommended",
        "1 while the policy recommends replacing the DIMM.",
        ("mc", "dimm"),
        (
            ((_label(d.mc), _label(d.dimm)), 1.0 if d.replacement_recommended else 0.0)
            for d in dimms
        ),
    )


def _budget_families(b: Budget | None) -> Iterator[Family]:
    if b is None:
        return
    yield _scalar("budget_used_bytes", "Retirement budget used.", b.used_bytes)
    yield _scalar("budget_remaining_bytes", "Retirement budget left.", b.remaining_bytes)
    yield _scalar("budget_limit_bytes", "Retirement budget in all.", b.limit_bytes)
    yield _scalar(
        "budget_offlines_last_hour",
        "Offline actions in the last rolling hour.",
        b.offlines_last_hour,
    )
    yield _scalar(
        "budget_offlines_per_hour_limit",
        "Offline actions allowed per rolling hour.",
        b.offlines_per_hour_limit,
    )
    yield _scalar(
        "budget_exhausted",
        "1 when the retirement budget is spent and pages are only accounted.",
        1.0 if b.exhausted else 0.0,
    )


def _source_families(unordered: tuple[SourceHealth, ...]) -> Iterator[Family]:
    sources = sorted(unordered, key=lambda s: s.source)
    yield _gauge(
        "source_available",
        "1 when the kernel interface exists on this machine.",
        ("source",),
        (((s.source,), 1.0 if s.available else 0.0) for s in sources),
    )
    yield _gauge(
        "source_up",
        "1 when the source is being read without error.",
        ("source",),
        (((s.source,), 1.0 if s.up else 0.0) for s in sources),
    )
    yield _counter(
        "parse_failures",
        "Lines from a source that looked like an error report but could not be parsed.",
        ("source",),
        (((s.source,), s.parse_failures) for s in sources),
    )
    yield _gauge(
        "last_event_timestamp_seconds",
        "When a source last delivered an event, seconds since the Unix epoch.",
        ("source",),
        (((s.source,), s.last_event_timestamp_seconds) for s in sources),
    )


def _settings_families(settings: KernelSettings | None) -> Iterator[Family]:
    if settings is not None:
        yield _settings_info(settings)


def _daemon_families(
    database_corruption_recoveries: int, dimm_fingerprint_changes: int
) -> Iterator[Family]:
    yield _scalar_counter(
        "database_corruption_recoveries",
        "Times the state database was found corrupt and rebuilt.",
        database_corruption_recoveries,
    )
    yield _scalar_counter(
        "dimm_fingerprint_changes",
        "Times the installed DIMMs' fingerprint changed (a DIMM was replaced or moved).",
        dimm_fingerprint_changes,
    )


def _latency_families(latency: LatencyHistogram) -> Iterator[Family]:
    yield _histogram(latency)


#: A part of the exposition: a pure function of the snapshot fields passed to it, so the same
#: inputs always give the same families (and the same text: see `PartRenderer`).
Part = tuple[Callable[..., Iterator[Family]], tuple[object, ...]]


def snapshot_parts(snap: MetricsSnapshot) -> tuple[Part, ...]:
    """The parts of a scrape of `snap`, in exposition order, each with its inputs."""
    return (
        (_build_families, ()),
        (_clock_families, (snap.start_time_seconds, snap.published_at_seconds)),
        (_error_families, (snap.errors_by_source, snap.errors_by_dimm)),
        (_edac_families, (snap.edac,)),
        (
            _kernel_families,
            (snap.hardware_corrupted_bytes, snap.node_memory_failure, snap.kernel_recoveries),
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
        (_settings_families, (snap.kernel_settings,)),
        (_daemon_families, (snap.database_corruption_recoveries, snap.dimm_fingerprint_changes)),
        (_latency_families, (snap.latency,)),
    )


def snapshot_families(snap: MetricsSnapshot) -> Iterator[Family]:
    """The metric families a scrape of `snap` shows (pure: no I/O)."""
    for families_of, inputs in snapshot_parts(snap):
        yield from families_of(*inputs)


# -- the text format ----------------------------------------------------------------------------

#: How each family type is shown in the Prometheus text format 0.0.4 (the OpenMetrics `info`
#: type has no text-format equivalent: it is a gauge named `…_info`).
_TEXT_NAME_SUFFIX_AND_TYPE = {
    "counter": ("_total", "counter"),
    "gauge": ("", "gauge"),
    "info": ("_info", "gauge"),
    "histogram": ("", "histogram"),
}

#: Go's float formatting, which Prometheus expects (`+Inf`, `1.7e+09`); typed here because
#: prometheus-client leaves it unannotated.
_go_float: Callable[[float], str] = floatToGoString


def _escape_label_value(value: str) -> str:
    # The text format escapes exactly these three in label values (Prometheus "Exposition
    # formats", text format details).
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_pairs(labels: tuple[tuple[str, str], ...]) -> str:
    text = ",".join([f'{k}="{v}"' for k, v in labels])
    # Few values need escaping: look for the three characters once per line, not per value.
    if "\\" in text or "\n" in text or text.count('"') != 2 * len(labels):
        text = ",".join([f'{k}="{_escape_label_value(v)}"' for k, v in labels])
    return text


def render_families(families: Iterable[Family]) -> bytes:
    """The Prometheus text format (0.0.4) of `families`: HELP and TYPE lines, then one line per
    sample (its label pairs as given: in name order), as prometheus-client's `generate_latest`
    writes it."""
    lines: list[str] = []
    append = lines.append
    for family in families:
        suffix, text_type = _TEXT_NAME_SUFFIX_AND_TYPE[family.type]
        shown = family.name + suffix
        doc = family.documentation.replace("\\", "\\\\").replace("\n", "\\n")
        append(f"# HELP {shown} {doc}\n# TYPE {shown} {text_type}\n")
        for name, labels, value in family.samples:
            if labels:
                append(f"{name}{{{_label_pairs(labels)}}} {_go_float(value)}\n")
            else:
                append(f"{name} {_go_float(value)}\n")
    return "".join(lines).encode()


def render_snapshot(snap: MetricsSnapshot) -> bytes:
    """The exposition a scrape of `snap` returns (pure: no I/O)."""
    return render_families(snapshot_families(snap))


class PartRenderer:
    """Renders snapshots, reusing the text of each part whose inputs equal (`==`) those of the
    previous render: most publishes change a timestamp and a few counters, not 700 series. The
    result is always `render_snapshot(snap)`. Not thread-safe: one caller at a time."""

    def __init__(self) -> None:
        self._last: dict[Callable[..., Iterator[Family]], tuple[tuple[object, ...], bytes]] = {}

    def render(self, snap: MetricsSnapshot) -> bytes:
        chunks = []
        for families_of, inputs in snapshot_parts(snap):
            last = self._last.get(families_of)
            if last is None or last[0] != inputs:
                last = (inputs, render_families(families_of(*inputs)))
                self._last[families_of] = last
            chunks.append(last[1])
        return b"".join(chunks)


# -- the exporter -------------------------------------------------------------------------------

#: The text format's media type (what Prometheus asks for when OpenMetrics is not offered).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: gzip level for compressed scrapes: level 6 costs ~1 ms on a 76 KB exposition once per
#: snapshot and shrinks it ~10x; higher levels gain little on this repetitive text.
GZIP_LEVEL = 6
#: A client that sends no complete request (or reads no response) within this long is dropped,
#: so a stuck or hostile client ties up one handler thread for a bounded time only.
CLIENT_TIMEOUT_SECONDS = 10.0
_LANDING_PAGE = (
    b"<!doctype html>\n<html><head><title>hwpoisond</title></head>"
    b'<body><h1>hwpoisond</h1><p><a href="/metrics">Metrics</a></p></body></html>\n'
)


@dataclass(frozen=True, slots=True)
class _Rendered:
    """One snapshot's exposition, rendered once and served to every scrape until the next
    publish; the gzip form is added on the first scrape that asks for it."""

    snapshot: MetricsSnapshot
    body: bytes
    gzip_body: bytes | None = None


def _lacks_gzip(rendered: _Rendered, gzipped: bool) -> bool:
    return gzipped and rendered.gzip_body is None


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header (RFC 9110 section 12.5.3) allows gzip: `gzip` listed
    without `q=0`."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() != "gzip":
            continue
        q = params.strip().lower()
        if q.startswith("q="):
            try:
                return float(q[2:]) > 0
            except ValueError:
                return False
        return True
    return False


class _MetricsHandler(BaseHTTPRequestHandler):
    """GET/HEAD `/metrics` (and a landing page at `/`); 404 elsewhere; other methods get 501
    from BaseHTTPRequestHandler itself. HTTP/1.0: one request per connection."""

    server_version = f"hwpoisond/{__version__}"
    sys_version = ""
    timeout = CLIENT_TIMEOUT_SECONDS

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            server = self.server
            assert isinstance(server, _MetricsServer)
            gzipped = _accepts_gzip(self.headers.get("Accept-Encoding", ""))
            body = server.exposition(gzipped)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", CONTENT_TYPE)
            if gzipped:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Vary", "Accept-Encoding")
        elif path == "/":
            body = _LANDING_PAGE
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/html; charset=utf-8")
        else:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # A scrape every 15 s would flood the journal; failures show up as Prometheus' `up`.
        pass


class _MetricsServer(ThreadingHTTPServer):
    """A thread per connection (daemon threads: stop() never waits for a client); with TLS, the
    handshake runs in that thread too, so a slow handshake never holds up accepting."""

    def __init__(
        self,
        address: tuple[str, int],
        address_family: socket.AddressFamily,
        exposition: Callable[[bool], bytes],
        tls: ssl.SSLContext | None,
    ) -> None:
        self.address_family = address_family
        self.exposition = exposition
        self.tls = tls
        super().__init__(address, _MetricsHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that hangs up mid-response (BrokenPipe, reset) is not our error, and
        # socketserver's default would print a traceback to stderr for every one.
        logging.getLogger("hwpoisond").debug(
            "metrics client %s went away mid-request", client_address, exc_info=True
        )

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also resolves the host's FQDN (a DNS query at start) for a
        # name we never use; binding is all we need.
        socketserver.TCPServer.server_bind(self)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CLIENT_TIMEOUT_SECONDS)
        try:
            tls_request = self.tls.wrap_socket(request, server_side=True)
        except OSError:  # ssl.SSLError included: plain HTTP on the TLS port, a failed handshake
            return
        try:
            super().finish_request(tls_request, client_address)
        finally:
            # wrap_socket() took over the descriptor: shutdown_request() only sees the empty
            # plain socket, so the TLS one is closed here.
            tls_request.close()


def _serve(server: _MetricsServer, wakeup: socket.socket) -> None:
    """Accept until `wakeup` becomes readable. socketserver's serve_forever() polls for shutdown
    every poll_interval (0.5 s); waiting on a wakeup socket instead makes stop() immediate and
    costs no wakeups while idle."""
    with selectors.DefaultSelector() as selector:
        selector.register(server.socket, selectors.EVENT_READ)
        selector.register(wakeup, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if wakeup in ready:
                return
            # The listening socket is non-blocking and server.timeout is 0: a connection that
            # vanished between select() and accept() costs one EAGAIN, never a blocked loop.
            server.handle_request()


class Exporter:
    """Serves the current snapshot over HTTP and/or writes it to a textfile directory.

    `port=None` disables HTTP (textfile only); `port=0` binds a free port (see `bound_port`).
    TLS (Python's `ssl` module) needs both `tls_cert_file` and `tls_key_file`. Each published
    snapshot is rendered at most once, by the first scrape (or textfile write) that needs it;
    publish() itself only swaps a reference, so the daemon loop never waits for a scrape.
    """

    def __init__(
        self,
        *,
        listen_address: str = "127.0.0.1",
        port: int | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        textfile_dir: str | os.PathLike[str] | None = None,
        snapshot: MetricsSnapshot | None = None,
    ) -> None:
        if (tls_cert_file is None) != (tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be given together")
        self.listen_address = listen_address
        self.port = port
        self.tls_cert_file = tls_cert_file
        self.tls_key_file = tls_key_file
        self.textfile_dir = Path(textfile_dir) if textfile_dir is not None else None
        # Both are replaced whole, never mutated: a reference read is atomic under the GIL, so a
        # scrape sees one snapshot's exposition, never a mix of two.
        self._snapshot = snapshot or MetricsSnapshot()
        self._rendered: _Rendered | None = None
        self._renderer = PartRenderer()  # used under _render_lock only
        self._render_lock = threading.Lock()
        self._server: _MetricsServer | None = None
        self._thread: threading.Thread | None = None
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._textfile_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: MetricsConfig) -> Exporter:
        return cls(
            listen_address=config.listen_address,
            port=config.port if config.enabled else None,
            tls_cert_file=config.tls_cert_file,
            tls_key_file=config.tls_key_file,
            textfile_dir=config.textfile_dir,
        )

    @property
    def snapshot(self) -> MetricsSnapshot:
        return self._snapshot

    @property
    def bound_port(self) -> int | None:
        """The TCP port the HTTP server listens on (the real one when `port=0`), else None."""
        if self._server is None:
            return None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str | None:
        port = self.bound_port
        if port is None:
            return None
        scheme = "https" if self.tls_cert_file else "http"
        host = f"[{self.listen_address}]" if ":" in self.listen_address else self.listen_address
        return f"{scheme}://{host}:{port}/metrics"

    def start(self) -> None:
        """Bind and serve in a daemon thread (no-op without a port). Raises OSError when the
        address cannot be bound, ssl.SSLError/OSError when the TLS files are unusable."""
        if self.port is None or self._server is not None:
            return
        tls = None
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        family = socket.getaddrinfo(
            self.listen_address, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0][0]
        server = _MetricsServer((self.listen_address, self.port), family, self._exposition, tls)
        server.socket.setblocking(False)
        server.timeout = 0
        wakeup = socket.socketpair()
        thread = threading.Thread(
            target=_serve, args=(server, wakeup[0]), name="hwpoisond-metrics", daemon=True
        )
        thread.start()
        self._server, self._thread, self._wakeup = server, thread, wakeup

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make `snapshot` what scrapes see (the next scrape renders it); in textfile mode, also
        write it out."""
        self._snapshot = snapshot
        if self.textfile_dir is not None:
            self.write_textfile()

    def render(self) -> bytes:
        """The exposition text of the current snapshot (Prometheus text format 0.0.4)."""
        return self._exposition(False)

    def _exposition(self, gzipped: bool) -> bytes:
        rendered = self._rendered
        if (
            rendered is None
            or rendered.snapshot is not self._snapshot
            or _lacks_gzip(rendered, gzipped)
        ):
            # One renderer at a time: scrapes racing after a publish wait for the first one's
            # result instead of each rendering the same snapshot.
            with self._render_lock:
                rendered = self._rendered
                snapshot = self._snapshot
                if rendered is None or rendered.snapshot is not snapshot:
                    rendered = _Rendered(snapshot, self._renderer.render(snapshot))
                if _lacks_gzip(rendered, gzipped):
                    compressed = gzip.compress(rendered.body, GZIP_LEVEL, mtime=0)
                    rendered = replace(rendered, gzip_body=compressed)
                self._rendered = rendered
        if gzipped and rendered.gzip_body is not None:
            return rendered.gzip_body
        return rendered.body

    def write_textfile(self) -> Path:
        """Write the exposition to `<textfile_dir>/hwpoisond.prom` atomically: a temporary file
        that node_exporter ignores (no `.prom` suffix), fsync, then rename(2) over the old one."""
        if self.textfile_dir is None:
            raise ValueError("no textfile directory configured")
        target = self.textfile_dir / TEXTFILE_NAME
        data = self.render()
        with self._textfile_lock:
            fd, tmp = tempfile.mkstemp(prefix=".hwpoisond.", suffix=".tmp", dir=self.textfile_dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                # node_exporter usually runs as another user: the file must be world-readable.
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError as e:
                    if e.errno != errno.ENOENT:
                        raise
                raise
        return target

    def stop(self) -> None:
        """Stop serving and release the port at once (no poll interval to wait out); connections
        already accepted finish on their own daemon threads."""
        server, thread, wakeup = self._server, self._thread, self._wakeup
        self._server = self._thread = self._wakeup = None
        if wakeup is not None:
            wakeup[1].send(b"\0")
        if thread is not None:
            thread.join(timeout=5.0)
        if server is not None:
            server.server_close()
        if wakeup is not None:
            for end in wakeup:
                end.close()

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
