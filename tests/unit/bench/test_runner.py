"""`python -m bench policy` end to end on a tiny suite: real generator, real `hwpoisond replay`
subprocesses, real scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_dispatcher_lists_policy_and_rejects_unknown_names() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "bench", "--list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.returncode == 0 and "policy" in listed.stdout.split()
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "no-such-bench"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "no-such-bench" in bad.stderr


def test_policy_bench_runs_replay_and_scores(tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "policy",
            "--",
            "--hosts",
            "4",
            "--days",
            "20",
            "--policies",
            "default,none,first-ce",
            "--out",
            str(tmp_path / "suite"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| default |" in proc.stdout and "| first-ce |" in proc.stdout
    scores = {s["policy"]: s for s in json.loads(out.read_text())["scores"]}
    assert scores["none"]["pages_retired"] == 0 and scores["none"]["ues_avoided"] == 0
    # first-ce retires a page on every first CE: at least as many pages as the default.
    assert scores["first-ce"]["pages_retired"] >= scores["default"]["pages_retired"]
    assert scores["first-ce"]["pages_retired"] > 0
    truths = sorted((tmp_path / "suite" / "seed-1").glob("*.truth.json"))
    assert len(truths) == 4
    assert scores["default"]["ces"] == sum(len(json.loads(t.read_text())["ces"]) for t in truths)
