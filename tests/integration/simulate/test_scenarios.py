"""Every `hwpoisond simulate` scenario, run as a real subprocess, ends the way its fault mode
should: the real daemon, store, executor and metrics against the simulated kernel."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hwpoisond.sim.kernel import DramAddress, SimMachine
from hwpoisond.sim.scenarios import SCENARIOS

SPEED = "36000"  # ten simulated hours per real second


def _simulate(tmp_path: Path, scenario: str) -> dict[str, Any]:
    workdir = tmp_path / scenario
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hwpoisond",
            "simulate",
            scenario,
            "--speed",
            SPEED,
            "--json",
            "--state-dir",
            str(workdir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["lines_dropped"] == 0
    return report


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    text = Path(report["metrics_file"]).read_text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name + json.dumps(dict(sorted(sample.labels.items())))
            out[key] = sample.value
    return out


def _sum(metrics: dict[str, float], name: str, **labels: str) -> float:
    total = 0.0
    for key, value in metrics.items():
        metric, _, raw = key.partition("{")
        got = json.loads("{" + raw)
        if metric == name and all(got.get(k) == v for k, v in labels.items()):
            total += value
    return total


def _machine(tmp_path: Path) -> SimMachine:
    return SimMachine(tmp_path / "probe")  # same geometry as the simulation's, never built


def _written_pfns(report: dict[str, Any]) -> list[int]:
    return [w["pfn"] for w in report["offline_write_log"]]


def test_list_names_every_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hwpoisond", "simulate", "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [line.split()[0] for line in proc.stdout.splitlines()] == list(SCENARIOS)


def test_healthy_machine_gets_nothing_done(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "healthy")
    assert r["errors_injected"] == 0
    assert r["pages_retired"] == [] and r["offline_writes"] == 0 and r["escalations"] == []


def test_single_cell_page_is_retired_once_and_verified(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "single-cell")
    m = _machine(tmp_path)
    pfn = m.phys_addr_of(DramAddress(m.dimms[2], bank=3, row=4242, column=100)) >> 12
    assert r["pages_retired"] == [pfn]
    assert r["pages_poisoned_now"] == [pfn]
    assert _written_pfns(r) == [pfn], "the later errors must not offline it again"
    metrics = _metrics(r)
    assert _sum(metrics, "hwpoisond_offline_actions_total", result="offlined") == 1
    assert _sum(metrics, "hwpoisond_memory_errors_total", error_severity="corrected") == 4
    assert _sum(metrics, "hwpoisond_hardware_corrupted_bytes") == 4096


def test_row_fault_retires_the_rows_pages(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "row-fault")
    m = _machine(tmp_path)
    assert len(r["pages_retired"]) >= 3
    for pfn in r["pages_retired"]:
        dimm, bank, row, _ = m.dram_of(pfn)
        assert (dimm.index, bank, row) == (5, 7, 6000)
    assert r["escalations"] == []
    assert sorted(r["pages_poisoned_now"]) == sorted(r["pages_retired"])


@pytest.mark.parametrize(("scenario", "dimm"), [("column-fault", 1), ("bank-fault", 6)])
def test_column_and_bank_faults_escalate_instead_of_retiring(
    tmp_path: Path, scenario: str, dimm: int
) -> None:
    r = _simulate(tmp_path, scenario)
    label = _machine(tmp_path).dimms[dimm].label
    assert any(label in reason and "replace DIMM" in reason for reason in r["escalations"])
    assert len(r["pages_retired"]) <= 8, "retiring a page per bad row would be futile"
    metrics = _metrics(r)
    assert _sum(metrics, "hwpoisond_dimm_replacement_recommended", dimm=label) == 1


def test_controller_storm_escalates_and_retires_nothing_much(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "controller-storm")
    assert r["errors_injected"] == 6000
    assert r["escalations"], "a storm without page locality must be escalated"
    assert all("MC#1" in reason or "mc1" in reason for reason in r["escalations"])
    assert len(r["pages_retired"]) <= 8
    assert _sum(_metrics(r), "hwpoisond_memory_errors_total", error_severity="corrected") == 6000


def test_ce_then_ue_records_the_ue_and_never_touches_the_kernels_page(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "ce-then-ue")
    m = _machine(tmp_path)
    weak = m.phys_addr_of(DramAddress(m.dimms[0], bank=1, row=777, column=10)) >> 12
    recurring = m.phys_addr_of(DramAddress(m.dimms[4], bank=9, row=3133, column=512)) >> 12
    assert r["pages_retired"] == [recurring]
    assert weak in r["pages_poisoned_now"], "the kernel poisoned the UE's page itself"
    assert weak not in _written_pfns(r)
    assert r["uncorrected"] == 1
    metrics = _metrics(r)
    assert _sum(metrics, "hwpoisond_memory_errors_total", error_severity="uncorrected") == 1
    assert _sum(metrics, "hwpoisond_kernel_uncorrected_errors_total", result="recovered") == 1


def test_reboot_reoffline_exactly_the_retired_pages(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "reboot")
    assert r["boots"] == 2
    assert len(r["pages_retired"]) == 2
    # Poison was cleared by the reboot and is back on exactly those pages, written once per boot.
    assert sorted(r["pages_poisoned_now"]) == sorted(r["pages_retired"])
    written = _written_pfns(r)
    assert sorted(written) == sorted(r["pages_retired"] * 2)


def test_busy_page_is_retried_with_backoff_then_given_up(tmp_path: Path) -> None:
    r = _simulate(tmp_path, "busy-page")
    assert r["pages_retired"] == []
    errnos = {w["errno"] for w in r["offline_write_log"]}
    assert errnos == {16}  # EBUSY, every time
    assert len(r["offline_write_log"]) == 5  # the first attempt and retry_max = 4 retries
    assert all(f["errno_name"] == "EBUSY" for f in r["failures"])
    assert _sum(_metrics(r), "hwpoisond_offline_actions_total", result="failed") == 5
