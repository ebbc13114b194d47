"""Hypothesis properties of the policy core (HWPOISOND_BIG_TESTS=1 for many more examples)."""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as hst

from hwpoisond.core import state as st
from hwpoisond.core.model import Decision, Event
from hwpoisond.core.params import BudgetParams, preset_params, with_overrides

from .helpers import DIMM_A, DIMM_B, ce, drive, fails

BIG = os.environ.get("HWPOISOND_BIG_TESTS") == "1"
EXAMPLES = 3000 if BIG else 200
LABELS = (DIMM_A, DIMM_B, None)
KERNEL_KINDS = ("memory_failure", "cec_offline")

BUDGETED = with_overrides(
    preset_params("default"),
    retry_max=2,
    retry_backoff_seconds=100.0,
    dimm_pages_limit=12,
    bank_rows_limit=4,
    budget=BudgetParams(max_retired_bytes=6 * 4096, max_offlines_per_hour=4),
)


@hst.composite
def traces(draw: hst.DrawFn, kernel_events: bool = True) -> list[Event]:
    n = draw(hst.integers(1, 60))
    t = 0.0
    events: list[Event] = []
    for _ in range(n):
        t += draw(hst.sampled_from((0.0, 0.5, 30.0, 900.0, 4000.0, 50000.0)))
        pfn = draw(hst.integers(1, 24))
        roll = draw(hst.integers(0, 19))
        if kernel_events and roll == 0:
            events.append(
                Event(draw(hst.sampled_from(KERNEL_KINDS)), "kmsg_cec", None, pfn=pfn, time=t)
            )
            continue
        row = draw(hst.sampled_from((None, 1, 2, 3)))
        events.append(
            ce(
                pfn,
                t,
                source=draw(hst.sampled_from(("mc_event", "mce_record"))),
                count=draw(hst.integers(1, 2)),
                label=LABELS[pfn % 3],
                mc=pfn % 2,
                rank=0 if row is not None else None,
                bank=pfn % 2 if row is not None else None,
                row=row,
                severity="uncorrected" if roll == 1 else "corrected",
            )
        )
    return events


def _offline_times(log: list[Decision]) -> list[float]:
    return sorted(d.at for d in log if d.kind == "offline" and d.action in ("soft", "hard"))


@settings(max_examples=EXAMPLES, deadline=None)
@given(traces(), hst.sampled_from((0.0, 0.3)))
def test_budget_is_never_exceeded(events: list[Event], fail_rate: float) -> None:
    limit = BUDGETED.budget.max_retired_bytes
    assert limit is not None

    def check(s: st.PolicyState) -> None:
        assert s.retired_bytes <= limit
        assert len(st.retired_pages(s)) * 4096 <= limit

    _, log = drive(events, BUDGETED, fail_rate=fail_rate, check=check)
    times = _offline_times(log)
    for i, t in enumerate(times):
        in_hour = [x for x in times[: i + 1] if x > t - 3600.0]
        assert len(in_hour) <= 4


@settings(max_examples=EXAMPLES, deadline=None)
@given(traces(), hst.sampled_from((0.0, 0.3)))
def test_a_retired_page_never_gets_another_offline(events: list[Event], rate: float) -> None:
    _, log = drive(events, BUDGETED, fail_rate=rate)
    retired: set[int] = set()
    for d in log:
        if d.kind != "offline":
            continue
        assert d.pfn not in retired, d
        if d.action == "account" or not fails(d.pfn or 0, d.attempt, rate):
            retired.add(d.pfn or 0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(traces(), hst.data())
def test_interruption_anywhere_makes_the_same_decisions(
    events: list[Event], data: hst.DataObject
) -> None:
    cut = data.draw(hst.integers(0, len(events) - 1))
    for params in (BUDGETED, preset_params("rasdaemon"), preset_params("kernel-cec")):
        s1, straight = drive(events, params, fail_rate=0.3)
        s2, restored = drive(events, params, fail_rate=0.3, interrupt_at=cut)
        assert restored == straight
        assert st.to_plain(s2) == st.to_plain(s1)


WINDOW_ONLY = with_overrides(
    preset_params("default"), dimm_pages_limit=0, bank_rows_limit=0, storm_ce_per_hour=0
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    hst.lists(
        hst.tuples(
            hst.integers(1, 20),
            hst.floats(0, 80000),
            hst.integers(1, 2),
            hst.sampled_from((None, 1, 2)),
        ),
        min_size=1,
        max_size=50,
    ),
    hst.randoms(use_true_random=False),
)
def test_order_within_the_window_does_not_matter(
    spec: list[tuple[int, float, int, int | None]], rnd: random.Random
) -> None:
    def build(items: list[tuple[int, float, int, int | None]]) -> list[Event]:
        return [
            ce(pfn, t, count=c, rank=0 if row else None, bank=0 if row else None, row=row)
            for pfn, t, c, row in items
        ]

    in_order = sorted(spec, key=lambda item: item[1])
    shuffled = list(spec)
    rnd.shuffle(shuffled)
    _, a = drive(build(in_order), WINDOW_ONLY)
    _, b = drive(build(shuffled), WINDOW_ONLY)
    assert {d.pfn for d in a if d.kind == "offline"} == {d.pfn for d in b if d.kind == "offline"}


@settings(max_examples=EXAMPLES, deadline=None)
@given(traces(kernel_events=False))
def test_eviction_never_loses_an_over_threshold_page(events: list[Event]) -> None:
    tiny = with_overrides(BUDGETED, max_tracked_pages=2, max_tracked_units=2, budget=BudgetParams())
    s, log = drive(events, tiny)
    assert len(s.hot) <= 2
    for d in log:
        if d.kind == "offline":
            rec = st.page(s, d.pfn or 0)
            assert rec is not None and rec.status != "tracking"


def test_a_million_page_storm_stays_bounded() -> None:
    pages = 1_000_000 if BIG else 100_000
    p = with_overrides(preset_params("default"), max_tracked_pages=5000, max_tracked_units=500)
    from hwpoisond.core import policy

    s = st.new_state()
    for i in range(pages):
        s, _ = policy.decide(
            s, ce(i, float(i) / 100, label=f"DIMM{i % 4096}", rank=0, bank=i % 16, row=i), p
        )
    assert len(s.hot) <= 5000
    assert max(len(s.rows), len(s.banks), len(s.dimms), len(s.mcs)) <= 500
    assert len(s.pages) <= 500 * 65  # only pages over threshold are kept, never evicted
    assert st.tracked_page_count(s) <= 5000 + len(s.pages)
