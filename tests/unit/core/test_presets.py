"""Preset anchors on hand-made traces: each preset reproduces the tool it names.

Sources: rasdaemon ras-page-isolation.c page_record(); mcelog leaky-bucket.c __bucket_account()
and page.c account_page_error(); Linux drivers/ras/cec.c cec_add_elem() (5.x-6.x).
"""

from __future__ import annotations

import errno

from hwpoisond.core import policy
from hwpoisond.core import state as st
from hwpoisond.core.model import ActionResult
from hwpoisond.core.params import preset_params

from .helpers import ce, drive, offlines

DAY = 86400.0
T0 = 1_000_000.0  # rasdaemon treats start time 0 as unset; real clocks are far from it


def test_rasdaemon_threshold_50_counts_error_count() -> None:
    p = preset_params("rasdaemon")
    _, log = drive([ce(1, T0 + i) for i in range(49)], p)
    assert log == []
    _, log = drive([ce(1, T0 + i) for i in range(50)], p)
    assert offlines(log) == [(1, "soft")] and log[0].at == T0 + 49
    _, log = drive([ce(1, T0, count=50)], p)
    assert offlines(log) == [(1, "soft")]


def test_rasdaemon_bucket_drains_threshold_times_elapsed_over_cycle() -> None:
    p = preset_params("rasdaemon")
    # 45 CEs, then 1.1 cycles later: tolerate = int(1.1 * 50) = 55 >= 45, so the bucket is empty.
    events = [ce(1, T0) for _ in range(45)] + [ce(1, T0 + 1.1 * DAY, count=49)]
    assert drive(events, p)[1] == []
    # Half a cycle later nothing drains (period < cycle): 45 + 5 = 50 crosses.
    events = [ce(1, T0) for _ in range(45)] + [ce(1, T0 + 0.5 * DAY, count=5)]
    assert offlines(drive(events, p)[1]) == [(1, "soft")]
    # 1.5 cycles: tolerate = 75 > 45 + ..., but 30 CEs at 0.9 cycles stay: 30, then at 1.5 cycles
    # (0.6 cycles after 0?) period from start=T0 is 1.5 cycles -> drains 75 -> 0, + 50 crosses.
    events = [ce(1, T0, count=30), ce(1, T0 + 1.5 * DAY, count=49)]
    assert drive(events, p)[1] == []
    events = [ce(1, T0, count=30), ce(1, T0 + 1.5 * DAY, count=50)]
    assert offlines(drive(events, p)[1]) == [(1, "soft")]


def test_rasdaemon_partial_drain_keeps_the_rest() -> None:
    p = preset_params("rasdaemon")
    # Threshold 50 over 24h, 49 CEs; exactly one cycle later tolerate = 50 drains all 49.
    assert drive([ce(1, T0, count=49), ce(1, T0 + DAY, count=1)], p)[1] == []
    # A 10-CE-per-hour page: (1/24)*50 = 2 drained per refresh only once period >= cycle, so a
    # steady trickle below the cycle never drains: 50 CEs in 49 hours cross.
    events = [ce(1, T0 + h * 3600.0) for h in range(23)] + [ce(1, T0 + 23 * 3600.0, count=27)]
    assert offlines(drive(events, p)[1]) == [(1, "soft")]


def test_rasdaemon_retries_a_failed_page_at_its_next_crossing() -> None:
    p = preset_params("rasdaemon")
    s = st.new_state()
    s, out = policy.decide(s, ce(1, T0, count=50), p)
    assert offlines(out) == [(1, "soft")]
    s, more = policy.on_result(s, ActionResult(1, "soft", "failed", T0, errno.EBUSY), p)
    assert more == ()
    s, out = policy.decide(s, ce(1, T0 + 1, count=49), p)
    assert out == ()
    s, out = policy.decide(s, ce(1, T0 + 2, count=1), p)
    assert offlines(out) == [(1, "soft")]


