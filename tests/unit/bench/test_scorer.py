"""The policy-benchmark scorer on tiny hand-made hosts whose answers are worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from bench.policy.scorer import (
    ReplayResult,
    aggregate,
    dominates,
    markdown_table,
    score_host,
)
from bench.policy.truth import HostTruth, TruthCE, TruthFault, TruthUE

DIMM_A = "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"
DIMM_B = "CPU_SrcID#0_MC#1_Chan#1_DIMM#0"


def _truth() -> HostTruth:
    """Fault 0: a single-bit fault on pfn 100 (DIMM A), CEs at 10, 20, 30, 40, UE at 35.
    Fault 1: a bank fault on DIMM B (mc 1): CEs on pfns 200, 201, 202 at 50, 60, 70; UE on
    pfn 999 at 100."""
    return HostTruth(
        host=0,
        seed=1,
        start_at=0.0,
        end_at=1000.0,
        cec=False,
        faults=(
            TruthFault(0, "single-bit", True, False, (DIMM_A,), (0,), 10.0, 4, 1),
            TruthFault(1, "single-bank", True, True, (DIMM_B,), (1,), 50.0, 3, 3),
        ),
        ces=(
            TruthCE(10.0, 100, 0),
            TruthCE(20.0, 100, 0),
            TruthCE(30.0, 100, 0),
            TruthCE(40.0, 100, 0),
            TruthCE(50.0, 200, 1),
            TruthCE(60.0, 201, 1),
            TruthCE(70.0, 202, 1),
        ),
        ues=(TruthUE(35.0, 100, 0, DIMM_A, 0), TruthUE(100.0, 999, 1, DIMM_B, 1)),
    )


def _result(**kw: Any) -> ReplayResult:
    data: dict[str, Any] = {
        "events": 9,
        "pages_offlined": [],
        "actions": [],
        "escalations": [],
        "budget_exhausted": False,
    }
    data.update(kw)
    return ReplayResult.from_json(data)


def test_no_action_avoids_nothing() -> None:
    s = score_host(_truth(), _result())
    assert (s.ues, s.ues_avoided, s.ces, s.ces_avoided, s.pages_retired) == (2, 0, 7, 0, 0)
    assert s.first_action_delay_seconds is None
    assert (s.offline_attempts, s.offline_failures, s.escalations) == (0, 0, 0)


def test_retiring_before_the_ue_avoids_it_and_later_ces() -> None:
    # Retired at 20 (second CE): the UE at 35 and the CEs at 30 and 40 never happen.
    result = _result(
        pages_offlined=[100],
        actions=[{"at": 20.0, "pfn": 100, "action": "soft", "reason": "2 CEs in 24h"}],
    )
    s = score_host(_truth(), result)
    assert (s.ues_avoided_by_retirement, s.ues_avoided_by_escalation) == (1, 0)
    assert s.ces_avoided == 2
    assert s.pages_retired == 1
    assert s.first_action_delay_seconds == pytest.approx(10.0)


def test_retiring_after_the_ue_is_too_late() -> None:
    result = _result(
        pages_offlined=[100],
        actions=[{"at": 40.0, "pfn": 100, "action": "soft", "reason": "x"}],
    )
    s = score_host(_truth(), result)
    assert s.ues_avoided == 0
    assert s.ces_avoided == 0  # the CE at 40 is the one that triggered it, not after it


def test_a_failed_attempt_then_a_retry_counts_the_retry_time_and_one_failure() -> None:
    # First attempt at 20 failed (pfn not in pages_offlined yet), the retry at 38 worked:
    # the UE at 35 was NOT avoided; the CE at 40 was.
    result = _result(
        pages_offlined=[100],
        actions=[
            {"at": 20.0, "pfn": 100, "action": "soft", "reason": "threshold"},
            {"at": 38.0, "pfn": 100, "action": "soft", "reason": "retry"},
        ],
    )
    s = score_host(_truth(), result)
    assert (s.offline_attempts, s.offline_failures, s.pages_retired) == (2, 1, 1)
    assert s.ues_avoided == 0
    assert s.ces_avoided == 1


def test_failed_offlines_retire_nothing() -> None:
    result = _result(actions=[{"at": 20.0, "pfn": 100, "action": "soft", "reason": "x"}])
    s = score_host(_truth(), result)
    assert (s.offline_attempts, s.offline_failures, s.pages_retired, s.ues_avoided) == (
        1,
        1,
        0,
        0,
    )


def test_account_actions_are_not_offlines() -> None:
    result = _result(actions=[{"at": 20.0, "pfn": 100, "action": "account", "reason": "x"}])
    s = score_host(_truth(), result)
    assert (s.offline_attempts, s.offline_failures) == (0, 0)
    assert s.first_action_delay_seconds is None


def test_escalation_before_the_ue_avoids_it_and_is_right_for_a_wide_fault() -> None:
    result = _result(
        escalations=[{"at": 70.0, "label": DIMM_B, "mc": 1, "reason": "3 pages on DIMM"}]
    )
    s = score_host(_truth(), result)
    assert (s.ues_avoided_by_escalation, s.escalations, s.escalations_right) == (1, 1, 1)
    # With a 1-minute repair lead the DIMM could not have been swapped before the UE at 100.
    late = score_host(_truth(), result, repair_lead_seconds=60.0)
    assert late.ues_avoided_by_escalation == 0


def test_label_less_escalation_matches_the_memory_controller() -> None:
    result = _result(escalations=[{"at": 80.0, "label": None, "mc": 1, "reason": "storm"}])
    s = score_host(_truth(), result)
    assert (s.ues_avoided_by_escalation, s.escalations_right) == (1, 1)


def test_escalating_a_single_bit_dimm_is_wrong_and_repeats_count_once() -> None:
    esc = {"at": 30.0, "label": DIMM_A, "mc": 0, "reason": "x"}
    s = score_host(_truth(), _result(escalations=[esc, {**esc, "at": 31.0}]))
    assert (s.escalations, s.escalations_right) == (1, 0)
    assert s.ues_avoided_by_escalation == 1  # it still names the UE's DIMM before the UE


def test_kernel_cec_offlines_count_for_every_policy() -> None:
    t = _truth()
    cec_truth = HostTruth(
        t.host,
        t.seed,
        t.start_at,
        t.end_at,
        True,
        t.faults,
        t.ces,
        (TruthUE(35.0, 100, 0, DIMM_A, 0, cec_offlined=True),),
    )
    s = score_host(cec_truth, _result())
    assert (s.ues_avoided_by_kernel, s.ues_avoided) == (1, 1)


def test_truth_json_round_trip() -> None:
    t = _truth()
    assert HostTruth.from_json(t.to_json()) == t


def test_aggregate_and_dominance() -> None:
    retire = _result(
        pages_offlined=[100],
        actions=[{"at": 20.0, "pfn": 100, "action": "soft", "reason": "x"}],
    )
    greedy = _result(
        pages_offlined=[100, 200, 201],
        actions=[
            {"at": 10.0, "pfn": 100, "action": "soft", "reason": "x"},
            {"at": 50.0, "pfn": 200, "action": "soft", "reason": "x"},
            {"at": 60.0, "pfn": 201, "action": "soft", "reason": "x"},
        ],
    )
    a = aggregate("default", [score_host(_truth(), retire)] * 2)
    b = aggregate("first-ce", [score_host(_truth(), greedy)] * 2)
    c = aggregate("none", [score_host(_truth(), _result())] * 2)
    assert (a.ues, a.ues_avoided, a.pages_retired, a.hosts_acted) == (4, 2, 2, 2)
    assert a.mib_retired == pytest.approx(2 * 4096 / 2**20)
    assert a.median_first_action_hours == pytest.approx(10.0 / 3600)
    assert dominates(a, b)  # same UEs avoided, less memory
    assert not dominates(b, a)
    assert not dominates(a, c)  # more UEs avoided but more memory retired: a trade-off
    assert not dominates(a, a)
    table = markdown_table([a, b, c])
    assert "| first-ce | 2 / 4" in table and "| yes |" in table and "**no**" in table
