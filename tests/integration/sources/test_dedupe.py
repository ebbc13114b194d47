"""Deduper table tests. Events come from the real line parser fed kernel-format lines (the
parse fixtures' formats), so the keys are those live sources will produce."""

from __future__ import annotations

import dataclasses

import pytest

from hwpoisond.core.model import Event
from hwpoisond.parse.stream import LineParser
from hwpoisond.sources.dedupe import Deduper, dedupe_key

# One error, as tracefs and as the kernel log show it (EDAC: edac_raw_mc_handle_error()).
MC_EVENT = (
    "  <idle>-0  [005] d.h1.  88.500000: mc_event: 3 Corrected errors: memory read error on"
    " CPU_SrcID#1_MC#0_Chan#0_DIMM#1 (mc:1 location:0:1:-1 address:0x1f00ab000 grain:64"
    " syndrome:0x00000000 err_code:0x0000:0x009f)"
)
KMSG_EDAC = (
    "EDAC MC1: 3 CE memory read error on CPU_SrcID#1_MC#0_Chan#0_DIMM#1 (channel:0 slot:1"
    " page:0x1f00ab offset:0x0 grain:64 syndrome:0x0 - err_code:0x0000:0x009f)"
)
MCE_RECORD = (
    "  <idle>-0  [000] d.h1  101.500000: mce_record: CPU: 0, MCGc/s: 1000c14/0, MC7:"
    " 9c0000000008009f, ADDR/MISC: 0000000007654000/0000000000000086, RIP: 00:<0000000000000000>,"
    " TSC: 2a5c6e1e4, PROCESSOR: 0:306e4, TIME: 1400000000, SOCKET: 0, APIC: 0"
)
KMSG_MCE = (
    "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: 9c0000000008009f",
    "mce: [Hardware Error]: TSC 2a5c6e1e4 ADDR 7654000 MISC 86 ",
    "mce: [Hardware Error]: PROCESSOR 0:306e4 TIME 1400000000 SOCKET 0 APIC 0 microcode 1",
)
MF_EVENT = (
    "  sh-123  [000] .....  33.000001: memory_failure_event: pfn 0x9000: recovery action for"
    " free buddy page: Recovered"
)
KMSG_MF = "Memory failure: 0x9000: recovery action for free buddy page: Recovered"
KMSG_CEC = "RAS: Soft-offlining pfn: 0x7654"


def parse(*lines: str) -> Event:
    p = LineParser()
    events = [e for i, line in enumerate(lines) for e in p.feed(line, i + 1)] + p.flush()
    assert len(events) == 1, events
    return events[0]


def at(event: Event, time: float | None, **changes: object) -> Event:
    return dataclasses.replace(event, time=time, **changes)  # type: ignore[arg-type]


EDAC_T, EDAC_K = parse(MC_EVENT), parse(KMSG_EDAC)
MCE_T, MCE_K = parse(MCE_RECORD), parse(*KMSG_MCE)
MF_T, MF_K = parse(MF_EVENT), parse(KMSG_MF)
CEC = parse(KMSG_CEC)


def test_the_parsed_pairs_share_their_keys() -> None:
    assert (EDAC_T.source, EDAC_K.source) == ("mc_event", "kmsg_edac")
    assert EDAC_T.count == EDAC_K.count == 3
    assert dedupe_key(EDAC_T) == dedupe_key(EDAC_K) is not None
    assert dedupe_key(MCE_T) == dedupe_key(MCE_K) is not None
    assert dedupe_key(MF_T) == dedupe_key(MF_K) is not None
    assert dedupe_key(CEC) is None


T = 1_700_000_000.0


