"""Table tests: one rule each, on hand-built events through the real core."""

from __future__ import annotations

import errno
import json

import pytest

from hwpoisond.core import policy
from hwpoisond.core import state as st
from hwpoisond.core.model import ActionResult, Decision, Event, ResultKind
from hwpoisond.core.params import BudgetParams, PolicyParams, preset_params, with_overrides

from .helpers import DIMM_A, DIMM_B, ce, drive, offlines

DEFAULT = preset_params("default")
ROW_RULE = with_overrides(DEFAULT, row_pages_threshold=2)
DAY = 86400.0


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param([ce(1, 0), ce(1, DAY)], [(1, "soft")], id="two-within-window"),
        pytest.param([ce(1, 0), ce(1, DAY + 1)], [], id="two-outside-window"),
        pytest.param([ce(1, 0, count=2)], [(1, "soft")], id="error_count-counts"),
        pytest.param([ce(1, 0), ce(2, 1)], [], id="different-pages"),
        pytest.param(
            [ce(1, 0, severity="uncorrected"), ce(1, 1, severity="uncorrected")],
            [],
            id="ue-not-counted-as-ce",
        ),
        pytest.param(
            [ce(1, 0), ce(1, 0.5, source="mce_record")], [], id="same-error-two-sources-once"
        ),
        pytest.param(
            [ce(1, 0), ce(1, 5, source="mce_record")], [(1, "soft")], id="two-sources-apart"
        ),
        pytest.param(
            [
                ce(1, 0, rank=0, bank=2, row=7),
                ce(2, 1, rank=0, bank=2, row=7),
                ce(3, 2, rank=0, bank=2, row=7),
            ],
            [],
            id="default-has-no-row-rule",
        ),
        pytest.param(
            [ce(1, 0, rank=0, bank=2, row=7), ce(2, 1, rank=0, bank=2, row=8)],
            [],
            id="different-rows-no-row-rule",
        ),
    ],
)
def test_default_rules(events: list[Event], expected: list[tuple[int, str]]) -> None:
    _, log = drive(events, DEFAULT)
    assert offlines(log) == expected


def test_row_rule_when_enabled_makes_the_row_the_unit() -> None:
    # Off in the default preset (BENCHMARKS_POLICY.md: its memory cost); an operator may set it.
    events = [
        ce(1, 0, rank=0, bank=2, row=7),
        ce(2, 1, rank=0, bank=2, row=7),
        ce(3, 2, rank=0, bank=2, row=7),
    ]
    _, log = drive(events, ROW_RULE)
    assert offlines(log) == [(1, "soft"), (2, "soft"), (3, "soft")]
    _, log = drive([ce(1, 0, rank=0, bank=2, row=7), ce(2, 1, rank=0, bank=2, row=8)], ROW_RULE)
    assert offlines(log) == []


def test_reason_names_the_rule() -> None:
    _, log = drive([ce(1, 0, rank=0, bank=2, row=7), ce(2, 1, rank=0, bank=2, row=7)], ROW_RULE)
    assert all("row" in d.reason and "2 distinct bad pages" in d.reason for d in log)
    _, log = drive([ce(5, 0), ce(5, 10)], DEFAULT)
    assert log[0].reason == "2 corrected errors within 86400s (threshold 2/86400s)"


def test_non_memory_and_unlisted_sources_are_ignored() -> None:
    mce = Event("mce", "mce_record", "corrected", 1, 1 << 12, 1, 0.0)
    s, log = drive([mce, mce], DEFAULT)
    assert log == [] and st.tracked_page_count(s) == 0
    ras = preset_params("rasdaemon")
    s, _ = drive([ce(1, 0, source="mce_record", count=60)], ras)
    assert st.tracked_page_count(s) == 0


def test_dimm_limit_escalates_and_stops_retiring_there() -> None:
    p = with_overrides(DEFAULT, dimm_pages_limit=4)
    events = [ce(pfn, pfn) for pfn in range(1, 6)]  # 5 distinct pages > 4
    events += [ce(1, 10), ce(100, 11, label=DIMM_B, mc=1), ce(100, 12, label=DIMM_B, mc=1)]
    s, log = drive(events, p)
    esc = [d for d in log if d.kind == "escalate"]
    assert [(d.label, d.reason) for d in esc] == [
        (DIMM_A, f"replace DIMM {DIMM_A}: 5 distinct bad pages")
    ]
    assert offlines(log) == [(100, "soft")]  # page 1 on the futile DIMM is not retired
    assert st.escalations(s) == esc
    assert st.dimm_bad_pages(s)[DIMM_A] == 5


