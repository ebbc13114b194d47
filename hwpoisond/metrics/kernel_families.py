"""The families that mirror the kernel's own counters: EDAC, memory_failure(), kernel settings.

Rule: a pure function of snapshot records, one family per kernel counter; a counter the kernel
did not give (None) has no series, and EDAC is shown in both sysfs layouts with its labels.
"""

from __future__ import annotations

from collections.abc import Iterator

from hwpoisond.metrics.builders import UNKNOWN, Family, counter, gauge, info, label, scalar
from hwpoisond.metrics.snapshot import (
    EdacDimmCounts,
    EdacMcCounts,
    KernelRecoveries,
    KernelSettings,
    NodeMemoryFailure,
)


def edac_families(controllers: tuple[EdacMcCounts, ...]) -> Iterator[Family]:
    mcs = sorted(controllers, key=lambda c: c.mc)
    yield info(
        "edac_mc",
        "EDAC memory controller: driver name and sysfs layout.",
        ((("mc", str(c.mc)), ("mc_name", label(c.name)), ("layout", c.layout)) for c in mcs),
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
        yield counter(name, doc, ("mc",), (((str(c.mc),), getattr(c, attr)) for c in mcs))
    yield gauge(
        "edac_mc_size_bytes",
        "Memory behind the EDAC controller (size_mb).",
        ("mc",),
        (((str(c.mc),), c.size_bytes) for c in mcs),
    )
    csrows = [(c.mc, r) for c in mcs for r in c.csrows]
    yield counter(
        "edac_csrow_corrected_errors",
        "Corrected errors per EDAC csrow (legacy layout).",
        ("mc", "csrow"),
        (((str(mc), str(r.csrow)), r.ce_count) for mc, r in csrows),
    )
    yield counter(
        "edac_csrow_uncorrected_errors",
        "Uncorrected errors per EDAC csrow (legacy layout).",
        ("mc", "csrow"),
        (((str(mc), str(r.csrow)), r.ue_count) for mc, r in csrows),
    )
    yield counter(
        "edac_csrow_channel_corrected_errors",
        "Corrected errors per EDAC csrow channel, with the channel's DIMM label.",
        ("mc", "csrow", "channel", "dimm"),
        (
            ((str(mc), str(r.csrow), str(ch.channel), label(ch.dimm_label)), ch.ce_count)
            for mc, r in csrows
            for ch in r.channels
        ),
    )
    dimms = [(c.mc, d) for c in mcs for d in c.dimms]
    dimm_labels = ("mc", "entry", "dimm", "location")

    def key(mc: int, d: EdacDimmCounts) -> tuple[str, ...]:
        return (str(mc), d.entry, label(d.label), label(d.location))

    yield counter(
        "edac_dimm_corrected_errors",
        "Corrected errors per EDAC DIMM/rank entry (per-DIMM layout).",
        dimm_labels,
        ((key(mc, d), d.ce_count) for mc, d in dimms),
    )
    yield counter(
        "edac_dimm_uncorrected_errors",
        "Uncorrected errors per EDAC DIMM/rank entry (per-DIMM layout).",
        dimm_labels,
        ((key(mc, d), d.ue_count) for mc, d in dimms),
    )
    yield gauge(
        "edac_dimm_size_bytes",
        "Size of the EDAC DIMM/rank entry.",
        dimm_labels,
        ((key(mc, d), d.size_bytes) for mc, d in dimms),
    )


def kernel_families(
    hardware_corrupted_bytes: int | None,
    node_memory_failure: tuple[NodeMemoryFailure, ...],
    kernel_recoveries: tuple[KernelRecoveries, ...],
    processes_killed: tuple[tuple[str, int], ...] = (),
) -> Iterator[Family]:
    if hardware_corrupted_bytes is not None:
        yield scalar(
            "hardware_corrupted_bytes",
            "HardwareCorrupted from /proc/meminfo: memory the kernel has poisoned.",
            hardware_corrupted_bytes,
        )
    yield counter(
        "node_memory_failure_pages",
        "Pages the kernel's memory_failure() handled per NUMA node, by result "
        "(/sys/devices/system/node/nodeN/memory_failure).",
        ("node", "result"),
        (((str(n.node), label(n.result)), n.count) for n in node_memory_failure),
    )
    yield counter(
        "kernel_uncorrected_errors",
        "Uncorrected errors the kernel's memory_failure() handled, by result and page type.",
        ("result", "page_type"),
        (((label(k.result).lower(), label(k.page_type)), k.count) for k in kernel_recoveries),
    )
    yield counter(
        "processes_killed",
        "Processes the kernel signalled or killed because they used a poisoned page "
        "(mm/memory-failure.c kill_proc), by action: sigbus, killed, force_killed.",
        ("action",),
        (((label(how),), n) for how, n in processes_killed),
    )


def _settings_info(settings: KernelSettings) -> Family:
    def text(value: int | None) -> str:
        return UNKNOWN if value is None else str(value)

    cec_present = UNKNOWN if settings.cec_present is None else str(int(settings.cec_present))
    return info(
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


def settings_families(settings: KernelSettings | None) -> Iterator[Family]:
    if settings is not None:
        yield _settings_info(settings)
