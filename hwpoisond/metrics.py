"""Prometheus exposition of hwpoisond's state: one collector over an immutable snapshot.

Rule: a scrape only reads the snapshot the daemon loop last published (an atomic reference swap);
it never touches the kernel or the database. The loop builds a `MetricsSnapshot` from plain frozen
records and calls `Exporter.publish()`; the exporter serves it over HTTP from a private registry
and, optionally, writes the same exposition atomically into a node_exporter textfile directory.
Counters are cumulative since the daemon started (Prometheus' `rate()`/`increase()` handle the
reset at a restart); EDAC and memory_failure counters are the kernel's own (since boot or the
last `reset_counters`). Label cardinality is bounded by hardware (sources, controllers, DIMMs,
NUMA nodes), never by pages.
"""

from __future__ import annotations

import errno
import os
import platform
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

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

    def observe(self, latency_seconds: float) -> LatencyHistogram:
        """A new histogram with one more observation."""
        index = len(self.bounds_seconds)
        for i, bound in enumerate(self.bounds_seconds):
            if latency_seconds <= bound:
                index = i
                break
        counts = list(self.counts)
        counts[index] += 1
        return replace(self, counts=tuple(counts), sum_seconds=self.sum_seconds + latency_seconds)


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


# -- the collector ------------------------------------------------------------------------------


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


def _counter(name: str, doc: str, labels: list[str], rows: Rows) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for values, value in sorted(_summed(rows).items()):
        family.add_metric(list(values), value)
    return family


def _gauge(name: str, doc: str, labels: list[str], rows: Rows) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    for values, value in sorted(_summed(rows).items()):
        family.add_metric(list(values), value)
    return family