def test_escalated_dimm_is_not_retired_through_address_only_reports() -> None:
    # A trace has an mce_record (address only, no DIMM) next to every mc_event. Once the DIMM
    # is escalated its mc_event reports are futile; the address-only twins must not count a
    # page up to the threshold on their own, for pages new after the escalation (50) or seen
    # once before it (1).
    p = with_overrides(DEFAULT, dimm_pages_limit=4)
    events = [ce(pfn, pfn) for pfn in range(1, 6)]  # 5 distinct pages > 4: escalate at t=5
    for pfn, t in ((50, 10.0), (50, 20.0), (1, 30.0)):
        events += [ce(pfn, t, source="mce_record", label=None, mc=None), ce(pfn, t)]
    s, log = drive(events, p)
    assert [d.kind for d in log] == ["escalate"]
    assert st.page(s, 50) is None and st.page(s, 1) is None  # futile: not tracked
    # The same reports on a DIMM that is not escalated do retire the page (the rule is not
    # simply ignoring address-only reports).
    _, log = drive(events[:1] + events[5:], p)
    assert offlines(log) == [(50, "soft"), (1, "soft")]


def test_bank_with_many_rows_is_a_bank_fault() -> None:
    p = with_overrides(DEFAULT, bank_rows_limit=3)
    events = [ce(pfn, pfn, rank=1, bank=4, row=pfn) for pfn in range(1, 5)]
    events += [ce(1, 10, rank=1, bank=4, row=1)]  # would cross the page threshold
    _, log = drive(events, p)
    esc = [d for d in log if d.kind == "escalate"]
    assert len(esc) == 1 and "4 distinct bad rows in rank 1 bank 4" in esc[0].reason
    assert offlines(log) == []


def test_storm_without_locality_escalates_controller() -> None:
    p = with_overrides(DEFAULT, storm_ce_per_hour=50, storm_distinct_pages=20)
    events = [ce(1000 + i, float(i), label=None) for i in range(60)]  # 60 pages, 1 CE each
    events += [ce(1000 + i, 100.0 + i, label=None) for i in range(10)]  # now over threshold
    _, log = drive(events, p)
    esc = [d for d in log if d.kind == "escalate"]
    assert len(esc) == 1 and esc[0].at == 49.0 and esc[0].mc == 0
    assert "50 CEs over 50 distinct pages" in esc[0].reason
    assert offlines(log) == []  # the controller is futile: nothing retired there
    # ...while the same count on ONE page is locality: retire it, no storm.
    _, log = drive([ce(7, float(i), label=None) for i in range(60)], p)
    assert offlines(log) == [(7, "soft")] and not [d for d in log if d.kind == "escalate"]


def test_budget_bytes_once_and_keeps_counting() -> None:
    p = with_overrides(DEFAULT, budget=BudgetParams(max_retired_bytes=2 * 4096))
    events = [
        e for pfn in (1, 2, 3, 4) for e in (ce(pfn * 1000, pfn * 10), ce(pfn * 1000, pfn * 10 + 1))
    ]
    s, log = drive(events, p)
    assert offlines(log) == [(1000, "soft"), (2000, "soft")]
    budget = [d for d in log if d.kind == "budget_exhausted"]
    assert len(budget) == 1 and budget[0].pfn == 3000
    assert {r.pfn for r in st.pages_over_threshold(s)} == {3000, 4000}
    b = st.budget_status(s, p)
    assert (b.retired_bytes, b.remaining_bytes, b.exhausted) == (8192, 0, True)


def test_budget_rate_defers_then_expire_issues() -> None:
    p = with_overrides(DEFAULT, budget=BudgetParams(max_offlines_per_hour=2))
    events = [e for pfn in (1, 2, 3) for e in (ce(pfn * 1000, pfn), ce(pfn * 1000, pfn + 0.5))]
    s, log = drive(events, p)
    assert offlines(log) == [(1000, "soft"), (2000, "soft")]
    assert [d.pfn for d in log if d.kind == "budget_exhausted"] == [3000]
    assert st.next_due(s) == 1.5 + 3600
    s, out = policy.expire(s, 3600.0, p)
    assert out == ()
    s, out = policy.expire(s, 3601.5, p)
    assert offlines(out) == [(3000, "soft")]