@pytest.mark.parametrize(
    ("events", "admitted"),
    [
        # the two copies of one error, either order, within the window: one admitted
        ([at(EDAC_T, T), at(EDAC_K, T + 0.4)], [True, False]),
        ([at(EDAC_K, T), at(EDAC_T, T + 0.4)], [True, False]),
        ([at(MCE_T, T), at(MCE_K, T + 1.0)], [True, False]),
        ([at(MF_K, T), at(MF_T, T + 0.1)], [True, False]),
        # too far apart: two errors
        ([at(EDAC_T, T), at(EDAC_K, T + 10.1)], [True, True]),
        # the same source twice is two errors, even at the same instant
        ([at(EDAC_T, T), at(EDAC_T, T)], [True, True]),
        # two errors through both interfaces: each copy absorbs exactly one counterpart
        (
            [at(EDAC_T, T), at(EDAC_T, T + 0.2), at(EDAC_K, T + 0.3), at(EDAC_K, T + 0.4)],
            [True, True, False, False],
        ),
        # ... and a third log line without a trace twin is a third error
        (
            [at(EDAC_T, T), at(EDAC_K, T + 0.3), at(EDAC_K, T + 0.5)],
            [True, False, True],
        ),
        # different count, address, severity, controller, status or result: different errors
        ([at(EDAC_T, T), at(EDAC_K, T, count=1)], [True, True]),
        ([at(EDAC_T, T), at(EDAC_K, T, phys_addr=0x1234000)], [True, True]),
        ([at(EDAC_T, T), at(EDAC_K, T, severity="uncorrected")], [True, True]),
        ([at(EDAC_T, T), at(EDAC_K, T, mc=0)], [True, True]),
        ([at(MCE_T, T), at(MCE_K, T, status=0xBD80000000100134)], [True, True]),
        ([at(MF_T, T), at(MF_K, T, result="failed")], [True, True]),
        # cross-family never matches, and sources without a counterpart always pass
        ([at(EDAC_T, T), at(MCE_K, T)], [True, True]),
        ([at(CEC, T), at(CEC, T)], [True, True]),
        # without times (e.g. a source that could not convert) the key alone decides
        ([at(EDAC_T, None), at(EDAC_K, T)], [True, False]),
        # out-of-order arrival across sources (journal before trace, slightly earlier time)
        ([at(EDAC_K, T + 0.5), at(EDAC_T, T)], [True, False]),
    ],
)
def test_admit_table(events: list[Event], admitted: list[bool]) -> None:
    d = Deduper(window_seconds=10.0)
    assert [d.admit(e) for e in events] == admitted


def test_duplicates_are_counted_per_family() -> None:
    d = Deduper(window_seconds=5.0)
    for e in (at(EDAC_T, T), at(EDAC_K, T), at(MCE_K, T), at(MCE_T, T), at(MF_T, T)):
        d.admit(e)
    assert d.duplicates == {"edac": 1, "mce": 1}


def test_memory_stays_bounded_under_a_storm() -> None:
    d = Deduper(window_seconds=5.0, max_entries=1000)
    # Five minutes of 100 distinct CEs per second from tracefs alone: nothing to pair with.
    for i in range(30_000):
        assert d.admit(at(EDAC_T, T + i / 100, phys_addr=(i % 50_000) << 12))
    assert len(d) <= 1000
    # Time-based expiry alone keeps it to the window's worth (5 s x 100/s per source) when both
    # sources run, each delivering errors the other never sees.
    d2 = Deduper(window_seconds=5.0, max_entries=1_000_000)
    for i in range(5_000):
        d2.admit(at(EDAC_T, T + i / 100, phys_addr=(2 * i) << 12))
        d2.admit(at(EDAC_K, T + i / 100, phys_addr=(2 * i + 1) << 12))
    assert len(d2) <= 2 * 502


def test_a_lagging_counterpart_still_finds_its_twin() -> None:
    """In a storm the journal lags tracefs; tracefs moving on must not forget what the journal
    has still to deliver."""
    d = Deduper(window_seconds=2.0)
    assert d.admit(at(EDAC_T, T))
    for i in range(1, 60):  # a minute more of trace events at other addresses
        assert d.admit(at(EDAC_T, T + i, phys_addr=i << 12))
    assert not d.admit(at(EDAC_K, T + 0.5))  # the journal's copy of the first error, late


def test_entry_is_forgotten_once_its_counterpart_has_moved_past() -> None:
    d = Deduper(window_seconds=2.0)
    assert d.admit(at(EDAC_T, T))
    assert d.admit(at(EDAC_K, T + 30, phys_addr=0x5000))  # the journal is 30 s further on
    assert len(d) == 1
    assert d.admit(at(EDAC_K, T + 0.5))  # a copy "from the past" is no longer matched
