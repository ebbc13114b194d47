"""The real daemon over a fake root whose soft_offline_page behaves like the kernel's store.

Rule: test support only. `python -m tests.integration.synckernel run ...` is `python -m hwpoisond
run ...` with one difference: a write to the fake root's soft_offline_page does what the kernel
does before write(2) returns (mm/memory-failure.c soft_offline_page(): the page is migrated and
carries PG_hwpoison when the store function returns 0; a page that already carries it answers 0
again, "page already poisoned"). A plain file or FIFO would return first and poison later, so a
daemon verifying its write would see an unpoisoned page that the real kernel never shows.

Each write is also logged, one pfn per line, to <root>/kernel-writes, so a test can count what
reached the "kernel": HWPOISON is set first and the log line appended second, and a kill -9
between the two can only hide a write that did happen (its page is poisoned), never invent one.
"""

from __future__ import annotations

import os
import sys

from hwpoisond import cli
from hwpoisond.kernelfs import KernelFS

SOFT_OFFLINE = "sys/devices/system/memory/soft_offline_page"
WRITES_LOG = "kernel-writes"
KPF_HWPOISON = 19  # include/uapi/linux/kernel-page-flags.h
PAGE_SHIFT = 12

_plain_write_text = KernelFS.write_text


def _write_text(self: KernelFS, kpath: str, text: str) -> None:
    if kpath.strip("/") != SOFT_OFFLINE:
        _plain_write_text(self, kpath, text)
        return
    # The kernel parses the address with kstrtoull(buf, 0, ...): "0x..." as the daemon writes it.
    pfn = int(text.strip(), 0) >> PAGE_SHIFT
    with open(self.root / "proc/kpageflags", "r+b") as f:
        f.seek(pfn * 8)
        flags = int.from_bytes(f.read(8) or b"\0" * 8, "little")
        f.seek(pfn * 8)
        f.write((flags | 1 << KPF_HWPOISON).to_bytes(8, "little"))
    fd = os.open(self.root / WRITES_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{pfn}\n".encode())
    finally:
        os.close(fd)


def writes(root: os.PathLike[str] | str) -> list[int]:
    """Every pfn the daemons wrote to soft_offline_page, in order."""
    try:
        with open(os.path.join(root, WRITES_LOG)) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def poisoned(root: os.PathLike[str] | str, pfns: set[int]) -> set[int]:
    """Those of `pfns` whose kpageflags entry carries HWPOISON."""
    out = set()
    with open(os.path.join(root, "proc/kpageflags"), "rb") as f:
        for pfn in pfns:
            f.seek(pfn * 8)
            if int.from_bytes(f.read(8) or b"\0" * 8, "little") >> KPF_HWPOISON & 1:
                out.add(pfn)
    return out


if __name__ == "__main__":
    KernelFS.write_text = _write_text  # type: ignore[method-assign]
    sys.exit(cli.main(sys.argv[1:]))