def _fail(
    s: st.PolicyState,
    d: Decision,
    p: PolicyParams,
    code: int = errno.EBUSY,
    result: ResultKind = "failed",
) -> tuple[st.PolicyState, tuple[Decision, ...]]:
    assert d.pfn is not None and d.action is not None
    return policy.on_result(
        s, ActionResult(d.pfn, d.action, result, d.at, code, attempt=d.attempt), p
    )


def test_failed_soft_offline_retries_with_backoff_then_gives_up() -> None:
    p = with_overrides(DEFAULT, retry_max=2, retry_backoff_seconds=10.0)
    s = st.new_state()
    s, _ = policy.decide(s, ce(9, 0), p)
    s, out = policy.decide(s, ce(9, 1), p)
    s, more = _fail(s, out[0], p)
    assert more == () and st.page(s, 9).status == "retry"  # type: ignore[union-attr]
    assert policy.expire(s, 10.9, p)[1] == ()
    s, out = policy.expire(s, 11.0, p)  # failed at t=1, back-off 10 s
    assert [(d.pfn, d.attempt, d.at) for d in out] == [(9, 2, 11.0)]
    s, _ = _fail(s, out[0], p)
    s, out = policy.expire(s, 31.0, p)  # 11 + 10 * 2
    assert [(d.pfn, d.attempt) for d in out] == [(9, 3)]
    s, more = _fail(s, out[0], p)
    assert more == () and st.page(s, 9).status == "failed"  # type: ignore[union-attr]
    assert st.budget_status(s, p).retired_bytes == 0
    s, out = policy.decide(s, ce(9, 100), p)
    assert out == ()


def test_soft_then_hard_falls_back_only_when_configured() -> None:
    for action, expected in (("soft-then-hard", [(9, "hard")]), ("soft", [])):
        p = with_overrides(DEFAULT, retry_max=0, action=action)
        s = st.new_state()
        s, _ = policy.decide(s, ce(9, 0), p)
        s, out = policy.decide(s, ce(9, 1), p)
        assert offlines(out) == [(9, "soft")]
        s, more = _fail(s, out[0], p)
        assert offlines(more) == expected


def test_unsupported_is_not_retried_and_unverified_success_is() -> None:
    s = st.new_state()
    s, _ = policy.decide(s, ce(9, 0), DEFAULT)
    s, out = policy.decide(s, ce(9, 1), DEFAULT)
    s, more = _fail(s, out[0], DEFAULT, errno.EOPNOTSUPP, "unsupported")
    assert more == () and st.page(s, 9).status == "failed"  # type: ignore[union-attr]
    s = st.new_state()
    s, _ = policy.decide(s, ce(9, 0), DEFAULT)
    s, out = policy.decide(s, ce(9, 1), DEFAULT)
    d = out[0]
    r = ActionResult(9, "soft", "offlined", d.at, verified=False, attempt=1)
    s, _ = policy.on_result(s, r, DEFAULT)
    assert st.page(s, 9).status == "retry"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "event",
    [
        Event(
            "memory_failure",
            "memory_failure_event",
            None,
            pfn=9,
            time=0.5,
            result="Recovered",
            page_type="free buddy page",
        ),
        Event("cec_offline", "kmsg_cec", None, pfn=9, time=0.5),
        Event("soft_offline", "kmsg_soft_offline", None, pfn=9, time=0.5),
    ],
)
def test_kernel_initiated_offline_is_never_repeated(event: Event) -> None:
    s, log = drive([ce(9, 0), event, ce(9, 1), ce(9, 2)], DEFAULT)
    assert offlines(log) == []
    assert st.kernel_poisoned_pages(s) == [9]


def test_failed_kernel_soft_offline_does_not_poison() -> None:
    ev = Event(
        "soft_offline", "kmsg_soft_offline", None, pfn=9, time=0.5, result="migration failed"
    )
    s, log = drive([ce(9, 0), ev, ce(9, 1)], DEFAULT)
    assert offlines(log) == [(9, "soft")] and st.kernel_poisoned_pages(s) == []


def test_already_poisoned_result_is_kept() -> None:
    s = st.new_state()
    s, _ = policy.decide(s, ce(9, 0), DEFAULT)
    s, _ = policy.decide(s, ce(9, 1), DEFAULT)
    s, _ = policy.on_result(s, ActionResult(9, "soft", "already_poisoned", 1.0), DEFAULT)
    assert st.kernel_poisoned_pages(s) == [9] and st.retired_pages(s) == []
    assert st.budget_status(s, DEFAULT).retired_bytes == 0


