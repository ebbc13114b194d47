"""KernelFS: paths stay under the root, and every failure keeps its errno and kernel path."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from hwpoisond.kernelfs import KernelFS, KernelFSError, PathEscapeError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "sys/devices/system/memory").mkdir(parents=True)
    (r / "proc").mkdir()
    (r / "proc/meminfo").write_text("MemTotal:       16384 kB\nHardwareCorrupted:     8 kB\n")
    return r


def test_reads_resolve_under_root_with_or_without_leading_slash(root: Path) -> None:
    kfs = KernelFS(root)
    assert kfs.read_text("/proc/meminfo") == kfs.read_text("proc/meminfo")
    assert "HardwareCorrupted" in kfs.read_text("proc/meminfo")


@pytest.mark.parametrize("kpath", ["../outside", "sys/../../outside", "/../../etc/passwd"])
def test_dotdot_escape_is_refused(root: Path, kpath: str) -> None:
    (root.parent / "outside").write_text("secret")
    with pytest.raises(PathEscapeError) as info:
        KernelFS(root).read_text(kpath)
    assert info.value.errno == errno.EXDEV
    assert info.value.kpath == kpath


def test_symlink_escape_is_refused(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("0\n")
    os.symlink(target, root / "sys/devices/system/memory/soft_offline_page")
    kfs = KernelFS(root)
    with pytest.raises(PathEscapeError):
        kfs.write_text("sys/devices/system/memory/soft_offline_page", "0x1000")
    assert target.read_text() == "0\n"  # nothing was written outside the root


def test_relative_symlink_inside_root_is_followed(root: Path) -> None:
    # sysfs is full of relative links (class/…/device -> ../../devices/…); they must work.
    os.symlink("../proc/meminfo", root / "sys/meminfo-link")
    assert "MemTotal" in KernelFS(root).read_text("sys/meminfo-link")


def test_missing_file_keeps_errno_and_path(root: Path) -> None:
    with pytest.raises(KernelFSError) as info:
        KernelFS(root).read_text("sys/kernel/debug/ras/cec/action_threshold")
    assert info.value.errno == errno.ENOENT
    assert info.value.errno_name == "ENOENT"
    assert info.value.kpath == "sys/kernel/debug/ras/cec/action_threshold"


def test_write_is_one_write_and_errno_is_kept(root: Path) -> None:
    kfs = KernelFS(root)
    page = root / "sys/devices/system/memory/soft_offline_page"
    page.write_text("")
    kfs.write_text("sys/devices/system/memory/soft_offline_page", "0x7654000")
    assert page.read_text() == "0x7654000"
    # /dev/full answers every write with ENOSPC: the errno must survive intact.
    page.unlink()
    os.symlink("/dev/full", page)
    with pytest.raises(PathEscapeError):
        kfs.write_text("sys/devices/system/memory/soft_offline_page", "0x1000")
    with pytest.raises(KernelFSError) as info:
        KernelFS("/").write_text("/dev/full", "0x1000")
    assert info.value.errno == errno.ENOSPC


def test_missing_write_target_is_enoent(root: Path) -> None:
    with pytest.raises(KernelFSError) as info:
        KernelFS(root).write_text("sys/devices/system/memory/hard_offline_page", "0x1000")
    assert info.value.errno == errno.ENOENT


def test_pread_reads_one_pfn_of_kpageflags(root: Path) -> None:
    flags = [0, 1 << 19, 0]
    (root / "proc/kpageflags").write_bytes(b"".join(f.to_bytes(8, "little") for f in flags))
    kfs = KernelFS(root)
    assert int.from_bytes(kfs.pread("proc/kpageflags", 8 * 1, 8), "little") == 1 << 19
    assert kfs.pread("proc/kpageflags", 8 * 3, 8) == b""


def test_read_int_reports_non_integer(root: Path) -> None:
    (root / "sys/x").write_text("abc\n")
    kfs = KernelFS(root)
    with pytest.raises(KernelFSError) as info:
        kfs.read_int("sys/x")
    assert info.value.errno == errno.EINVAL
    (root / "sys/y").write_text("0x10\n")
    assert kfs.read_int("sys/y") == 16


def test_listdir_and_nul_byte(root: Path) -> None:
    kfs = KernelFS(root)
    assert kfs.listdir("proc") == ["meminfo"]
    with pytest.raises(KernelFSError) as info:
        kfs.read_text("proc/mem\x00info")
    assert info.value.errno == errno.EINVAL
    assert not kfs.exists("../..")


def test_unsearchable_directory_is_absent_not_a_crash(root: Path) -> None:
    import subprocess
    import sys

    locked = root / "sys/kernel/tracing"
    locked.mkdir(parents=True)
    (locked / "instances").mkdir()
    locked.chmod(0o700)
    # As root every directory is searchable, so ask as nobody in a child process.
    code = (
        "import sys; from hwpoisond.kernelfs import KernelFS; k = KernelFS(sys.argv[1]); "
        "print(k.exists('sys/kernel/tracing/instances'), k.is_dir('sys/kernel/tracing/instances'))"
    )
    root.chmod(0o755)
    for parent in root.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]
