"""The EDAC sysfs source: per-controller, per-DIMM and per-csrow error counters.

Rule: reads counters only (through `KernelFS`); they carry no address, so they feed metrics and
corroboration and never cause an offline. A missing attribute is None, a missing controller tree is
an empty snapshot; nothing here raises.

Layout (drivers/edac/edac_mc_sysfs.c, Documentation/ABI/testing/sysfs-devices-edac; counters are
printed "%u\\n", names "%s\\n", an unset DIMM label is an empty file):
  sys/devices/system/edac/mc/mcN/{mc_name,size_mb,seconds_since_reset,ce_count,ue_count,
                                  ce_noinfo_count,ue_noinfo_count}
  .../mcN/dimmM or rankM (since 3.5; rankM when the driver is csrow based)/{dimm_label,
      dimm_location ("csrow 0 channel 1 \\n"), size (MiB), dimm_mem_type, dimm_dev_type,
      dimm_edac_mode, dimm_ce_count, dimm_ue_count}
  .../mcN/csrowK (CONFIG_EDAC_LEGACY_SYSFS)/{ce_count,ue_count,size_mb,mem_type,edac_mode,
      dev_type,chC_ce_count,chC_dimm_label}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hwpoisond.kernelfs import KernelFS, KernelFSError
from hwpoisond.sources.base import SourceStatus

EDAC_MC_DIR = "sys/devices/system/edac/mc"

_MC_RE = re.compile(r"^mc(\d+)$")
_DIMM_RE = re.compile(r"^(dimm|rank)(\d+)$")
_CSROW_RE = re.compile(r"^csrow(\d+)$")
_CH_CE_RE = re.compile(r"^ch(\d+)_ce_count$")


@dataclass(frozen=True)
class EdacDimm:
    """One `mcN/dimmM` (or `rankM`) directory."""

    index: int
    kind: str  # "dimm" or "rank", as the kernel named the directory
    label: str | None
    location: str | None  # e.g. "csrow 0 channel 1" (the kernel's layer names and indices)
    size_mb: int | None
    mem_type: str | None
    edac_mode: str | None
    ce_count: int | None
    ue_count: int | None


@dataclass(frozen=True)
class EdacCsrowChannel:
    channel: int
    ce_count: int | None
    dimm_label: str | None


@dataclass(frozen=True)
class EdacCsrow:
    """One legacy `mcN/csrowK` directory."""

    csrow: int
    ce_count: int | None
    ue_count: int | None
    size_mb: int | None
    mem_type: str | None
    edac_mode: str | None
    channels: tuple[EdacCsrowChannel, ...]


@dataclass(frozen=True)
class EdacController:
    mc: int
    name: str | None  # mc_name, e.g. "Skylake Socket#0 IMC#0"
    ce_count: int | None
    ue_count: int | None
    ce_noinfo_count: int | None
    ue_noinfo_count: int | None
    size_mb: int | None
    seconds_since_reset: int | None
    dimms: tuple[EdacDimm, ...]
    csrows: tuple[EdacCsrow, ...]


@dataclass(frozen=True)
class EdacSnapshot:
    controllers: tuple[EdacController, ...]


def _int(kfs: KernelFS, kpath: str) -> int | None:
    try:
        return kfs.read_int(kpath, 10)
    except KernelFSError:
        return None


def _text(kfs: KernelFS, kpath: str) -> str | None:
    """The attribute's text, or None when absent or empty (an unset DIMM label reads empty)."""
    try:
        text = kfs.read_text(kpath, 4096).strip()
    except KernelFSError:
        return None
    return text or None


def _listdir(kfs: KernelFS, kpath: str) -> list[str]:
    try:
        return kfs.listdir(kpath)
    except KernelFSError:
        return []


def _numbered(names: Sequence[str], pattern: re.Pattern[str]) -> list[tuple[int, re.Match[str]]]:
    """Entries whose name matches `pattern`, with the number its last group captures, in order."""
    found: list[tuple[int, re.Match[str]]] = []
    for name in names:
        m = pattern.match(name)
        if m is not None:
            found.append((int(m.group(m.lastindex or 0)), m))
    return sorted(found, key=lambda t: t[0])


def _read_dimm(kfs: KernelFS, base: str, index: int, kind: str) -> EdacDimm:
    d = f"{base}/{kind}{index}"
    return EdacDimm(
        index=index,
        kind=kind,
        label=_text(kfs, f"{d}/dimm_label"),
        location=_text(kfs, f"{d}/dimm_location"),
        size_mb=_int(kfs, f"{d}/size"),
        mem_type=_text(kfs, f"{d}/dimm_mem_type"),
        edac_mode=_text(kfs, f"{d}/dimm_edac_mode"),
        ce_count=_int(kfs, f"{d}/dimm_ce_count"),
        ue_count=_int(kfs, f"{d}/dimm_ue_count"),
    )


