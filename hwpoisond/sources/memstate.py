"""The memory-state source: what the kernel says about poisoned memory and how it will handle more.

Rule: reads through `KernelFS` only; every value that a kernel may lack is None, nothing raises.

Sources of truth:
- /proc/meminfo `HardwareCorrupted:` and `MemTotal:` ("%8lu kB", fs/proc/meminfo.c).
- /sys/devices/system/node/nodeN/memory_failure/{total,ignored,failed,delayed,recovered}
  (Documentation/ABI/stable/sysfs-devices-node; added in Linux 6.4, "%lu\\n").
- /proc/sys/vm/memory_failure_early_kill, memory_failure_recovery (CONFIG_MEMORY_FAILURE) and
  enable_soft_offline (added in 6.11) (Documentation/admin-guide/sysctl/vm.rst).
- The corrected-errors collector, drivers/ras/cec.c: debugfs ras/cec/{action_threshold,
  decay_interval} ("%lld\\n"), and with CONFIG_RAS_CEC_DEBUG `array`, a dump of the tracked
  pfns ("{ n: N", " %3d: [%016llx|%s|%03llx]" = pfn|decay bits|count, "}", "Stats:",
  "CEs: %llu", "offlined pages: %llu", ...).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from hwpoisond.kernelfs import KernelFS, KernelFSError

NODE_DIR = "sys/devices/system/node"
DEBUGFS = "sys/kernel/debug"
CEC_DIR = f"{DEBUGFS}/ras/cec"

_NODE_RE = re.compile(r"^node(\d+)$")
_CEC_ENTRY_RE = re.compile(r"^\s*\d+:\s*\[([0-9a-fA-F]+)\|[01]{2}\|([0-9a-fA-F]+)\]\s*$")


@dataclass(frozen=True)
class NodeMemoryFailure:
    """Per-NUMA-node memory_failure() outcomes since boot (each None when the kernel lacks it)."""

    node: int
    total: int | None
    ignored: int | None
    failed: int | None
    delayed: int | None
    recovered: int | None


@dataclass(frozen=True)
class CecState:
    """The kernel's corrected-errors collector. `present` is None when debugfs is not mounted
    (we cannot tell), False when the kernel has no CEC (or it was disabled with ras=cec_disable).
    `tracked_pfns` (pfn, count) and the totals need CONFIG_RAS_CEC_DEBUG's `array` file."""

    present: bool | None
    action_threshold: int | None = None
    decay_interval_seconds: int | None = None
    tracked_pfns: tuple[tuple[int, int], ...] | None = None
    ces_entered: int | None = None
    pages_offlined: int | None = None


@dataclass(frozen=True)
class MemoryState:
    hardware_corrupted_bytes: int | None
    mem_total_bytes: int | None
    nodes: tuple[NodeMemoryFailure, ...]
    memory_failure_early_kill: int | None
    memory_failure_recovery: int | None
    enable_soft_offline: int | None
    cec: CecState


def _int(kfs: KernelFS, kpath: str) -> int | None:
    try:
        return kfs.read_int(kpath, 10)
    except KernelFSError:
        return None


def parse_meminfo_kb(text: str, key: str) -> int | None:
    """The value of `key:` in /proc/meminfo text, in bytes (the file says kB, meaning KiB)."""
    prefix = key + ":"
    for line in text.splitlines():
        if line.startswith(prefix):
            fields = line[len(prefix) :].split()
            if fields and fields[0].isdigit():
                return int(fields[0]) * 1024
            return None
    return None


def _tail_int(line: str) -> int | None:
    value = line.split(":", 1)[1].strip()
    return int(value) if value.isdigit() else None


def parse_cec_array(text: str) -> tuple[tuple[tuple[int, int], ...], int | None, int | None]:
    """(tracked (pfn, count) pairs, CEs entered, pages offlined) from ras/cec/array."""
    pfns: list[tuple[int, int]] = []
    ces = offlined = None
    for line in text.splitlines():
        m = _CEC_ENTRY_RE.match(line)
        if m:
            pfns.append((int(m.group(1), 16), int(m.group(2), 16)))
        elif line.startswith("CEs:"):
            ces = _tail_int(line)
        elif line.startswith("offlined pages:"):
            offlined = _tail_int(line)
    return tuple(pfns), ces, offlined


def _read_cec(kfs: KernelFS) -> CecState:
    if not kfs.is_dir(CEC_DIR):
        try:
            debugfs_mounted = bool(kfs.listdir(DEBUGFS))
        except KernelFSError:
            debugfs_mounted = False
        return CecState(present=False if debugfs_mounted else None)
    pfns = ces = offlined = None
    if kfs.exists(f"{CEC_DIR}/array"):  # only with CONFIG_RAS_CEC_DEBUG
        with contextlib.suppress(KernelFSError):
            pfns, ces, offlined = parse_cec_array(kfs.read_text(f"{CEC_DIR}/array"))
    return CecState(
        present=True,
        action_threshold=_int(kfs, f"{CEC_DIR}/action_threshold"),
        decay_interval_seconds=_int(kfs, f"{CEC_DIR}/decay_interval"),
        tracked_pfns=pfns,
        ces_entered=ces,
        pages_offlined=offlined,
    )


def _read_nodes(kfs: KernelFS) -> tuple[NodeMemoryFailure, ...]:
    try:
        names = kfs.listdir(NODE_DIR)
    except KernelFSError:
        return ()
    nodes = []
    for name in names:
        m = _NODE_RE.match(name)
        if m is None or not kfs.is_dir(f"{NODE_DIR}/{name}/memory_failure"):
            continue
        d = f"{NODE_DIR}/{name}/memory_failure"
        nodes.append(
            NodeMemoryFailure(
                node=int(m.group(1)),
                total=_int(kfs, f"{d}/total"),
                ignored=_int(kfs, f"{d}/ignored"),
                failed=_int(kfs, f"{d}/failed"),
                delayed=_int(kfs, f"{d}/delayed"),
                recovered=_int(kfs, f"{d}/recovered"),
            )
        )
    return tuple(sorted(nodes, key=lambda n: n.node))


def read_memory_state(kfs: KernelFS) -> MemoryState:
    try:
        meminfo = kfs.read_text("proc/meminfo")
    except KernelFSError:
        meminfo = ""
    return MemoryState(
        hardware_corrupted_bytes=parse_meminfo_kb(meminfo, "HardwareCorrupted"),
        mem_total_bytes=parse_meminfo_kb(meminfo, "MemTotal"),
        nodes=_read_nodes(kfs),
        memory_failure_early_kill=_int(kfs, "proc/sys/vm/memory_failure_early_kill"),
        memory_failure_recovery=_int(kfs, "proc/sys/vm/memory_failure_recovery"),
        enable_soft_offline=_int(kfs, "proc/sys/vm/enable_soft_offline"),
        cec=_read_cec(kfs),
    )