def test_uncorrected_errors_are_counted_and_surfaced() -> None:
    s, log = drive(
        [ce(9, 0, severity="uncorrected"), ce(10, 1, severity="fatal", label=DIMM_B)], DEFAULT
    )
    assert log == []
    assert st.uncorrected_counts(s) == {"total": 2, DIMM_A: 1, DIMM_B: 1}
    assert [(e.pfn, e.severity) for e in st.recent_uncorrected(s)] == [
        (9, "uncorrected"),
        (10, "fatal"),
    ]


def test_action_off_and_account() -> None:
    s, log = drive([ce(9, 0), ce(9, 1)], with_overrides(DEFAULT, action="off"))
    assert log == [] and [r.pfn for r in st.pages_over_threshold(s)] == [9]
    s, log = drive([ce(9, 0), ce(9, 1)], with_overrides(DEFAULT, action="account"))
    assert offlines(log) == [(9, "account")]
    assert st.page(s, 9).status == "accounted"  # type: ignore[union-attr]
    assert st.budget_status(s, DEFAULT).retired_bytes == 0


def test_retired_page_accessors() -> None:
    s, _ = drive([ce(9, 0), ce(9, 1)], DEFAULT)
    [r] = st.retired_pages(s)
    assert (r.pfn, r.at, r.action) == (9, 1, "soft") and "threshold" in r.reason


def test_tracked_pages_are_capped_and_evict_only_sub_threshold() -> None:
    p = with_overrides(
        DEFAULT, max_tracked_pages=10, dimm_pages_limit=0, bank_rows_limit=0, action="off"
    )
    events = [ce(1, 0), ce(1, 1)] + [ce(pfn, 2 + pfn) for pfn in range(100, 200)]
    s, _ = drive(events, p)
    assert len(s.hot) == 10 and st.page(s, 1).status == "over"  # type: ignore[union-attr]
    assert st.tracked_page_count(s) == 11


def test_expire_forgets_idle_pages() -> None:
    s, _ = drive([ce(1, 0), ce(2, 100)], DEFAULT)
    s, _ = policy.expire(s, DAY + 50, DEFAULT)
    assert st.page(s, 1) is None and st.page(s, 2) is not None


def test_linear_use_rule_and_snapshots() -> None:
    s0 = st.new_state()
    s1, _ = policy.decide(s0, ce(1, 0), DEFAULT)
    assert s1 is s0  # consumed and returned: callers must use the returned state only
    snap = st.to_plain(s1)
    copy = st.copy_state(s1)
    s2, out = policy.decide(s1, ce(1, 1), DEFAULT)
    assert offlines(out) == [(1, "soft")]
    assert st.to_plain(s2) != snap and st.from_plain(snap).pages == {}
    _, out = policy.decide(copy, ce(1, 1), DEFAULT)  # the copy replays independently
    assert offlines(out) == [(1, "soft")]


def test_plain_is_json_safe_and_round_trips() -> None:
    p = with_overrides(DEFAULT, budget=BudgetParams(max_offlines_per_hour=1))
    events = [
        ce(1, 0, rank=0, bank=1, row=2),
        ce(2, 1, rank=0, bank=1, row=2),
        ce(3, 2, severity="uncorrected"),
    ]
    s, _ = drive(events, p)
    plain = st.to_plain(s)
    assert json.loads(json.dumps(plain, allow_nan=False)) == plain
    assert st.to_plain(st.from_plain(json.loads(json.dumps(plain)))) == plain
    with pytest.raises(st.PlainStateError):
        st.from_plain({"version": 99})


def test_params_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT.ce_threshold = 3  # type: ignore[misc]
    assert isinstance(DEFAULT, PolicyParams)


def test_an_address_in_page_0_is_no_page_but_counts_for_its_dimm() -> None:
    # EDAC drivers print page 0 with an offset when they do not know the address.
    params = with_overrides(DEFAULT, dimm_pages_limit=0)
    events = [
        Event("memory_error", "mc_event", "corrected", 5, 0x567, None, t, label=DIMM_A, mc=0)
        for t in (0.0, 1.0, 2.0)
    ]
    state, log = drive(events, params)
    assert offlines(log) == []
    assert state.pages == {} and 0 not in state.hot
    assert state.ce_total == 15
    assert state.not_offlinable_events == 3
    assert st.from_plain(json.loads(json.dumps(st.to_plain(state)))).not_offlinable_events == 3
