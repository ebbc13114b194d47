"""The memory fingerprint: which DIMMs are installed, so a reboot can tell "same memory" apart.

Rule: reads SMBIOS type 17 entries (or the EDAC layout) and MemTotal through `KernelFS`, parses
them, and returns a stable digest plus a human description; it never writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from hwpoisond.kernelfs import KernelFS, KernelFSError

DMI_ENTRIES = "sys/firmware/dmi/entries"
EDAC_MC = "sys/devices/system/edac/mc"
MEMINFO = "proc/meminfo"

SMBIOS_TYPE_MEMORY_DEVICE = 17

# SMBIOS Reference Specification (DMTF DSP0134), "Memory Device (Type 17)": byte offsets into
# the formatted area. String fields hold a 1-based index into the strings that follow the
# formatted area (0 = no string); fields past `length` are absent in older SMBIOS versions.
_T17_SIZE = 0x0C  # WORD: 0 = slot empty, 0xFFFF = unknown, 0x7FFF = see Extended Size;
#                       bit 15 set = KiB units, clear = MiB
_T17_DEVICE_LOCATOR = 0x10
_T17_BANK_LOCATOR = 0x11
_T17_MANUFACTURER = 0x17  # 2.3+
_T17_SERIAL_NUMBER = 0x18  # 2.3+
_T17_PART_NUMBER = 0x1A  # 2.3+
_T17_EXTENDED_SIZE = 0x1C  # DWORD, MiB in bits 30:0 (2.7+)

FingerprintSource = Literal["smbios", "edac", "meminfo"]


@dataclass(frozen=True, slots=True)
class MemoryDevice:
    """One populated DIMM slot."""

    locator: str
    bank_locator: str
    size_mb: int | None
    manufacturer: str
    serial: str
    part_number: str


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What memory is installed. `digest` is stable across boots of the same hardware."""

    source: FingerprintSource
    digest: str
    description: str
    devices: tuple[MemoryDevice, ...]
    mem_total_gib: int | None

    def to_plain(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "digest": self.digest,
            "description": self.description,
            "mem_total_gib": self.mem_total_gib,
            "devices": [
                {
                    "locator": d.locator,
                    "bank_locator": d.bank_locator,
                    "size_mb": d.size_mb,
                    "manufacturer": d.manufacturer,
                    "serial": d.serial,
                    "part_number": d.part_number,
                }
                for d in self.devices
            ],
        }


def _smbios_string(strings: list[bytes], index: int) -> str:
    if index <= 0 or index > len(strings):
        return ""
    return strings[index - 1].decode("ascii", "replace").strip()


def parse_smbios_memory_device(raw: bytes) -> MemoryDevice | None:
    """A populated type 17 structure → MemoryDevice; None for an empty slot or a malformed entry.

    `raw` is the formatted area followed by the string-set, each string NUL-terminated and the
    set ending in a second NUL (drivers/firmware/dmi-sysfs.c exports entries like this)."""
    if len(raw) < 4 or raw[0] != SMBIOS_TYPE_MEMORY_DEVICE:
        return None
    length = raw[1]
    if length < _T17_BANK_LOCATOR + 1 or len(raw) < length:
        return None
    formatted, tail = raw[:length], raw[length:]
    end = tail.find(b"\x00\x00")
    # "\0\0" right after the formatted area: a structure without strings.
    body = tail if end < 0 else tail[:end]
    strings = body.split(b"\x00") if body else []

    def byte_at(offset: int) -> int:
        return formatted[offset] if offset < length else 0

    size_word = int.from_bytes(formatted[_T17_SIZE : _T17_SIZE + 2], "little")
    if size_word == 0:
        return None
    size_mb: int | None
    if size_word == 0xFFFF:
        size_mb = None
    elif size_word == 0x7FFF and length >= _T17_EXTENDED_SIZE + 4:
        ext = int.from_bytes(formatted[_T17_EXTENDED_SIZE : _T17_EXTENDED_SIZE + 4], "little")
        size_mb = ext & 0x7FFFFFFF
    elif size_word & 0x8000:
        size_mb = (size_word & 0x7FFF) // 1024
    else:
        size_mb = size_word
    return MemoryDevice(
        locator=_smbios_string(strings, byte_at(_T17_DEVICE_LOCATOR)),
        bank_locator=_smbios_string(strings, byte_at(_T17_BANK_LOCATOR)),
        size_mb=size_mb,
        manufacturer=_smbios_string(strings, byte_at(_T17_MANUFACTURER)),
        serial=_smbios_string(strings, byte_at(_T17_SERIAL_NUMBER)),
        part_number=_smbios_string(strings, byte_at(_T17_PART_NUMBER)),
    )