def _scalar(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _edac_families(controllers: tuple[EdacMcCounts, ...]) -> Iterator[Metric]:
    mcs = sorted(controllers, key=lambda c: c.mc)
    info = InfoMetricFamily(
        PREFIX + "edac_mc",
        "EDAC memory controller: driver name and sysfs layout.",
        labels=["mc"],
    )
    for c in mcs:
        info.add_metric([str(c.mc)], {"mc_name": _label(c.name), "layout": c.layout})
    yield info
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
        yield _counter(name, doc, ["mc"], (((str(c.mc),), getattr(c, attr)) for c in mcs))
    yield _gauge(
        "edac_mc_size_bytes",
        "Memory behind the EDAC controller (size_mb).",
        ["mc"],
        (((str(c.mc),), c.size_bytes) for c in mcs),
    )
    csrows = [(c.mc, r) for c in mcs for r in c.csrows]
    yield _counter(
        "edac_csrow_corrected_errors",
        "Corrected errors per EDAC csrow (legacy layout).",
        ["mc", "csrow"],
        (((str(mc), str(r.csrow)), r.ce_count) for mc, r in csrows),
    )
    yield _counter(
        "edac_csrow_uncorrected_errors",
        "Uncorrected errors per EDAC csrow (legacy layout).",
        ["mc", "csrow"],
        (((str(mc), str(r.csrow)), r.ue_count) for mc, r in csrows),
    )
    yield _counter(
        "edac_csrow_channel_corrected_errors",
        "Corrected errors per EDAC csrow channel, with the channel's DIMM label.",
        ["mc", "csrow", "channel", "dimm"],
        (
            ((str(mc), str(r.csrow), str(ch.channel), _label(ch.dimm_label)), ch.ce_count)
            for mc, r in csrows
            for ch in r.channels
        ),
    )
    dimms = [(c.mc, d) for c in mcs for d in c.dimms]
    dimm_labels = ["mc", "entry", "dimm", "location"]

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


def _histogram(latency: LatencyHistogram) -> HistogramMetricFamily:
    cumulative, buckets = 0, []
    for bound, count in zip(latency.bounds_seconds, latency.counts, strict=False):
        cumulative += count
        buckets.append((_float_text(bound), float(cumulative)))
    cumulative += latency.counts[-1]
    buckets.append(("+Inf", float(cumulative)))
    return HistogramMetricFamily(
        PREFIX + "event_decision_latency_seconds",
        "Time from an event's arrival to the policy's decision on it.",
        buckets=buckets,
        sum_value=latency.sum_seconds,
    )


def _float_text(value: float) -> str:
    # prometheus-client's own histograms write bucket bounds this way ("0.005", "1.0").
    return repr(float(value))


def _settings_info(settings: KernelSettings) -> InfoMetricFamily:
    def text(value: int | None) -> str:
        return UNKNOWN if value is None else str(value)

    info = InfoMetricFamily(
        PREFIX + "kernel_settings",
        "Kernel settings that decide what happens to a bad page (vm.memory_failure_early_kill, "
        "vm.memory_failure_recovery, vm.enable_soft_offline, RAS CEC).",
    )
    info.add_metric(
        [],
        {
            "early_kill": text(settings.early_kill),
            "recovery": text(settings.recovery),
            "enable_soft_offline": text(settings.enable_soft_offline),
            "cec_present": UNKNOWN
            if settings.cec_present is None
            else str(int(settings.cec_present)),
            "cec_threshold": text(settings.cec_threshold),
        },
    )
    return info


def snapshot_families(snap: MetricsSnapshot) -> Iterator[Metric]:
    """The metric families a scrape of `snap` shows (pure: no I/O)."""
    build = InfoMetricFamily(PREFIX + "build", "hwpoisond build information.")
    build.add_metric([], {"version": __version__, "python_version": platform.python_version()})
    yield build
    if snap.start_time_seconds is not None:
        yield _scalar(
            "start_time_seconds",
            "When the daemon started, seconds since the Unix epoch.",
            snap.start_time_seconds,
        )
    if snap.published_at_seconds is not None:
        yield _scalar(
            "snapshot_timestamp_seconds",
            "When the daemon loop last published these metrics (seconds since the Unix epoch); "
            "a stale value means a stalled loop.",
            snap.published_at_seconds,
        )

    yield _counter(
        "memory_errors",
        "Memory errors seen, by the kernel interface that reported them and severity.",
        ["source", "severity"],
        (((_label(e.source), _label(e.severity)), e.count) for e in snap.errors_by_source),
    )
    yield _counter(
        "dimm_memory_errors",
        "Memory errors seen, by memory controller and DIMM label.",
        ["mc", "dimm", "severity"],
        (
            ((_label(e.mc), _label(e.dimm), _label(e.severity)), e.count)
            for e in snap.errors_by_dimm
        ),
    )
    yield from _edac_families(snap.edac)

    if snap.hardware_corrupted_bytes is not None:
        yield _scalar(
            "hardware_corrupted_bytes",
            "HardwareCorrupted from /proc/meminfo: memory the kernel has poisoned.",
            snap.hardware_corrupted_bytes,
        )
    yield _counter(
        "node_memory_failure_pages",
        "Pages the kernel's memory_failure() handled per NUMA node, by result "
        "(/sys/devices/system/node/nodeN/memory_failure).",
        ["node", "result"],
        (((str(n.node), _label(n.result)), n.count) for n in snap.node_memory_failure),
    )
    yield _counter(
        "kernel_uncorrected_errors",
        "Uncorrected errors the kernel's memory_failure() handled, by result and page type.",
        ["result", "page_type"],
        (
            ((_label(k.result).lower(), _label(k.page_type)), k.count)
            for k in snap.kernel_recoveries
        ),
    )
    yield _counter(
        "offline_actions",
        "Page offline attempts by hwpoisond, by action and result.",
        ["action", "result"],
        (((_label(a.action), _label(a.result)), a.count) for a in snap.offline_actions),
    )
    yield _scalar("retired_pages", "Pages hwpoisond has retired this boot.", snap.retired_pages)
    yield _scalar(
        "retired_bytes",
        "Memory hwpoisond has retired this boot.",
        snap.retired_pages * PAGE_SIZE_BYTES,
    )
    yield _scalar(
        "tracked_pages", "Pages with recent corrected errors under watch.", snap.tracked_pages
    )
    yield _scalar(
        "pages_over_threshold",
        "Tracked pages whose corrected errors reached the policy threshold.",
        snap.pages_over_threshold,
    )
    yield _counter(
        "dimm_escalations",
        "Escalations the policy raised for a DIMM (too many bad pages, error storm).",
        ["mc", "dimm"],
        (((_label(d.mc), _label(d.dimm)), d.escalations) for d in snap.dimms),
    )
    yield _gauge(
        "dimm_replacement_recommended",
        "1 while the policy recommends replacing the DIMM.",
        ["mc", "dimm"],
        (
            ((_label(d.mc), _label(d.dimm)), 1.0 if d.replacement_recommended else 0.0)
            for d in snap.dimms
        ),
    )
    if snap.budget is not None:
        b = snap.budget
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

    sources = sorted(snap.sources, key=lambda s: s.source)
    yield _gauge(
        "source_available",
        "1 when the kernel interface exists on this machine.",
        ["source"],
        (((s.source,), 1.0 if s.available else 0.0) for s in sources),
    )
    yield _gauge(
        "source_up",
        "1 when the source is being read without error.",
        ["source"],
        (((s.source,), 1.0 if s.up else 0.0) for s in sources),
    )
    yield _counter(
        "parse_failures",
        "Lines from a source that looked like an error report but could not be parsed.",
        ["source"],
        (((s.source,), s.parse_failures) for s in sources),
    )
    yield _gauge(
        "last_event_timestamp_seconds",
        "When a source last delivered an event, seconds since the Unix epoch.",
        ["source"],
        (((s.source,), s.last_event_timestamp_seconds) for s in sources),
    )
    if snap.kernel_settings is not None:
        yield _settings_info(snap.kernel_settings)
    yield CounterMetricFamily(
        PREFIX + "database_corruption_recoveries",
        "Times the state database was found corrupt and rebuilt.",
        value=snap.database_corruption_recoveries,
    )
    yield CounterMetricFamily(
        PREFIX + "dimm_fingerprint_changes",
        "Times the installed DIMMs' fingerprint changed (a DIMM was replaced or moved).",
        value=snap.dimm_fingerprint_changes,
    )
    yield _histogram(snap.latency)


class SnapshotCollector(Collector):
    """The one collector: renders whatever snapshot is current when a scrape arrives."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self._snapshot = snapshot

    def swap(self, snapshot: MetricsSnapshot) -> None:
        # A single reference assignment: atomic under the GIL, so a scrape sees the old or the
        # new snapshot, never a mix.
        self._snapshot = snapshot

    @property
    def snapshot(self) -> MetricsSnapshot:
        return self._snapshot

    def collect(self) -> Iterable[Metric]:
        return list(snapshot_families(self._snapshot))


# -- the exporter -------------------------------------------------------------------------------


class Exporter:
    """Serves the current snapshot over HTTP and/or writes it to a textfile directory.

    `port=None` disables HTTP (textfile only); `port=0` binds a free port (see `bound_port`).
    TLS uses prometheus-client's own support: both `tls_cert_file` and `tls_key_file`.
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
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = SnapshotCollector(snapshot or MetricsSnapshot())
        self.registry.register(self._collector)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
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
        return self._collector.snapshot

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
        server, thread = start_http_server(
            self.port,
            addr=self.listen_address,
            registry=self.registry,
            certfile=self.tls_cert_file,
            keyfile=self.tls_key_file,
        )
        self._server, self._thread = server, thread

    def publish(self, snapshot: MetricsSnapshot) -> None:
        """Make `snapshot` what scrapes see; in textfile mode, also write it out."""
        self._collector.swap(snapshot)
        if self.textfile_dir is not None:
            self.write_textfile()

    def render(self) -> bytes:
        """The exposition text of the current snapshot (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)

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
        """Stop serving and release the port; waits for the server thread to end."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)

    def __enter__(self) -> Exporter:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
