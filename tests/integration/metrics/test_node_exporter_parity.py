"""For one fake EDAC tree in both sysfs layouts, hwpoisond's EDAC metrics agree with what
Debian's node_exporter (a real subprocess, edac collector only, `--path.sysfs`) reports, and add
the per-DIMM counts node_exporter cannot see.

Tree contents follow drivers/edac/edac_mc_sysfs.c (Linux 6.1): counters are printed "%u\\n",
names "%s\\n", `dimm_location` as "<layer> <n> <layer> <n> \\n"; node_exporter (1.5.0,
collector/edac_linux.go) reads mcN/{ce_count,ue_count,ce_noinfo_count,ue_noinfo_count} and
csrowK/{ce_count,ue_count}, and reports the noinfo counts as csrow="unknown".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hwpoisond.kernelfs import KernelFS
from hwpoisond.metrics import Exporter, MetricsSnapshot, edac_counts
from hwpoisond.sources.edac import read_edac
from tests.integration.metrics.helpers import NODE_EXPORTER, free_port, wait_for
from tests.unit.metrics.samples import Samples, samples_of, value

MC_DIR = Path("sys/devices/system/edac/mc")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def controller(
    root: Path, mc: int, name: str, ce: int, ue: int, ce_noinfo: int, ue_noinfo: int
) -> Path:
    d = root / MC_DIR / f"mc{mc}"
    for attr, val in {
        "mc_name": name,
        "size_mb": "65536",
        "seconds_since_reset": "3600",
        "ce_count": str(ce),
        "ue_count": str(ue),
        "ce_noinfo_count": str(ce_noinfo),
        "ue_noinfo_count": str(ue_noinfo),
    }.items():
        write(d / attr, val + "\n")
    return d


def make_tree(root: Path) -> None:
    # mc0: per-DIMM layout (skx_edac/i10nm): dimmM directories and no csrows. node_exporter
    # can only report its noinfo counters, as csrow="unknown".
    mc0 = controller(root, 0, "Skylake Socket#0 IMC#0", ce=42, ue=1, ce_noinfo=2, ue_noinfo=0)
    for i, (ce, ue) in enumerate([(30, 1), (10, 0), (0, 0)]):
        d = mc0 / f"dimm{i}"
        write(d / "dimm_label", f"CPU_SrcID#0_MC#0_Chan#{i}_DIMM#0\n")
        write(d / "dimm_location", f"channel {i} slot 0 \n")
        write(d / "size", "16384\n")
        write(d / "dimm_ce_count", f"{ce}\n")
        write(d / "dimm_ue_count", f"{ue}\n")
    # mc1: legacy csrow layout (CONFIG_EDAC_LEGACY_SYSFS) with its rankM twins.
    mc1 = controller(root, 1, "F17h", ce=9, ue=3, ce_noinfo=1, ue_noinfo=1)
    for row, (ch0, ch1, ue) in enumerate([(5, 3, 2), (0, 0, 0)]):
        d = mc1 / f"csrow{row}"
        write(d / "ce_count", f"{ch0 + ch1}\n")
        write(d / "ue_count", f"{ue}\n")
        write(d / "size_mb", "8192\n")
        write(d / "ch0_ce_count", f"{ch0}\n")
        write(d / "ch1_ce_count", f"{ch1}\n")
        write(d / "ch0_dimm_label", f"DIMM_A{row}\n")
        write(d / "ch1_dimm_label", "\n")
        for ch, ce in enumerate((ch0, ch1)):
            r = mc1 / f"rank{row * 2 + ch}"
            write(r / "dimm_label", "\n")
            write(r / "dimm_location", f"csrow {row} channel {ch} \n")
            write(r / "size", "4096\n")
            write(r / "dimm_ce_count", f"{ce}\n")
            write(r / "dimm_ue_count", f"{ue if ch == 0 else 0}\n")
    # mc2: a controller with no errors at all.
    controller(root, 2, "Skylake Socket#1 IMC#0", ce=0, ue=0, ce_noinfo=0, ue_noinfo=0)


def node_exporter_scrape(root: Path) -> Samples:
    assert NODE_EXPORTER is not None
    port = free_port()
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.sysfs={root / 'sys'}",
            "--collector.disable-defaults",
            "--collector.edac",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = wait_for(f"http://127.0.0.1:{port}/metrics")
    except Exception:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"node_exporter did not serve: {err[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
    return samples_of(body)


def hwpoisond_scrape(root: Path) -> Samples:
    snap = MetricsSnapshot(edac=edac_counts(read_edac(KernelFS(root))))
    return samples_of(Exporter(snapshot=snap).render().decode())


@pytest.mark.skipif(
    NODE_EXPORTER is None, reason="node_exporter not installed (prometheus-node-exporter)"
)
def test_edac_totals_match_node_exporter(tmp_path: Path) -> None:
    make_tree(tmp_path)
    theirs = node_exporter_scrape(tmp_path)
    ours = hwpoisond_scrape(tmp_path)
    assert value(theirs, "node_scrape_collector_success", collector="edac") == 1

    controllers = sorted(
        dict(labels)["controller"]
        for name, labels in theirs
        if name == "node_edac_correctable_errors_total"
    )
    assert controllers == ["0", "1", "2"]
    for mc in controllers:
        for theirs_name, ours_name in [
            ("node_edac_correctable_errors_total", "hwpoisond_edac_corrected_errors_total"),
            ("node_edac_uncorrectable_errors_total", "hwpoisond_edac_uncorrected_errors_total"),
        ]:
            assert value(theirs, theirs_name, controller=mc) == value(ours, ours_name, mc=mc)
        for kind, noinfo in [("correctable", "corrected"), ("uncorrectable", "uncorrected")]:
            assert value(
                theirs, f"node_edac_csrow_{kind}_errors_total", controller=mc, csrow="unknown"
            ) == value(ours, f"hwpoisond_edac_noinfo_{noinfo}_errors_total", mc=mc)

    # Every real csrow node_exporter reports, hwpoisond reports with the same count.
    csrows = [
        (name, dict(labels))
        for name, labels in theirs
        if name.startswith("node_edac_csrow_") and dict(labels)["csrow"] != "unknown"
    ]
    assert len(csrows) == 4  # mc1: two csrows, ce and ue
    for name, labels in csrows:
        ours_name = name.replace("node_edac_csrow_correctable", "hwpoisond_edac_csrow_corrected")
        ours_name = ours_name.replace(
            "node_edac_csrow_uncorrectable", "hwpoisond_edac_csrow_uncorrected"
        )
        assert value(theirs, name, **labels) == value(
            ours, ours_name, mc=labels["controller"], csrow=labels["csrow"]
        )


def test_per_dimm_counts_node_exporter_cannot_see(tmp_path: Path) -> None:
    make_tree(tmp_path)
    ours = hwpoisond_scrape(tmp_path)
    dimm0 = {
        "mc": "0",
        "entry": "dimm0",
        "dimm": "CPU_SrcID#0_MC#0_Chan#0_DIMM#0",
        "location": "channel 0 slot 0",
    }
    assert value(ours, "hwpoisond_edac_dimm_corrected_errors_total", **dimm0) == 30
    assert value(ours, "hwpoisond_edac_dimm_uncorrected_errors_total", **dimm0) == 1
    assert value(ours, "hwpoisond_edac_dimm_size_bytes", **dimm0) == 16384 * 1024**2
    # Per-DIMM counts plus the unattributed ones add up to the controller's count.
    per_dimm = sum(
        v
        for (name, labels), v in ours.items()
        if name == "hwpoisond_edac_dimm_corrected_errors_total" and ("mc", "0") in labels
    )
    noinfo = value(ours, "hwpoisond_edac_noinfo_corrected_errors_total", mc="0")
    assert per_dimm + noinfo == value(ours, "hwpoisond_edac_corrected_errors_total", mc="0")
    assert (
        value(
            ours, "hwpoisond_edac_mc_info", mc="0", mc_name="Skylake Socket#0 IMC#0", layout="dimm"
        )
        == 1
    )
    assert value(ours, "hwpoisond_edac_mc_info", mc="1", mc_name="F17h", layout="rank") == 1
    assert (
        value(
            ours,
            "hwpoisond_edac_csrow_channel_corrected_errors_total",
            mc="1",
            csrow="0",
            channel="1",
            dimm="unknown",
        )
        == 3
    )
