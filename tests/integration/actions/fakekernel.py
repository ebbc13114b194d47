"""A fake machine for the executor tests: a root directory tree plus the kernel's side of
soft_offline_page, emulated so that tests can see a page become poisoned.

Rule: test helper; builds fake roots and emulates documented kernel behaviour, nothing else.

What is real and what is emulated:
- real: every file the code under test reads (proc/kpageflags as 8 little-endian bytes per pfn,
  proc/meminfo, boot_id, SMBIOS raw entries) and the open/write(2) of soft_offline_page, which
  goes to a real file in the fake root (a missing file gives the OS's real ENOENT);
- emulated: what the kernel does on that write, following drivers/base/memory.c
  soft_offline_page_store() and mm/memory-failure.c soft_offline_page() (Linux 6.1): kstrtoull
  with base 0 (EINVAL), pfn >> PAGE_SHIFT, pfn not valid (ENXIO), isolation/migration failure
  (EBUSY), vm.enable_soft_offline=0 (EOPNOTSUPP, 6.11+), already poisoned (success, no change),
  else HWPOISON set and HardwareCorrupted +4 kB.
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

from hwpoisond.actions.offliner import HARD_OFFLINE_PAGE, KPF_HWPOISON, SOFT_OFFLINE_PAGE
from hwpoisond.kernelfs import KernelFS, KernelFSError

MEMINFO_TEMPLATE = """MemTotal:       {mem_total_kb:>8} kB
MemFree:        12345678 kB
MemAvailable:   23456789 kB
Buffers:          123456 kB
Cached:          3456789 kB
HardwareCorrupted: {hw_kb:>5} kB
AnonHugePages:         0 kB
"""


def smbios_type17(
    locator: str,
    bank_locator: str,
    size_mb: int,
    manufacturer: str,
    serial: str,
    part_number: str,
) -> bytes:
    """A type 17 structure (SMBIOS 3.x layout, 0x54 bytes formatted) with its string-set, as
    /sys/firmware/dmi/entries/17-N/raw shows it. `size_mb` 0 = empty slot; >= 0x7FFF uses the
    Extended Size field."""
    length = 0x54
    body = bytearray(length)
    body[0] = 17
    body[1] = length
    struct.pack_into("<H", body, 0x02, 0x1100)  # handle
    struct.pack_into("<H", body, 0x04, 0x1000)  # physical memory array handle
    struct.pack_into("<H", body, 0x06, 0xFFFE)  # no error information
    struct.pack_into("<HH", body, 0x08, 72, 64)  # total width (with ECC), data width
    if size_mb >= 0x7FFF:
        struct.pack_into("<H", body, 0x0C, 0x7FFF)
        struct.pack_into("<I", body, 0x1C, size_mb)
    else:
        struct.pack_into("<H", body, 0x0C, size_mb)
    body[0x0E] = 0x09  # form factor: DIMM
    strings: list[str] = []

    def add(text: str) -> int:
        if not text:
            return 0
        strings.append(text)
        return len(strings)

    body[0x10] = add(locator)
    body[0x11] = add(bank_locator)
    body[0x12] = 0x1A  # DDR4
    struct.pack_into("<H", body, 0x15, 3200)  # speed MT/s
    body[0x17] = add(manufacturer)
    body[0x18] = add(serial)
    body[0x19] = add("")
    body[0x1A] = add(part_number)
    tail = b"".join(s.encode() + b"\x00" for s in strings) + b"\x00" if strings else b"\x00\x00"
    return bytes(body) + tail


class FakeMachine:
    """A fake root with kpageflags, meminfo, boot_id and the memory sysfs directory."""

    def __init__(
        self,
        root: Path,
        pages: int = 1 << 16,
        mem_total_kb: int = 32 * 1024 * 1024,
        boot_id: str = "3f0e8a52-8c1e-4d0b-9a55-5b7f6f2b9c01",
        offline_files: bool = True,
    ) -> None:
        self.root = root
        self.pages = pages
        self.mem_total_kb = mem_total_kb
        self.busy_pfns: set[int] = set()
        self.enable_soft_offline = True
        #: Every text written to soft/hard_offline_page and accepted by the emulated kernel.
        self.writes: list[str] = []
        (root / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
        (root / "sys/devices/system/memory").mkdir(parents=True, exist_ok=True)
        with open(root / "proc/kpageflags", "wb") as f:
            f.truncate(pages * 8)  # sparse: every pfn's flags start at 0
        self.set_hardware_corrupted_kb(0)
        self.set_boot_id(boot_id)
        if offline_files:
            for name in (SOFT_OFFLINE_PAGE, HARD_OFFLINE_PAGE):
                (root / name).touch(mode=0o200)

    # -- state ------------------------------------------------------------------------------------

    def flags(self, pfn: int) -> int:
        with open(self.root / "proc/kpageflags", "rb") as f:
            f.seek(pfn * 8)
            return int.from_bytes(f.read(8), "little")

    def set_flags(self, pfn: int, value: int) -> None:
        with open(self.root / "proc/kpageflags", "r+b") as f:
            f.seek(pfn * 8)
            f.write(value.to_bytes(8, "little"))
            f.flush()
            os.fsync(f.fileno())

    def poisoned(self, pfn: int) -> bool:
        return bool(self.flags(pfn) >> KPF_HWPOISON & 1)

    def set_poisoned(self, pfn: int, on: bool = True) -> None:
        bit = 1 << KPF_HWPOISON
        self.set_flags(pfn, (self.flags(pfn) | bit) if on else (self.flags(pfn) & ~bit))

    def hardware_corrupted_kb(self) -> int:
        for line in (self.root / "proc/meminfo").read_text().splitlines():
            if line.startswith("HardwareCorrupted:"):
                return int(line.split()[1])
        raise AssertionError("no HardwareCorrupted line")

    def set_hardware_corrupted_kb(self, kb: int) -> None:
        text = MEMINFO_TEMPLATE.format(mem_total_kb=self.mem_total_kb, hw_kb=kb)
        tmp = self.root / "proc/meminfo.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.root / "proc/meminfo")

    def set_boot_id(self, boot_id: str) -> None:
        (self.root / "proc/sys/kernel/random/boot_id").write_text(boot_id + "\n")

    def reboot(self, boot_id: str) -> None:
        """Poison lives in kernel RAM only: a reboot clears every HWPOISON bit."""
        path = self.root / "proc/kpageflags"
        data = bytearray(path.read_bytes())
        byte, mask = KPF_HWPOISON // 8, 1 << (KPF_HWPOISON % 8)
        for offset in range(byte, len(data), 8):
            data[offset] &= ~mask & 0xFF
        path.write_bytes(bytes(data))
        self.set_hardware_corrupted_kb(0)
        self.set_boot_id(boot_id)

    def add_dimm(self, index: int, raw: bytes) -> None:
        d = self.root / f"sys/firmware/dmi/entries/17-{index}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "raw").write_bytes(raw)

    # -- the kernel's side of soft_offline_page ---------------------------------------------------

    def kernel_offline(self, text: str) -> int:
        """Apply one write to soft/hard_offline_page; returns 0 or the errno the kernel answers."""
        try:
            phys_addr = int(text.strip(), 0)  # kstrtoull(buf, 0, …)
        except ValueError:
            return errno.EINVAL
        pfn = phys_addr >> 12
        if pfn >= self.pages:
            return errno.ENXIO
        if not self.enable_soft_offline:
            return errno.EOPNOTSUPP
        if pfn in self.busy_pfns:
            return errno.EBUSY
        self.writes.append(text)
        if self.poisoned(pfn):
            return 0  # soft_offline_page(): "page already poisoned", returns 0
        self.set_poisoned(pfn)
        self.set_hardware_corrupted_kb(self.hardware_corrupted_kb() + 4)
        return 0


class FakeKernelFS(KernelFS):
    """KernelFS over a FakeMachine's root whose offline writes also reach the emulated kernel.
    The write itself is the real KernelFS.write_text (open + one write(2) of a real file)."""

    def __init__(self, machine: FakeMachine) -> None:
        super().__init__(machine.root)
        self.machine = machine

    def write_text(self, kpath: str, text: str) -> None:
        super().write_text(kpath, text)
        if kpath.lstrip("/") in (SOFT_OFFLINE_PAGE, HARD_OFFLINE_PAGE):
            err = self.machine.kernel_offline(text)
            if err:
                raise KernelFSError(err, kpath, "write")
