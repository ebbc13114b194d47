"""`hwpoisond status` on the r740-skx-2s fixture machine, through the real CLI entry point."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from hwpoisond import cli
from hwpoisond.store import Store
from tests.integration.store.fixture_machine import build_state

T0 = time.time() - 2 * 86400


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("r740")
    build_state("r740-skx-2s", base / "root", base / "state", T0)
    return base / "state"


def run_status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["status", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_status_json(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_status(capsys, "--state-dir", str(state), "--json")
    assert code == 0
    s: dict[str, Any] = json.loads(out)
    retired = {r["pfn"]: r for r in s["retired"]}
    assert set(retired) == {0x1A2B3C, 0x1A2B7D, 0x2F0B3C, 0x1C3A07}
    assert retired[0x1A2B3C]["verified"] is True and retired[0x1A2B3C]["result"] == "offlined"
    assert retired[0x1C3A07]["result"] == "already_poisoned"
    assert "DRAM row" in retired[0x1A2B7D]["reason"]
    [failure] = s["failures"]
    assert (failure["pfn"], failure["errno_name"], failure["attempt"]) == (0x2F0B3C, "EBUSY", 1)
    [esc] = s["escalations"]
    assert esc["label"] == "CPU_SrcID#1_MC#0_Chan#1_DIMM#0" and esc["kind"] == "escalate"
    dimms = {d["label"]: d for d in s["dimms"]}
    assert dimms["CPU_SrcID#0_MC#0_Chan#1_DIMM#0"]["pages_retired"] == 2
    assert dimms["CPU_SrcID#0_MC#0_Chan#1_DIMM#0"]["events_ce"] == 3
    assert dimms["CPU_SrcID#1_MC#0_Chan#1_DIMM#0"]["ue_count"] == 1
    assert dimms["CPU_SrcID#1_MC#0_Chan#1_DIMM#0"]["events_ue"] == 1
    near = {p["pfn"]: p for p in s["near_threshold"]}
    assert set(near) == {0x0B1D2E, 0x3E4F50} and near[0x3E4F50]["threshold"] == 2
    # 0x1c3a07 was poisoned by the kernel (4 kB) before we looked; three soft offlines add 12
    assert s["hardware_corrupted_kb"] == 16
    assert s["kernel"]["cec"] == {"present": True, "threshold": 2}
    assert s["sources"]["tracefs"]["state"] == "up"
    assert "4 DIMMs (smbios), 125 GiB total" in s["memory_fingerprint"]["description"]
    assert s["pending"] == [] and s["db_recoveries"] == []


def test_status_human_is_aligned_and_complete(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_status(capsys, "--state-dir", str(state))
    assert code == 0
    print(out)
    for heading in (
        "DIMMs",
        "Retired pages (4)",
        "Pages near threshold",
        "Failures",
        "Escalations",
        "Sources",
        "Kernel",
    ):
        assert re.search(rf"^{re.escape(heading)}$", out, re.M), heading
    assert "HardwareCorrupted: 16 kB" in out
    assert "RAS CEC: present, threshold 2" in out
    assert "already poisoned" in out and "EBUSY" in out
    # the DIMM table: header and rows start their columns at the same offsets
    lines = out.splitlines()
    start = lines.index("DIMMs") + 1
    table = lines[start : start + 5]
    header = table[0]
    label_col = header.index("LABEL")
    assert all(row[label_col:].startswith("CPU_SrcID#") for row in table[1:])
    ce_end = header.index("CE") + 2
    assert all(row[ce_end - 1].isdigit() for row in table[1:])  # numbers right-aligned


def test_status_reads_while_daemon_holds_a_write_transaction(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(state) as daemon, daemon.transaction():
        daemon.set_meta("budget", {"retired_bytes": 0})
        code, out, _ = run_status(capsys, "--state-dir", str(state), "--json")
    assert code == 0 and json.loads(out)["budget"]["retired_bytes"] == 16384


def test_status_without_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_status(capsys, "--state-dir", str(tmp_path / "none"))
    assert code == 1 and out == ""
    assert "no state database" in err and "--state-dir" in err
