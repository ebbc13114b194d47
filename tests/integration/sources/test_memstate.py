"""Memory state from fake roots: meminfo, per-node memory_failure stats, sysctls, the CEC."""

from __future__ import annotations

import shutil
from pathlib import Path

from hwpoisond.kernelfs import KernelFS
from hwpoisond.sources.memstate import CEC_DIR, parse_cec_array, read_memory_state

from .conftest import write_file

# fs/proc/meminfo.c prints "%-16s%8lu kB" style lines; an excerpt from a 6.1 machine.
MEMINFO = """MemTotal:       65843068 kB
MemFree:        60123456 kB
MemAvailable:   62000000 kB
HardwareCorrupted:     8 kB
AnonHugePages:         0 kB
"""

# drivers/ras/cec.c array_show(): pfn|decay bits|count, then the stats block.
CEC_ARRAY = """{ n: 2
   0: [0000000000007654|11|001]
   1: [00000000000a1b2c|10|00a]
}
Stats:
CEs: 17
offlined pages: 3
Flags: 0x0
Decay interval: 86400 seconds
Decays: 0
Action threshold: 2
"""


def make_machine(root: Path) -> None:
    write_file(root / "proc/meminfo", MEMINFO)
    for node, stats in {0: (3, 0, 1, 0, 2), 1: (0, 0, 0, 0, 0)}.items():
        d = root / f"sys/devices/system/node/node{node}/memory_failure"
        for name, value in zip(
            ("total", "ignored", "failed", "delayed", "recovered"), stats, strict=True
        ):
            write_file(d / name, f"{value}\n")
    write_file(root / "sys/devices/system/node/possible", "0-1\n")
    write_file(root / "proc/sys/vm/memory_failure_early_kill", "0\n")
    write_file(root / "proc/sys/vm/memory_failure_recovery", "1\n")
    write_file(root / "proc/sys/vm/enable_soft_offline", "1\n")
    write_file(root / CEC_DIR / "action_threshold", "2\n")
    write_file(root / CEC_DIR / "decay_interval", "86400\n")
    write_file(root / CEC_DIR / "array", CEC_ARRAY)


def test_full_machine(tmp_path: Path) -> None:
    make_machine(tmp_path)
    st = read_memory_state(KernelFS(tmp_path))
    assert st.hardware_corrupted_bytes == 8 * 1024
    assert st.mem_total_bytes == 65843068 * 1024
    assert [(n.node, n.total, n.failed, n.recovered) for n in st.nodes] == [
        (0, 3, 1, 2),
        (1, 0, 0, 0),
    ]
    assert (st.memory_failure_early_kill, st.memory_failure_recovery) == (0, 1)
    assert st.enable_soft_offline == 1
    assert st.cec.present is True
    assert (st.cec.action_threshold, st.cec.decay_interval_seconds) == (2, 86400)
    assert st.cec.tracked_pfns == ((0x7654, 1), (0xA1B2C, 10))
    assert (st.cec.ces_entered, st.cec.pages_offlined) == (17, 3)


def test_old_kernel_lacks_newer_interfaces(tmp_path: Path) -> None:
    """A 5.x kernel: no per-node stats (6.4+), no vm.enable_soft_offline (6.11+), CEC without
    CONFIG_RAS_CEC_DEBUG (no `array`)."""
    make_machine(tmp_path)
    for node in (0, 1):
        shutil.rmtree(tmp_path / f"sys/devices/system/node/node{node}/memory_failure")
    (tmp_path / "proc/sys/vm/enable_soft_offline").unlink()
    (tmp_path / CEC_DIR / "array").unlink()
    st = read_memory_state(KernelFS(tmp_path))
    assert st.nodes == ()
    assert st.enable_soft_offline is None
    assert st.memory_failure_recovery == 1
    assert st.cec.present is True
    assert st.cec.action_threshold == 2
    assert st.cec.tracked_pfns is None


def test_cec_absent_versus_debugfs_not_mounted(tmp_path: Path) -> None:
    make_machine(tmp_path)
    shutil.rmtree(tmp_path / "sys/kernel/debug/ras")
    write_file(tmp_path / "sys/kernel/debug/tracing/README", "tracing mini-HOWTO\n")
    assert read_memory_state(KernelFS(tmp_path)).cec.present is False
    shutil.rmtree(tmp_path / "sys/kernel/debug")
    (tmp_path / "sys/kernel/debug").mkdir()  # an empty mount point
    assert read_memory_state(KernelFS(tmp_path)).cec.present is None


def test_empty_root_is_all_unknown_not_an_error(tmp_path: Path) -> None:
    st = read_memory_state(KernelFS(tmp_path))
    assert st.hardware_corrupted_bytes is None
    assert st.mem_total_bytes is None
    assert st.nodes == ()
    assert st.memory_failure_early_kill is None
    assert st.cec.present is None


def test_values_follow_the_files_as_they_change(tmp_path: Path) -> None:
    make_machine(tmp_path)
    kfs = KernelFS(tmp_path)
    assert read_memory_state(kfs).hardware_corrupted_bytes == 8192
    # A soft offline adds one 4 kB page to HardwareCorrupted.
    write_file(tmp_path / "proc/meminfo", MEMINFO.replace("     8 kB", "    12 kB"))
    assert read_memory_state(kfs).hardware_corrupted_bytes == 12288
    (tmp_path / "proc/sys/vm/memory_failure_recovery").unlink()
    assert read_memory_state(kfs).memory_failure_recovery is None
    write_file(tmp_path / "proc/sys/vm/memory_failure_recovery", "0\n")
    assert read_memory_state(kfs).memory_failure_recovery == 0


def test_cec_array_parser_ignores_damage() -> None:
    pfns, ces, offlined = parse_cec_array("{ n: 1\n   0: [zz|11|001]\n}\nCEs: many\n")
    assert pfns == ()
    assert ces is None
    assert offlined is None


def test_live_machine_reads_without_crashing() -> None:
    st = read_memory_state(KernelFS("/"))
    assert st.mem_total_bytes is not None and st.mem_total_bytes > 0
    meminfo = Path("/proc/meminfo").read_text()
    assert ("HardwareCorrupted:" in meminfo) == (st.hardware_corrupted_bytes is not None)
