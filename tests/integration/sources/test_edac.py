"""EDAC sysfs counters from fake roots in both kernel layouts, and trees that come and go.

File contents follow drivers/edac/edac_mc_sysfs.c: counters "%u\\n", names "%s\\n", dimm_location
"<layer> <n> <layer> <n> \\n" (trailing space, newline since 5.x), unset labels empty.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hwpoisond.kernelfs import KernelFS
from hwpoisond.sources.edac import EdacController, EdacSource, read_edac

from .conftest import write_file

MC = Path("sys/devices/system/edac/mc")


def make_modern_mc(root: Path, mc: int, dimm_ce: tuple[int, ...]) -> Path:
    """An skx_edac-style controller (6.x): dimmM directories, no csrows."""
    d = root / MC / f"mc{mc}"
    for name, value in {
        "mc_name": f"Skylake Socket#{mc} IMC#0",
        "size_mb": str(32768 * len(dimm_ce)),
        "seconds_since_reset": "86400",
        "ce_count": str(sum(dimm_ce)),
        "ue_count": "0",
        "ce_noinfo_count": "2",
        "ue_noinfo_count": "0",
    }.items():
        write_file(d / name, value + "\n")
    write_file(d / "reset_counters", "")
    for i, ce in enumerate(dimm_ce):
        dimm = d / f"dimm{i}"
        write_file(dimm / "dimm_label", f"CPU_SrcID#{mc}_MC#0_Chan#{i}_DIMM#0\n")
        write_file(dimm / "dimm_location", f"channel {i} slot 0 \n")
        write_file(dimm / "size", "32768\n")
        write_file(dimm / "dimm_mem_type", "Registered-DDR4\n")
        write_file(dimm / "dimm_dev_type", "x4\n")
        write_file(dimm / "dimm_edac_mode", "SECDED\n")
        write_file(dimm / "dimm_ce_count", f"{ce}\n")
        write_file(dimm / "dimm_ue_count", "0\n")
    return d


def make_legacy_mc(root: Path, mc: int) -> Path:
    """An amd64_edac-style csrow-based controller with CONFIG_EDAC_LEGACY_SYSFS: csrowK with
    per-channel counters, rankM directories, one channel label never set."""
    d = root / MC / f"mc{mc}"
    for name, value in {
        "mc_name": "F17h",
        "size_mb": "16384",
        "ce_count": "7",
        "ue_count": "1",
        "ce_noinfo_count": "0",
        "ue_noinfo_count": "1",
    }.items():
        write_file(d / name, value + "\n")
    for row, (ch0, ch1) in enumerate([(4, 3), (0, 0)]):
        cs = d / f"csrow{row}"
        write_file(cs / "ce_count", f"{ch0 + ch1}\n")
        write_file(cs / "ue_count", "0\n")
        write_file(cs / "size_mb", "8192\n")
        write_file(cs / "mem_type", "Unbuffered-DDR4\n")
        write_file(cs / "edac_mode", "SECDED\n")
        write_file(cs / "dev_type", "x8\n")
        write_file(cs / "ch0_ce_count", f"{ch0}\n")
        write_file(cs / "ch1_ce_count", f"{ch1}\n")
        write_file(cs / "ch0_dimm_label", f"mc#{mc}csrow#{row}channel#0\n")
        write_file(cs / "ch1_dimm_label", "")
        rank = d / f"rank{row}"
        write_file(rank / "dimm_label", "")
        write_file(rank / "dimm_location", f"csrow {row} channel 0 \n")
        write_file(rank / "size", "8192\n")
        write_file(rank / "dimm_ce_count", f"{ch0}\n")
        write_file(rank / "dimm_ue_count", "0\n")
    return d


def test_modern_layout(tmp_path: Path) -> None:
    make_modern_mc(tmp_path, 0, (3, 0))
    make_modern_mc(tmp_path, 1, (0, 5))
    snap = read_edac(KernelFS(tmp_path))
    assert [c.mc for c in snap.controllers] == [0, 1]
    mc0 = snap.controllers[0]
    assert mc0.name == "Skylake Socket#0 IMC#0"
    assert (mc0.ce_count, mc0.ue_count, mc0.ce_noinfo_count, mc0.ue_noinfo_count) == (3, 0, 2, 0)
    assert mc0.size_mb == 65536
    assert mc0.seconds_since_reset == 86400
    assert mc0.csrows == ()
    d0 = mc0.dimms[0]
    assert (d0.index, d0.kind) == (0, "dimm")
    assert d0.label == "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"
    assert d0.location == "channel 0 slot 0"
    assert (d0.size_mb, d0.mem_type, d0.edac_mode) == (32768, "Registered-DDR4", "SECDED")
    assert (d0.ce_count, d0.ue_count) == (3, 0)
    assert [d.ce_count for d in snap.controllers[1].dimms] == [0, 5]


def test_legacy_csrow_layout(tmp_path: Path) -> None:
    make_legacy_mc(tmp_path, 0)
    (mc0,) = read_edac(KernelFS(tmp_path)).controllers
    assert (mc0.ce_count, mc0.ue_count, mc0.ue_noinfo_count) == (7, 1, 1)
    assert [c.csrow for c in mc0.csrows] == [0, 1]
    row0 = mc0.csrows[0]
    assert (row0.ce_count, row0.ue_count, row0.size_mb) == (7, 0, 8192)
    assert (row0.mem_type, row0.edac_mode) == ("Unbuffered-DDR4", "SECDED")
    assert [(ch.channel, ch.ce_count, ch.dimm_label) for ch in row0.channels] == [
        (0, 4, "mc#0csrow#0channel#0"),
        (1, 3, None),  # an unset label reads as an empty file
    ]
    assert [(d.kind, d.index, d.label, d.location) for d in mc0.dimms] == [
        ("rank", 0, None, "csrow 0 channel 0"),
        ("rank", 1, None, "csrow 1 channel 0"),
    ]


def test_numeric_order_not_lexical(tmp_path: Path) -> None:
    for mc in (10, 2):
        make_modern_mc(tmp_path, mc, tuple(range(12)))
    snap = read_edac(KernelFS(tmp_path))
    assert [c.mc for c in snap.controllers] == [2, 10]
    assert [d.index for d in snap.controllers[0].dimms] == list(range(12))


def test_missing_attributes_are_none_and_garbage_is_not_a_crash(tmp_path: Path) -> None:
    d = make_modern_mc(tmp_path, 0, (1,))
    (d / "ue_noinfo_count").unlink()
    write_file(d / "dimm0" / "dimm_ce_count", "not a number\n")
    (mc0,) = read_edac(KernelFS(tmp_path)).controllers
    assert mc0.ue_noinfo_count is None
    assert mc0.dimms[0].ce_count is None
    assert mc0.dimms[0].ue_count == 0


def test_source_status_follows_the_tree_vanishing_and_returning(tmp_path: Path) -> None:
    src = EdacSource(KernelFS(tmp_path))
    st = src.open()
    assert not st.available
    assert "no EDAC driver loaded" in st.reason
    assert src.fileno() is None  # fake root: no udev, the daemon polls on its timer

    make_modern_mc(tmp_path, 0, (1, 2))
    snap = src.poll()
    assert src.status().available
    assert "mc0 (Skylake Socket#0 IMC#0)" in src.status().reason
    assert isinstance(snap.controllers[0], EdacController)

    shutil.rmtree(tmp_path / MC / "mc0")  # driver unloaded
    assert src.poll().controllers == ()
    assert not src.status().available
    assert "no memory controller registered" in src.status().reason

    make_legacy_mc(tmp_path, 0)  # another driver loaded
    assert src.poll().controllers[0].name == "F17h"
    assert src.status().available
    src.close()
    assert src.status().reason == "closed"


def test_live_machine_uses_udev_and_reads_without_crashing() -> None:
    src = EdacSource(KernelFS("/"))
    st = src.open()
    try:
        # pyudev is installed with the package, so the live machine always gets a monitor fd.
        fd = src.fileno()
        assert fd is not None and fd >= 0
        snap = src.poll()
        live_mcs = sorted(
            p.name for p in Path("/sys/devices/system/edac/mc").glob("mc[0-9]*") if p.is_dir()
        )
        assert [f"mc{c.mc}" for c in snap.controllers] == sorted(live_mcs, key=lambda n: int(n[2:]))
        assert st.available == bool(live_mcs)
    finally:
        src.close()
    # Dropping the monitor closes its netlink socket (pyudev unrefs it on collection).
    with pytest.raises(OSError):
        os.fstat(fd)
