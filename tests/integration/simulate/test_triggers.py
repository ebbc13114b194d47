"""Operator triggers fire from the real daemon: a page retired in a simulation runs the
configured script, without a shell, with the event in HWPOISOND_* variables only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


def _simulate_single_cell(tmp_path: Path, config: str) -> tuple[dict[str, Any], str]:
    return _simulate(tmp_path, "single-cell", config)


def _simulate(tmp_path: Path, scenario: str, config: str) -> tuple[dict[str, Any], str]:
    cfg = tmp_path / "hwpoisond.toml"
    cfg.write_text(config)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hwpoisond",
            "simulate",
            scenario,
            "--speed",
            "36000",
            "--json",
            "--config",
            str(cfg),
            "--state-dir",
            str(tmp_path / "sim"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report, proc.stderr


def test_page_retired_trigger_gets_the_event_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "trigger.out"
    script = tmp_path / "page-retired"
    script.write_text(f"#!/bin/sh\nenv | grep '^HWPOISOND_' | sort >> {out}\necho --- >> {out}\n")
    script.chmod(0o700)
    report, _ = _simulate_single_cell(
        tmp_path, f"[metrics]\nport = 0\n[triggers]\npage_retired = '{script}'\ntimeout = '5s'\n"
    )
    [pfn] = report["pages_retired"]
    runs = out.read_text().split("---\n")[:-1]
    assert len(runs) == 1, "one retired page, one trigger run"
    env = dict(line.split("=", 1) for line in runs[0].splitlines())
    assert env["HWPOISOND_PFN"] == f"{pfn:#x}"
    assert env["HWPOISOND_RESULT"] == "offlined"
    assert env["HWPOISOND_ACTION"] == "soft"


def test_unsafe_trigger_is_refused_and_reported(tmp_path: Path) -> None:
    script = tmp_path / "loose"
    script.write_text("#!/bin/sh\ntouch /tmp/should-not-run\n")
    script.chmod(0o777)  # writable by others: running it as root would hand out root
    report, stderr = _simulate_single_cell(
        tmp_path, f"[metrics]\nport = 0\n[triggers]\npage_retired = '{script}'\n"
    )
    assert "trigger for page_retired refused" in stderr
    assert "writable by group or others (mode 0777)" in stderr
    assert len(report["pages_retired"]) == 1, "a refused trigger blocks nothing"


def _trigger_counts(metrics_text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        m = re.fullmatch(
            r'hwpoisond_triggers_total\{event="page_retired",outcome="(\w+)"\} (\S+)', line
        )
        if m:
            out[m[1]] = float(m[2])
    return out


def test_a_burst_beyond_the_queue_is_counted_and_logged_once(tmp_path: Path) -> None:
    # The audit's case: 100 pages retired at once (first-ce, no budget) with a script that takes
    # a second: 4 run, 64 wait, the rest are dropped. Every retirement must be accounted for in
    # the metrics (ok, dropped, or cut at shutdown) and the drops logged once, not 32 times.
    script = tmp_path / "slow"
    script.write_text("#!/bin/sh\nsleep 1\n")
    script.chmod(0o700)
    proc_report, stderr = _simulate(
        tmp_path,
        "bank-fault",
        "[metrics]\nport = 0\n[policy]\npreset = 'first-ce'\n[budget]\nenabled = false\n"
        f"[triggers]\npage_retired = '{script}'\ntimeout = '5s'\n",
    )
    retired = len(proc_report["pages_retired"])
    assert retired == 100
    counts = _trigger_counts(Path(proc_report["metrics_file"]).read_text())
    assert counts.get("dropped", 0) > 0, counts
    assert sum(counts.values()) == retired, counts
    assert stderr.count("dropped: 64 scripts already waiting") == 1, stderr