def _read_csrow(kfs: KernelFS, base: str, index: int) -> EdacCsrow:
    d = f"{base}/csrow{index}"
    names = _listdir(kfs, d)
    channels = tuple(
        EdacCsrowChannel(
            channel=ch,
            ce_count=_int(kfs, f"{d}/ch{ch}_ce_count"),
            dimm_label=_text(kfs, f"{d}/ch{ch}_dimm_label"),
        )
        for ch, _ in _numbered(names, _CH_CE_RE)
    )
    return EdacCsrow(
        csrow=index,
        ce_count=_int(kfs, f"{d}/ce_count"),
        ue_count=_int(kfs, f"{d}/ue_count"),
        size_mb=_int(kfs, f"{d}/size_mb"),
        mem_type=_text(kfs, f"{d}/mem_type"),
        edac_mode=_text(kfs, f"{d}/edac_mode"),
        channels=channels,
    )


def _read_controller(kfs: KernelFS, mc: int) -> EdacController:
    base = f"{EDAC_MC_DIR}/mc{mc}"
    names = _listdir(kfs, base)
    dimms = tuple(_read_dimm(kfs, base, i, m.group(1)) for i, m in _numbered(names, _DIMM_RE))
    csrows = tuple(_read_csrow(kfs, base, i) for i, _ in _numbered(names, _CSROW_RE))
    return EdacController(
        mc=mc,
        name=_text(kfs, f"{base}/mc_name"),
        ce_count=_int(kfs, f"{base}/ce_count"),
        ue_count=_int(kfs, f"{base}/ue_count"),
        ce_noinfo_count=_int(kfs, f"{base}/ce_noinfo_count"),
        ue_noinfo_count=_int(kfs, f"{base}/ue_noinfo_count"),
        size_mb=_int(kfs, f"{base}/size_mb"),
        seconds_since_reset=_int(kfs, f"{base}/seconds_since_reset"),
        dimms=dimms,
        csrows=csrows,
    )


def read_edac(kfs: KernelFS, controllers: Sequence[str] | None = None) -> EdacSnapshot:
    """Every controller's counters. `controllers` names the `mcN` directories to read (as udev
    enumerated them); by default the directory is listed."""
    names = list(controllers) if controllers is not None else _listdir(kfs, EDAC_MC_DIR)
    mcs = [i for i, _ in _numbered(names, _MC_RE)]
    # A controller whose directory vanished between listing and reading (driver unloaded) is
    # left out rather than reported with every counter None.
    return EdacSnapshot(
        tuple(_read_controller(kfs, mc) for mc in mcs if kfs.is_dir(f"{EDAC_MC_DIR}/mc{mc}"))
    )


class EdacSource:
    """EDAC counters on demand (`poll()`), and, on the live machine, a udev monitor whose fd turns
    readable when a memory controller appears or goes (driver load/unload); the daemon then
    polls at once instead of waiting for its timer. In a fake root there is no udev: every
    `poll()` rescans the tree."""

    name = "edac"

    def __init__(self, kfs: KernelFS) -> None:
        self.kfs = kfs
        self._monitor: Any = None  # pyudev.Monitor on the live machine
        self._context: Any = None
        self._status = SourceStatus(self.name, False, "not opened yet")
        self._udev_note = ""

    def open(self) -> SourceStatus:
        if self.kfs.is_live and self._monitor is None:
            try:
                import pyudev  # noqa: PLC0415 - only the live machine needs udev

                self._context = pyudev.Context()
                monitor = pyudev.Monitor.from_netlink(self._context)
                monitor.filter_by("edac")
                monitor.start()
                self._monitor = monitor
                self._udev_note = ""
            except (ImportError, OSError) as e:
                self._udev_note = f"; udev unavailable ({e}), rescanning on each poll"
        self.poll()
        return self._status

    def fileno(self) -> int | None:
        return None if self._monitor is None else int(self._monitor.fileno())

    def read_changes(self) -> bool:
        """Drain pending udev events; True when a controller was added or removed."""
        changed = False
        if self._monitor is None:
            return changed
        while True:
            device = self._monitor.poll(timeout=0)
            if device is None:
                return changed
            if _MC_RE.match(device.sys_name or "") and device.action in ("add", "remove"):
                changed = True

    def _controller_names(self) -> list[str] | None:
        if self._context is None:
            return None
        return [
            d.sys_name
            for d in self._context.list_devices(subsystem="edac")
            if _MC_RE.match(d.sys_name or "")
        ]

    def poll(self) -> EdacSnapshot:
        snapshot = read_edac(self.kfs, self._controller_names())
        if snapshot.controllers:
            names = ", ".join(
                f"mc{c.mc}" + (f" ({c.name})" if c.name else "") for c in snapshot.controllers
            )
            self._status = SourceStatus(self.name, True, f"memory controllers: {names}")
        elif self.kfs.is_dir(EDAC_MC_DIR):
            self._status = SourceStatus(
                self.name, False, f"no memory controller registered under {EDAC_MC_DIR}"
            )
        else:
            self._status = SourceStatus(
                self.name, False, f"{EDAC_MC_DIR} absent: no EDAC driver loaded"
            )
        if self._udev_note:
            self._status = SourceStatus(
                self.name, self._status.available, self._status.reason + self._udev_note
            )
        return snapshot

    def status(self) -> SourceStatus:
        return self._status

    def close(self) -> None:
        self._monitor = None  # pyudev closes the netlink socket when the monitor is collected
        self._context = None
        self._status = SourceStatus(self.name, False, "closed")
