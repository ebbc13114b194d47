"""The policy's page records stay bounded whatever the preset (issue 19, "Bounded under storms")."""

from __future__ import annotations

import json

import pytest

from hwpoisond.core import policy
from hwpoisond.core.params import PresetName, preset_params, with_overrides
from hwpoisond.core.state import from_plain, new_state, to_plain

from .helpers import ce, drive, offlines

BOUND = 8


@pytest.mark.parametrize("preset", ["first-ce", "rasdaemon", "mcelog", "kernel-cec"])
def test_a_storm_keeps_at_most_the_bound_and_counts_the_rest(preset: PresetName) -> None:
    params = with_overrides(preset_params(preset), max_page_records=BOUND)
    n = params.ce_threshold
    events = [ce(pfn, float(pfn), count=n, source="mc_event") for pfn in range(1, 41)]
    if params.counter in ("mcelog", "cec"):
        # mcelog and the CEC count one per machine check, from mce_record.
        events = [
            ce(pfn, float(pfn) + i / 1000, source="mce_record", label=None)
            for pfn in range(1, 41)
            for i in range(n)
        ]
    state, log = drive(events, params)
    assert len(state.pages) <= BOUND
    done = offlines(log)
    # Every kept page was retired (no budget in these presets): none held back to evict, so
    # the other 32 pages were counted, never decided, never dropped unseen.
    assert [pfn for pfn, _ in done] == list(range(1, BOUND + 1))
    assert state.untracked_events >= 40 - BOUND
    assert all(rec.status == "retired" for rec in state.pages.values())


def test_pages_held_back_make_room_oldest_first_and_owed_work_is_never_dropped() -> None:
    # A budget of 2 pages: two are retired, the rest held back ("over") and evictable.
    base = preset_params("first-ce")
    params = with_overrides(base, max_page_records=BOUND)
    params = with_overrides(
        params, budget=type(base.budget)(max_retired_bytes=2 * 4096, max_offlines_per_hour=None)
    )
    state, log = drive([ce(pfn, float(pfn)) for pfn in range(1, 31)], params)
    assert [pfn for pfn, _ in offlines(log)] == [1, 2]
    assert len(state.pages) == BOUND
    assert state.untracked_events == 0
    assert {1, 2} <= set(state.pages), "retired pages are never the ones to make room"
    # The newest held pages are kept: 25..30 beside the two retired.
    assert sorted(state.pages) == [1, 2, 25, 26, 27, 28, 29, 30]


def test_the_bound_survives_a_checkpoint_and_decides_the_same() -> None:
    params = with_overrides(preset_params("first-ce"), max_page_records=BOUND)
    events = [ce(pfn, float(pfn)) for pfn in range(1, 21)]
    straight, log_straight = drive(events, params)
    through, log_through = drive(events, params, interrupt_at=12)
    assert log_straight == log_through
    assert to_plain(straight) == to_plain(through)
    assert through.untracked_events == straight.untracked_events == 20 - BOUND


def test_a_checkpoint_from_before_the_bound_restores() -> None:
    plain = to_plain(new_state())
    del plain["untracked_events"], plain["held"]
    s = from_plain(json.loads(json.dumps(plain)))
    assert s.untracked_events == 0 and not s.held
    s, out = policy.decide(s, ce(7, 0.0), preset_params("first-ce"))
    assert offlines(list(out)) == [(7, "soft")]