def test_mcelog_counts_one_per_record_and_never_retries() -> None:
    p = preset_params("mcelog")
    _, log = drive([ce(1, T0 + i, source="mce_record") for i in range(9)], p)
    assert log == []
    _, log = drive([ce(1, T0 + i, source="mce_record") for i in range(10)], p)
    assert offlines(log) == [(1, "soft")]
    _, log = drive([ce(1, T0, source="mce_record", count=10)], p)
    assert log == []  # __bucket_account(..., 1, t): error counts are not summed
    _, log = drive([ce(1, T0 + i) for i in range(20)], p)
    assert log == []  # EDAC mc_event is not what mcelog reads
    s = st.new_state()
    for i in range(10):
        s, out = policy.decide(s, ce(1, T0 + i, source="mce_record"), p)
    s, more = policy.on_result(s, ActionResult(1, "soft", "failed", T0, errno.EBUSY), p)
    assert more == ()
    for i in range(30):
        s, out = policy.decide(s, ce(1, T0 + 100 + i, source="mce_record"), p)
        assert out == ()  # page.c: mp->offlined != PAGE_ONLINE -> no more action


def test_mcelog_bucket_ages_by_capacity_times_elapsed() -> None:
    p = preset_params("mcelog")
    events = [ce(1, T0 + i, source="mce_record") for i in range(9)]
    events.append(ce(1, T0 + 2 * DAY, source="mce_record"))  # ages 2 * 10 -> empty, 1 left
    assert drive(events, p)[1] == []


def test_kernel_cec_threshold_two_and_counts_never_decay() -> None:
    p = preset_params("kernel-cec")
    _, log = drive([ce(1, 0, source="mce_record"), ce(1, 30 * DAY, source="mce_record")], p)
    assert offlines(log) == [(1, "soft")] and "action_threshold 2" in log[0].reason
    _, log = drive([ce(1, 0), ce(1, 1)], p)
    assert log == []  # the CEC eats machine checks, not EDAC events


def test_kernel_cec_amd_threshold_1023() -> None:
    p = preset_params("kernel-cec-amd")
    events = [ce(1, float(i), source="mce_record") for i in range(1022)]
    assert drive(events, p)[1] == []
    events.append(ce(1, 2000.0, source="mce_record"))
    assert offlines(drive(events, p)[1]) == [(1, "soft")]


def test_kernel_cec_evicts_lowest_full_count_lowest_pfn() -> None:
    p = preset_params("kernel-cec")
    events = [ce(pfn, 1.0, source="mce_record") for pfn in range(1, 513)]
    s, log = drive(events, p)
    assert log == [] and len(s.cec) == 512
    # After 512 insertions (spring cleaning every 128), pfns 1..256 have generation 0 and count 1:
    # the smallest FULL_COUNT, lowest pfn first -> pfn 1 is the one evicted for pfn 513.
    s, _ = policy.decide(s, ce(513, 1.0, source="mce_record"), p)
    assert 1 not in s.cec and 2 in s.cec
    # cec_add_elem() frees the LRU slot BEFORE looking the pfn up: a full array evicts pfn 2
    # itself (now the lowest generation-0 pfn) and re-inserts it with count 1, no offline.
    s, out = policy.decide(s, ce(2, 1.0, source="mce_record"), p)
    assert out == () and s.cec[2] & 0x3FF == 1
    # pfn 300 (generation 1) survives the next eviction (pfn 3) and reaches count 2.
    s, out = policy.decide(s, ce(300, 1.0, source="mce_record"), p)
    assert offlines(out) == [(300, "soft")] and 3 not in s.cec


def test_none_never_acts_and_first_ce_always_does() -> None:
    events = [ce(1, 0), ce(1, 1), ce(2, 2, count=100)]
    assert drive(events, preset_params("none"))[1] == []
    assert offlines(drive(events, preset_params("first-ce"))[1]) == [(1, "soft"), (2, "soft")]
