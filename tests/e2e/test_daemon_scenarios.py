"""hwpoisond on a real kernel: real injected errors in, real soft offlines out (issue 7).

Rule: the guest (tests/e2e/guest/scenarios.py) injects errors and records facts; these tests judge
the facts. Two boots share one out directory, so the second boot sees the first one's state
directory exactly as a rebooted machine would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import harness

pytestmark = pytest.mark.e2e

PAGE_KB = 4
EIO = 5
EBUSY = 16


@dataclass(frozen=True)
class Boots:
    out: Path
    first: harness.GuestRun
    second: harness.GuestRun

    def result(self, name: str) -> dict[str, Any]:
        path = self.out / "results" / f"{name}.json"
        assert path.is_file(), f"scenario {name} wrote no result; guest log:\n" + _tail(
            self.out / "scenario.log"
        )
        facts: dict[str, Any] = json.loads(path.read_text())
        assert "error" not in facts, f"scenario {name} failed in the guest:\n{facts['error']}"
        return facts


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-60:])


@pytest.fixture(scope="module")
def boots(guest_kernel: harness.GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Boots:
    out = tmp_path_factory.mktemp("daemon")
    first = harness.boot(
        guest_kernel,
        out,
        harness.scenario_script('cd "$REPO" && exec "$PY" -m tests.e2e.guest.scenarios first-boot'),
        timeout_seconds=1800,
    )
    second = harness.boot(
        guest_kernel,
        out,
        harness.scenario_script(
            'cd "$REPO" && exec "$PY" -m tests.e2e.guest.scenarios second-boot'
        ),
        timeout_seconds=1200,
    )
    for name, run in (("first", first), ("second", second)):
        print(f"{name} boot: {run.boot_seconds:.1f}s to scenario, {run.total_seconds:.1f}s in all")
    for path in sorted((out / "results").glob("*.json")):
        print(f"  {path.stem}: {json.loads(path.read_text()).get('seconds')}s")
    return Boots(out, first, second)


def _page(status: dict[str, Any], pfn: int) -> dict[str, Any] | None:
    """The page as `status --json` lists it: among the retired or the near-threshold pages."""
    for section in ("retired", "near_threshold"):
        for page in status[section]:
            if page["pfn"] == pfn:
                return dict(page, section=section)
    return None


def test_daemon_starts_on_the_real_kernel_and_serves_metrics(boots: Boots) -> None:
    facts = boots.result("start")
    # Families with samples before any event (a counter with no labelled sample yet is absent).
    assert {"hwpoisond_retired_pages", "hwpoisond_source_up"} <= set(facts["metrics"])
    assert boots.first.exit_code == 0, _tail(boots.first.scenario_log)


def test_recurring_corrected_errors_soft_offline_the_page(boots: Boots) -> None:
    facts = boots.result("recurring_ce")
    before, after = facts["before"], facts["after"]
    assert before["hwpoison"]["recurring"] == 0
    assert after["hwpoison"]["recurring"] == 1  # KPF_HWPOISON, from the kernel itself
    assert after["hardware_corrupted_kb"] - before["hardware_corrupted_kb"] == PAGE_KB
    assert facts["retired_pages_metric"] == 1
    assert facts["offline_ok_metric"] == 1
    assert facts["corrected_metric"] == 3


def test_below_threshold_no_action(boots: Boots) -> None:
    facts = boots.result("recurring_ce")
    assert facts["after"]["hwpoison"]["below"] == 0
    status = boots.result("restart")["status"]
    below = _page(status, facts["pages"]["below"])
    assert below is not None
    assert (below["section"], below["ce_count"], below["state"]) == ("near_threshold", 1, "tracked")


def test_corrupt_pfn_recorded_as_uncorrected_and_exported(boots: Boots) -> None:
    facts = boots.result("corrupt_pfn")
    # The kernel's own verdict, exported with page type and result (include/ras/ras_event.h).
    assert facts["kernel_uncorrected"] == {
        json.dumps({"page_type": "free buddy page", "result": "recovered"}): 1.0
    }
    # hwpoisond does not soft-offline what the kernel already poisoned: one page's worth only.
    assert facts["after"]["hwpoison"]["corrupt"] == 1


def test_restart_mid_stream_adds_up(boots: Boots) -> None:
    facts = boots.result("restart")
    assert facts["stop_exit_code"] == 0
    assert facts["hwpoison_before_restart"] == 0  # one error before the restart: below threshold
    assert facts["after"]["hwpoison"]["restart"] == 1  # the second, after it, completes the pair
    status = facts["status"]
    restart = _page(status, facts["pfn"])
    assert restart is not None
    assert (restart["section"], restart["ce_count"], restart["verified"]) == ("retired", 2, True)
    recurring = _page(status, boots.result("recurring_ce")["pages"]["recurring"])
    assert recurring is not None
    assert (recurring["section"], recurring["ce_count"]) == ("retired", 2)  # not re-read
    # 5 mce_record (1 + 2 + 2) and 1 memory_failure_event, each stored exactly once.
    assert status["events_stored"] == 6
    assert facts["daemon_alive"] is True
    assert facts["final_stop_exit_code"] == 0


def test_reboot_reoffline_exactly_the_retired_pages(boots: Boots) -> None:
    facts = boots.result("reboot")
    assert boots.second.exit_code == 0, _tail(boots.second.scenario_log)
    assert facts["before"]["hardware_corrupted_kb"] == 0  # a new boot: the kernel forgot
    after = facts["after"]
    assert after["hwpoison"] == {"below": 0, "recurring": 1, "corrupt": 0, "restart": 1}
    assert after["hardware_corrupted_kb"] == 2 * PAGE_KB
    assert facts["stop_exit_code"] == 0


def test_budget_stops_offlines_and_a_refused_offline_is_recorded_and_retried(
    boots: Boots,
) -> None:
    facts = boots.result("budget_and_refusal")
    after = facts["after"]
    good_poisoned = [after["hwpoison"][str(p)] for p in facts["good_pfns"]]
    assert sum(good_poisoned) == 2  # max_retired_bytes = 8192: two pages, no more
    assert good_poisoned == [1, 1, 0, 0]  # in the order their errors arrived
    assert after["hwpoison"]["refused"] == 0
    assert after["hardware_corrupted_kb"] - facts["before"]["hardware_corrupted_kb"] == 2 * PAGE_KB
    assert facts["budget_exhausted_metric"] == 1
    status = facts["status"]
    assert sorted(p["pfn"] for p in status["retired"]) == sorted(facts["good_pfns"][:2])
    failures = [f for f in status["failures"] if f["pfn"] == facts["refused_pfn"]]
    # The first try and retry_max = 2 retries, then it stops.
    assert sorted(f["attempt"] for f in failures) == [1, 2, 3], failures
    assert all(f["result"] == "failed" and f["errno"] in (EIO, EBUSY) for f in failures)
    assert any(e["kind"] == "budget_exhausted" for e in status["escalations"])
    assert facts["daemon_alive"] is True
    assert facts["stop_exit_code"] == 0


def test_two_sources_do_not_double_count(boots: Boots) -> None:
    facts = boots.result("two_sources")
    # Both sources really ran, or this proves nothing.
    assert facts["source_up"].get("tracefs") == 1
    assert facts["source_up"].get("journald") == 1
    by_severity: dict[str, float] = {}
    for labels, count in facts["memory_errors"].items():
        severity = json.loads(labels)["error_severity"]
        by_severity[severity] = by_severity.get(severity, 0) + count
    assert by_severity == {"corrected": 1}
    assert facts["kernel_uncorrected"] == 1
    assert facts["deduplicated"] >= 1  # the journal copy was read, and dropped, not missed
    assert facts["after"]["hwpoison"]["ce"] == 0  # one CE is below the threshold of 2
    status = facts["status"]
    ce_page = _page(status, facts["pfns"]["ce"])
    assert ce_page is not None and ce_page["ce_count"] == 1
    assert status["events_stored"] == 2
    assert facts["stop_exit_code"] == 0
