"""The offline executor: writes one physical address to the kernel and proves what happened.

Rule: carries out an `offline` Decision exactly once and reports what the kernel answered and
what /proc/kpageflags and /proc/meminfo show afterwards; it never decides, retries or sleeps.
Every kernel path goes through `KernelFS`.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Literal

from hwpoisond.core.model import PAGE_SHIFT, ActionResult, Decision, ResultKind
from hwpoisond.kernelfs import KernelFS, KernelFSError

SOFT_OFFLINE_PAGE = "sys/devices/system/memory/soft_offline_page"
HARD_OFFLINE_PAGE = "sys/devices/system/memory/hard_offline_page"
KPAGEFLAGS = "proc/kpageflags"
#: Documentation/admin-guide/mm/memory-hotplug.rst: memory is exposed in blocks of
#: `block_size_bytes` (hex, no 0x); block N, directory `memoryN`, spans
#: [N * block_size, (N + 1) * block_size) and exists only where the machine has memory.
#: drivers/base/memory.c provides both these and soft_offline_page, so a kernel with one has both.
MEMORY_DIR = "sys/devices/system/memory"
MEMORY_BLOCK_SIZE = MEMORY_DIR + "/block_size_bytes"
MEMINFO = "proc/meminfo"

#: include/uapi/linux/kernel-page-flags.h: `#define KPF_HWPOISON 19`; /proc/kpageflags holds one
#: little-endian u64 of these bits per pfn (Documentation/admin-guide/mm/pagemap.rst).
KPF_HWPOISON = 19
KPAGEFLAGS_ENTRY_BYTES = 8

#: A soft-offlined 4 KiB page adds 4 kB to HardwareCorrupted (mm/memory-failure.c counts
#: num_poisoned_pages; fs/proc/meminfo.c prints it in kB).
PAGE_SIZE_KB = 4

#: errno.EHWPOISON (133 on Linux): memory_failure() answers it for a page that is already
#: poisoned, and hard_offline_page_store() passes it to the writer (mm/memory-failure.c).
EHWPOISON = getattr(errno, "EHWPOISON", 133)

ExecutorMode = Literal["enforce", "account"]


@dataclass(frozen=True, slots=True)
class OfflineReport:
    """One executed decision: the `ActionResult` the core receives, plus the evidence the store
    records (HardwareCorrupted before/after in kB, and a one-line human `detail`)."""

    result: ActionResult
    hardware_corrupted_before_kb: int | None
    hardware_corrupted_after_kb: int | None
    detail: str

    @property
    def hardware_corrupted_delta_kb(self) -> int | None:
        if self.hardware_corrupted_before_kb is None or self.hardware_corrupted_after_kb is None:
            return None
        return self.hardware_corrupted_after_kb - self.hardware_corrupted_before_kb


def errno_result(err: int) -> ResultKind:
    """The result kind for the errno a write to {soft,hard}_offline_page answered.

    drivers/base/memory.c soft_offline_page_store(): EPERM without CAP_SYS_ADMIN, EINVAL when
    kstrtoull() rejects the text; mm/memory-failure.c soft_offline_page(): ENXIO (pfn not
    valid), EIO (not an online page, or an unhandlable page type), EBUSY (isolation/migration
    failed), EOPNOTSUPP (vm.enable_soft_offline=0, 6.11+). A missing file (ENOENT) means a kernel
    built without CONFIG_MEMORY_FAILURE; EOPNOTSUPP means it is switched off: both unsupported.
    """
    if err in (errno.ENOENT, errno.EOPNOTSUPP):
        return "unsupported"
    if err == EHWPOISON:
        return "already_poisoned"
    return "failed"


def parse_hardware_corrupted_kb(meminfo_text: str) -> int | None:
    """`HardwareCorrupted:      4 kB` from /proc/meminfo (fs/proc/meminfo.c), or None."""
    for line in meminfo_text.splitlines():
        if line.startswith("HardwareCorrupted:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1])
            return None
    return None


class Offliner:
    """Soft/hard offline through sysfs, verified through /proc/kpageflags.

    `mode="account"` records what would have been done and writes nothing; so does a decision
    whose action is "account".
    """

    def __init__(self, kfs: KernelFS, mode: ExecutorMode = "enforce") -> None:
        self.kfs = kfs
        self.mode: ExecutorMode = mode
        self._block_size_bytes: int | None = None

    def in_memory_map(self, pfn: int) -> bool | None:
        """Whether `pfn` lies in a memory block the kernel lists; None when there is no memory
        block directory to ask (a fake root without one: nothing to check against)."""
        if self._block_size_bytes is None:
            try:
                size = self.kfs.read_int(MEMORY_BLOCK_SIZE, 16)
            except (KernelFSError, ValueError):
                return None
            if size <= 0:
                return None
            self._block_size_bytes = size
        block = (pfn << PAGE_SHIFT) // self._block_size_bytes
        return self.kfs.is_dir(f"{MEMORY_DIR}/memory{block}")

    # -- observation ------------------------------------------------------------------------------

    def is_poisoned(self, pfn: int) -> bool | None:
        """Whether /proc/kpageflags shows HWPOISON for `pfn`; None when it cannot be read (no
        file, no permission, pfn beyond the end)."""
        try:
            raw = self.kfs.pread(KPAGEFLAGS, pfn * KPAGEFLAGS_ENTRY_BYTES, KPAGEFLAGS_ENTRY_BYTES)
        except KernelFSError:
            return None
        if len(raw) != KPAGEFLAGS_ENTRY_BYTES:
            return None
        return bool((int.from_bytes(raw, "little") >> KPF_HWPOISON) & 1)

    def hardware_corrupted_kb(self) -> int | None:
        try:
            return parse_hardware_corrupted_kb(self.kfs.read_text(MEMINFO))
        except KernelFSError:
            return None

    def supported(self, action: Literal["soft", "hard"] = "soft") -> bool:
        """Whether the kernel exposes the sysfs file for `action` (CONFIG_MEMORY_FAILURE)."""
        return self.kfs.exists(SOFT_OFFLINE_PAGE if action == "soft" else HARD_OFFLINE_PAGE)

    # -- action -----------------------------------------------------------------------------------

    def execute(self, decision: Decision, at: float) -> OfflineReport:
        """Carry out one `offline` decision. `at` is the wall-clock time recorded in the result."""
        if decision.kind != "offline" or decision.pfn is None:
            raise ValueError(f"not an offline decision: {decision!r}")
        pfn = decision.pfn
        action = decision.action or "soft"
        before_kb = self.hardware_corrupted_kb()

        def report(
            result: ResultKind,
            detail: str,
            err: int | None = None,
            verified: bool | None = None,
            after_kb: int | None = None,
        ) -> OfflineReport:
            return OfflineReport(
                ActionResult(
                    pfn=pfn,
                    action=action,
                    result=result,
                    at=at,
                    errno=err,
                    verified=verified,
                    attempt=decision.attempt,
                ),
                before_kb,
                before_kb if after_kb is None else after_kb,
                detail,
            )

        # Never write what cannot be a retirable page: drivers report page 0 for an address they
        # do not know, and an address beyond the machine's memory is a damaged or forged report.
        if pfn == 0 or self.in_memory_map(pfn) is False:
            where = "pfn 0 (an unknown address)" if pfn == 0 else "outside the memory map"
            return report(
                "unsupported",
                f"pfn {pfn:#x} is {where}: nothing written",
                err=errno.ENXIO,
            )
        poisoned_before = self.is_poisoned(pfn)
        if action == "account" or self.mode == "account":
            would = "soft" if action == "account" else action
            return report(
                "accounted",
                f"account only: would {would}-offline pfn {pfn:#x}",
                verified=poisoned_before,
            )
        # The kernel answers success for a page that is already poisoned (soft_offline_page()
        # logs "page already poisoned" and returns 0), so success would prove nothing: look first.
        if poisoned_before:
            return report(
                "already_poisoned",
                f"pfn {pfn:#x} already has HWPOISON set; nothing written",
                verified=True,
            )

        kpath = SOFT_OFFLINE_PAGE if action == "soft" else HARD_OFFLINE_PAGE
        phys_addr = pfn << PAGE_SHIFT
        try:
            # drivers/base/memory.c parses with kstrtoull(buf, 0, …): "%#x" is accepted.
            self.kfs.write_text(kpath, f"{phys_addr:#x}")
        except KernelFSError as e:
            err = e.errno or errno.EIO
            kind = errno_result(err)
            verified = self.is_poisoned(pfn) if kind == "already_poisoned" else None
            return report(
                kind,
                f"{action} offline of {phys_addr:#x} refused: {e.errno_name} ({e.strerror})",
                err=err,
                verified=verified,
                after_kb=self.hardware_corrupted_kb(),
            )

        after_kb = self.hardware_corrupted_kb()
        poisoned_after = self.is_poisoned(pfn)
        if poisoned_after is False:
            # Success from the write, yet the page is in use: the kernel did not retire it.
            return report(
                "failed",
                f"{action} offline of {phys_addr:#x} answered success but HWPOISON is not set",
                verified=False,
                after_kb=after_kb,
            )
        delta = None if before_kb is None or after_kb is None else after_kb - before_kb
        evidence = (
            "kpageflags unreadable" if poisoned_after is None else "HWPOISON set in kpageflags"
        )
        if delta is not None:
            evidence += f", HardwareCorrupted {delta:+d} kB"
        return report(
            "offlined",
            f"{action}-offlined pfn {pfn:#x} ({evidence})",
            verified=poisoned_after,
            after_kb=after_kb,
        )
