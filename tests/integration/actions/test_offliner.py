"""The offline executor against fake roots.

Each test says what it proves. "Emulated kernel" tests (FakeKernelFS) prove the executor's
reading of the kernel's answers (errno mapping, kpageflags and HardwareCorrupted verification);
"real file" tests prove that errors the OS really raises on the real write(2) reach the result
with their errno intact.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from hwpoisond.actions.offliner import (
    HARD_OFFLINE_PAGE,
    SOFT_OFFLINE_PAGE,
    Offliner,
    parse_hardware_corrupted_kb,
)
from hwpoisond.core.model import Decision
from hwpoisond.kernelfs import KernelFS
from tests.integration.actions.fakekernel import FakeKernelFS, FakeMachine

AT = 1_700_000_000.0


def offline(pfn: int, action: str = "soft", attempt: int = 1) -> Decision:
    return Decision(
        kind="offline",
        at=AT,
        reason="2 CEs in 24h",
        pfn=pfn,
        action=action,  # type: ignore[arg-type]
        attempt=attempt,
    )


def test_soft_offline_is_written_as_hex_phys_addr_and_verified(
    machine: FakeMachine, kfs: FakeKernelFS
) -> None:
    # Proves: the write is "%#x" of pfn << 12, and success is confirmed from kpageflags bit 19
    # and a +4 kB HardwareCorrupted delta (emulated kernel).
    report = Offliner(kfs).execute(offline(0x1234, attempt=2), AT)
    assert machine.writes == ["0x1234000"]
    assert machine.poisoned(0x1234)
    r = report.result
    assert (r.pfn, r.action, r.result, r.errno, r.verified, r.attempt) == (
        0x1234,
        "soft",
        "offlined",
        None,
        True,
        2,
    )
    assert report.hardware_corrupted_delta_kb == 4
    assert "HWPOISON set" in report.detail


def test_already_poisoned_page_is_recognised_and_not_written(
    machine: FakeMachine, kfs: FakeKernelFS
) -> None:
    # Proves: the executor looks before it writes; the kernel would answer success for this
    # page, so without the look the result would wrongly say "offlined".
    machine.set_poisoned(0x42)
    report = Offliner(kfs).execute(offline(0x42), AT)
    assert report.result.result == "already_poisoned"
    assert report.result.verified is True
    assert machine.writes == []
    assert (machine.root / SOFT_OFFLINE_PAGE).read_bytes() == b""


def test_success_without_poison_is_a_failure(machine: FakeMachine) -> None:
    # Real file, real write: the plain file accepts the bytes (success), but nothing poisons the
    # page. Proves that write success alone is never taken as an offline.
    report = Offliner(KernelFS(machine.root)).execute(offline(0x99), AT)
    assert (machine.root / SOFT_OFFLINE_PAGE).read_text() == "0x99000"
    assert report.result.result == "failed"
    assert report.result.verified is False
    assert report.result.errno is None
    assert report.hardware_corrupted_delta_kb == 0


def test_kernel_errnos_are_kept(machine: FakeMachine, kfs: FakeKernelFS) -> None:
    # Emulated kernel answers EBUSY (migration failed), ENXIO (no such pfn), EOPNOTSUPP
    # (vm.enable_soft_offline=0); each errno reaches the result unchanged.
    machine.busy_pfns.add(0x10)
    offliner = Offliner(kfs)
    busy = offliner.execute(offline(0x10), AT).result
    assert (busy.result, busy.errno, busy.verified) == ("failed", errno.EBUSY, None)
    nxio = offliner.execute(offline(machine.pages + 5), AT).result
    assert (nxio.result, nxio.errno) == ("failed", errno.ENXIO)
    machine.enable_soft_offline = False
    off = offliner.execute(offline(0x11), AT).result
    assert (off.result, off.errno) == ("unsupported", errno.EOPNOTSUPP)
    assert not machine.poisoned(0x10) and not machine.poisoned(0x11)


def test_missing_sysfs_file_is_unsupported(tmp_path: Path) -> None:
    # Real ENOENT from open(2): a kernel without CONFIG_MEMORY_FAILURE has no such file.
    machine = FakeMachine(tmp_path / "root", offline_files=False)
    offliner = Offliner(KernelFS(machine.root))
    assert not offliner.supported("soft")
    r = offliner.execute(offline(0x5), AT).result
    assert (r.result, r.errno) == ("unsupported", errno.ENOENT)


def test_real_os_errors_keep_their_errno(machine: FakeMachine) -> None:
    # Real write errors: soft_offline_page as a directory (EISDIR at open) and as a /dev/full
    # character device (ENOSPC from write(2)). Proves the errno travels from the syscall through
    # KernelFS into the result; these are stand-ins, the kernel itself answers EBUSY/EIO/ENXIO.
    target = machine.root / SOFT_OFFLINE_PAGE
    target.unlink()
    target.mkdir()
    r = Offliner(KernelFS(machine.root)).execute(offline(0x7), AT).result
    assert (r.result, r.errno) == ("failed", errno.EISDIR)
    target.rmdir()
    os.mknod(target, 0o200 | stat.S_IFCHR, os.makedev(1, 7))  # /dev/full
    report = Offliner(KernelFS(machine.root)).execute(offline(0x7), AT)
    assert (report.result.result, report.result.errno) == ("failed", errno.ENOSPC)
    assert "ENOSPC" in report.detail


def test_account_mode_and_account_action_write_nothing(
    machine: FakeMachine, kfs: FakeKernelFS
) -> None:
    r1 = Offliner(kfs, mode="account").execute(offline(0x20), AT)
    r2 = Offliner(kfs).execute(offline(0x21, action="account"), AT)
    assert r1.result.result == "accounted" and r2.result.result == "accounted"
    assert "would soft-offline pfn 0x20" in r1.detail
    assert machine.writes == []
    assert not machine.poisoned(0x20) and not machine.poisoned(0x21)


def test_hard_offline_uses_hard_offline_page(machine: FakeMachine, kfs: FakeKernelFS) -> None:
    report = Offliner(kfs).execute(offline(0x30, action="hard"), AT)
    assert (machine.root / HARD_OFFLINE_PAGE).read_text() == "0x30000"
    assert (machine.root / SOFT_OFFLINE_PAGE).read_text() == ""
    assert report.result.result == "offlined" and report.result.action == "hard"


def test_ehwpoison_from_hard_offline_means_already_poisoned(machine: FakeMachine) -> None:
    # memory_failure() answers -EHWPOISON for a page poisoned between our look and our write.
    class RacingKernel(FakeKernelFS):
        def write_text(self, kpath: str, text: str) -> None:
            machine.set_poisoned(int(text, 0) >> 12)
            from hwpoisond.kernelfs import KernelFSError

            raise KernelFSError(133, kpath, "write")

    r = Offliner(RacingKernel(machine)).execute(offline(0x31, action="hard"), AT).result
    assert (r.result, r.errno, r.verified) == ("already_poisoned", 133, True)


def test_is_poisoned_reads_bit_19_of_little_endian_u64(
    machine: FakeMachine, kfs: FakeKernelFS
) -> None:
    offliner = Offliner(kfs)
    machine.set_flags(0x50, (1 << 19) | (1 << 10))  # HWPOISON + BUDDY
    machine.set_flags(0x51, 1 << 10 | 1 << 20)  # BUDDY + NOPAGE: not poisoned
    machine.set_flags(0x52, (1 << 19) << 8)  # bit 27: a big-endian reader would see bit 19
    assert offliner.is_poisoned(0x50) is True
    assert offliner.is_poisoned(0x51) is False
    assert offliner.is_poisoned(0x52) is False
    assert offliner.is_poisoned(machine.pages + 1) is None  # beyond the end: short read
    (machine.root / "proc/kpageflags").unlink()
    assert offliner.is_poisoned(0x50) is None


def test_parse_hardware_corrupted() -> None:
    assert parse_hardware_corrupted_kb("MemTotal: 1 kB\nHardwareCorrupted:    12 kB\n") == 12
    assert parse_hardware_corrupted_kb("MemTotal: 1 kB\n") is None


def _memory_blocks(machine: FakeMachine, block_size_bytes: int, blocks: list[int]) -> None:
    # As drivers/base/memory.c lays them out: block_size_bytes in hex without 0x, one memoryN
    # directory per block the machine has (a hole has none).
    mem = machine.root / "sys/devices/system/memory"
    (mem / "block_size_bytes").write_text(f"{block_size_bytes:x}\n")
    for n in blocks:
        (mem / f"memory{n}").mkdir()


def test_a_pfn_outside_the_memory_map_is_never_written(
    machine: FakeMachine, kfs: FakeKernelFS
) -> None:
    # Proves: an address beyond the machine's memory (a hole, or past its end) is refused
    # before the write, with ENXIO as the kernel's pfn_valid() check would answer, and is final
    # (unsupported: no retry). A pfn inside a listed block is written as before.
    _memory_blocks(machine, 0x100_0000, [0, 1, 3])  # 16 MiB blocks, hole at block 2
    offliner = Offliner(kfs)
    hole = (2 * 0x100_0000) >> 12
    beyond = (64 * 0x100_0000) >> 12
    for pfn in (hole, beyond):
        r = offliner.execute(offline(pfn), AT)
        assert (r.result.result, r.result.errno) == ("unsupported", errno.ENXIO)
        assert "outside the memory map" in r.detail
    assert machine.writes == []
    inside = (3 * 0x100_0000 + 0x5000) >> 12
    assert offliner.execute(offline(inside), AT).result.result == "offlined"
    assert machine.writes == [f"{inside << 12:#x}"]


def test_pfn_0_is_never_written(machine: FakeMachine, kfs: FakeKernelFS) -> None:
    # Proves: page 0, which drivers report for an unknown address, is refused even with no
    # memory map to ask and in both actions.
    for action in ("soft", "hard"):
        r = Offliner(kfs).execute(offline(0, action), AT)
        assert (r.result.result, r.result.errno) == ("unsupported", errno.ENXIO)
    assert machine.writes == []
