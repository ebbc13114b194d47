"""`hwpoisond replay` end to end: real files, the real parser and core, the CLI entry point."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from hwpoisond import cli, exitcodes

# ras:mc_event as printed by TP_printk in include/ras/ras_event.h (skx_edac driver detail).
MC_EVENT = (
    "  kworker/0:1-12  [002] .....  {t:.6f}: mc_event: 1 Corrected error: memory read error on "
    "CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (mc:0 location:1:0:-1 address:0x{addr:x} grain:32 "
    "syndrome:0x0 err_code:0x0000:0x009f socket:0 imc:0 rank:0 bg:1 ba:2 row:0x{row:x} col:0x8)"
)


def _trace(path: Path, items: list[tuple[float, int, int]]) -> Path:
    path.write_text(
        "".join(MC_EVENT.format(t=t, addr=pfn << 12, row=row) + "\n" for t, pfn, row in items)
    )
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_replay_json_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _trace(tmp_path / "a.trace", [(10.0, 0x1234, 1), (20.0, 0x1234, 1), (30.0, 0x99, 5)])
    code, out, _ = _run(capsys, str(log), "--json")
    assert code == exitcodes.OK
    summary = json.loads(out)
    assert summary == {
        "events": 3,
        "pages_offlined": [0x1234],
        "actions": [
            {
                "at": 20.0,
                "pfn": 0x1234,
                "action": "soft",
                "reason": "2 corrected errors within 86400s (threshold 2/86400s)",
            }
        ],
        "escalations": [],
        "budget_exhausted": False,
        "unparsed_candidate_lines": 0,
    }


def test_replay_presets_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _trace(tmp_path / "a.trace", [(float(t), 0x1234, 1) for t in range(1, 51)])
    results = {}
    for name in ("default", "rasdaemon", "none", "first-ce"):
        code, out, _ = _run(capsys, str(log), "--json", "--policy", name)
        assert code == 0
        results[name] = [a["at"] for a in json.loads(out)["actions"]]
    assert results == {"default": [2.0], "rasdaemon": [50.0], "none": [], "first-ce": [1.0]}


def test_replay_fail_rate_retries_in_event_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [(float(i), 0x1000 + i // 2, 0x10 + i) for i in range(400)]  # 200 pages, 2 CEs each
    items.append((100000.0, 0x1, 0x1))  # time moves on: the back-offs come due
    log = _trace(tmp_path / "a.trace", items)
    code, out, _ = _run(
        capsys, str(log), "--json", "--fail-rate", "0.5", "--config", str(_no_limits(tmp_path))
    )
    assert code == 0
    summary = json.loads(out)
    by_pfn: dict[int, list[dict[str, Any]]] = {}
    for a in summary["actions"]:
        by_pfn.setdefault(a["pfn"], []).append(a)
    retried = [acts for acts in by_pfn.values() if len(acts) > 1]
    assert retried, "half the attempts fail, so some pages must have been retried"
    for acts in retried:
        gaps = [float(b["at"]) - float(a["at"]) for a, b in itertools.pairwise(acts)]
        assert gaps == [60.0 * 2**k for k in range(len(gaps))]
    # Same input, same answer: the failure draw is a hash, not a random generator.
    assert (
        json.loads(
            _run(
                capsys,
                str(log),
                "--json",
                "--fail-rate",
                "0.5",
                "--config",
                str(_no_limits(tmp_path)),
            )[1]
        )
        == summary
    )
    assert len(summary["pages_offlined"]) < 200


def _no_limits(tmp_path: Path) -> Path:
    cfg = tmp_path / "nolimits.toml"
    cfg.write_text(
        "[policy]\nbank_rows_limit = 0\ndimm_pages_limit = 0\n[budget]\nenabled = false\n"
    )
    return cfg


def test_replay_per_file_is_one_host_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _trace(tmp_path / "a.trace", [(1.0, 0x1234, 1)])
    b = _trace(tmp_path / "b.trace", [(2.0, 0x1234, 1)])
    code, out, _ = _run(capsys, str(a), str(b), "--json")
    assert code == 0 and json.loads(out)["pages_offlined"] == [0x1234]  # one host: 2 CEs
    code, out, _ = _run(capsys, str(a), str(b), "--json", "--per-file")
    lines = [json.loads(x) for x in out.splitlines()]
    assert [(x["file"], x["pages_offlined"]) for x in lines] == [(str(a), []), (str(b), [])]


def test_replay_budget_and_escalation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[budget]\nmax_offlines_per_hour = 1\n")
    items = [(float(i), 0x2000 + i // 2, 0x100 + i // 4) for i in range(8)]
    log = _trace(tmp_path / "a.trace", items)
    code, out, _ = _run(capsys, str(log), "--json", "--config", str(cfg))
    summary = json.loads(out)
    assert code == 0 and summary["budget_exhausted"] is True
    # Deferred offlines go out as the hour passes, at the end of input too.
    assert [a["at"] for a in summary["actions"]][:2] == [1.0, 3601.0]
    # 2 distinct rows in one bank: not yet a bank fault (the default escalates at the 3rd).
    code, out, _ = _run(capsys, str(log), "--json")
    assert json.loads(out)["escalations"] == []
    many = _trace(tmp_path / "m.trace", [(float(i), 0x3000 + i, 0x200 + i) for i in range(9)])
    code, out, _ = _run(capsys, str(many), "--json")
    [esc] = json.loads(out)["escalations"]
    assert esc["label"] == "CPU_SrcID#0_MC#0_Chan#1_DIMM#0" and esc["mc"] == 0
    assert "3 distinct bad rows in rank 0 bank 2" in esc["reason"]


def test_replay_human_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _trace(tmp_path / "a.trace", [(10.0, 0x1234, 1), (20.0, 0x1234, 1)])
    code, out, _ = _run(capsys, str(log))
    assert code == 0 and "pages offlined:   1" in out and "pfn=0x1234 soft" in out


def test_replay_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, str(tmp_path / "missing.log"), "--json")
    assert code == exitcodes.NOINPUT and "missing.log" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nce_threshold = 0\n")
    log = _trace(tmp_path / "a.trace", [(1.0, 1, 1)])
    code, out, err = _run(capsys, str(log), "--config", str(bad), "--json")
    assert code == exitcodes.CONFIG and "policy.ce_threshold" in err and out == ""