def _smbios_devices(kfs: KernelFS) -> list[MemoryDevice]:
    try:
        names = kfs.listdir(DMI_ENTRIES)
    except KernelFSError:
        return []
    devices = []
    for name in names:
        if not name.startswith(f"{SMBIOS_TYPE_MEMORY_DEVICE}-"):
            continue
        try:
            raw = kfs.read_bytes(f"{DMI_ENTRIES}/{name}/raw", 4096)
        except KernelFSError:
            continue
        device = parse_smbios_memory_device(raw)
        if device is not None:
            devices.append(device)
    return devices


def _read(kfs: KernelFS, kpath: str) -> str:
    try:
        return kfs.read_text(kpath, 4096).strip()
    except KernelFSError:
        return ""


def _edac_devices(kfs: KernelFS) -> list[MemoryDevice]:
    """The EDAC layout: mc*/dimm* (size in MB, dimm_label, dimm_location), else the legacy
    mc*/csrow* (size_mb) (Documentation/admin-guide/ras.rst, "EDAC sysfs")."""
    try:
        mcs = [m for m in kfs.listdir(EDAC_MC) if re.fullmatch(r"mc\d+", m)]
    except KernelFSError:
        return []
    devices = []
    for mc in mcs:
        try:
            entries = kfs.listdir(f"{EDAC_MC}/{mc}")
        except KernelFSError:
            continue
        dimms = [e for e in entries if re.fullmatch(r"(dimm|rank)\d+", e)]
        rows = dimms or [e for e in entries if re.fullmatch(r"csrow\d+", e)]
        for d in rows:
            base = f"{EDAC_MC}/{mc}/{d}"
            size = _read(kfs, f"{base}/size" if dimms else f"{base}/size_mb")
            devices.append(
                MemoryDevice(
                    locator=f"{mc}/{d}",
                    bank_locator=_read(kfs, f"{base}/dimm_location"),
                    size_mb=int(size) if size.isdigit() else None,
                    manufacturer="",
                    serial="",
                    part_number=_read(kfs, f"{base}/dimm_label"),
                )
            )
    return devices


def mem_total_gib(kfs: KernelFS) -> int | None:
    """MemTotal rounded to whole GiB: MemTotal moves by megabytes between kernels (reserved
    memory, crashkernel=), which must not read as "different DIMMs"."""
    try:
        text = kfs.read_text(MEMINFO)
    except KernelFSError:
        return None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "MemTotal:" and fields[1].isdigit():
            return round(int(fields[1]) / (1024 * 1024))
    return None


def read_fingerprint(kfs: KernelFS) -> Fingerprint:
    """The fingerprint of the memory installed under `kfs`: SMBIOS serials and part numbers when
    the firmware provides them, else the EDAC layout and sizes, else only the total."""
    total = mem_total_gib(kfs)
    devices = _smbios_devices(kfs)
    source: FingerprintSource = "smbios"
    if not devices:
        devices, source = _edac_devices(kfs), "edac"
    if not devices:
        source = "meminfo"
    devices.sort(key=lambda d: (d.locator, d.bank_locator, d.serial))
    canonical = json.dumps(
        {
            "source": source,
            "mem_total_gib": total,
            "devices": [
                [d.locator, d.bank_locator, d.size_mb, d.manufacturer, d.serial, d.part_number]
                for d in devices
            ],
        },
        separators=(",", ":"),
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    parts = []
    for d in devices:
        size = f"{d.size_mb // 1024} GiB" if d.size_mb and d.size_mb >= 1024 else f"{d.size_mb} MB"
        ident = " ".join(x for x in (d.manufacturer, d.part_number) if x)
        serial = f" s/n {d.serial}" if d.serial else ""
        parts.append(f"{d.locator}: {size}{' ' + ident if ident else ''}{serial}")
    head = f"{len(devices)} DIMMs ({source})" if devices else "no DIMM inventory"
    total_text = f"{total} GiB total" if total is not None else "total unknown"
    description = f"{head}, {total_text}" + ("; " + "; ".join(parts) if parts else "")
    return Fingerprint(source, digest, description, tuple(devices), total)
