"""The policy-benchmark generator: deterministic per seed, real parseable kernel text, a sound
address map, and the published distributions it claims to reproduce."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from bench.policy import generator, model
from bench.policy.generator import SuiteParams, generate_host, write_suite
from bench.policy.model import DramAddress
from hwpoisond.core.model import Event
from hwpoisond.parse.stream import LineParser


def _parse(lines: tuple[str, ...]) -> tuple[list[Event], LineParser]:
    parser = LineParser()
    events: list[Event] = []
    for n, line in enumerate(lines, 1):
        events += parser.feed(line, n)
    events += parser.flush()
    return events, parser


def test_same_seed_same_bytes_and_truth(tmp_path: Path) -> None:
    params = SuiteParams(hosts=6, seed=7, days=30)
    a = write_suite(params, tmp_path / "a")
    b = write_suite(params, tmp_path / "b")
    for fa, fb in zip(a, b, strict=True):
        assert fa.read_bytes() == fb.read_bytes()
        ta = fa.with_name(fa.name.replace(".trace", ".truth.json"))
        tb = fb.with_name(fb.name.replace(".trace", ".truth.json"))
        assert json.loads(ta.read_text()) == json.loads(tb.read_text())


def test_different_seed_different_trace() -> None:
    one = [generate_host(SuiteParams(seed=1, days=30), h).lines for h in range(4)]
    two = [generate_host(SuiteParams(seed=2, days=30), h).lines for h in range(4)]
    assert one != two


def test_hosts_are_independent_of_suite_size() -> None:
    # Host 3 of a 4-host suite is host 3 of a 40-host suite: seeds are per host.
    assert generate_host(SuiteParams(hosts=4, seed=3), 3) == generate_host(
        SuiteParams(hosts=40, seed=3), 3
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_edac_hosts_every_line_parses_to_the_truth(seed: int) -> None:
    params = SuiteParams(seed=seed, days=30)
    for host in range(8):
        trace = generate_host(params, host)
        events, parser = _parse(trace.lines)
        assert parser.stats.malformed == {}
        assert len(events) == len(trace.lines), "every emitted line must be recognised"
        ce_events = [e for e in events if e.source == "mc_event" and e.severity == "corrected"]
        assert [e.pfn for e in ce_events] == [c.pfn for c in trace.truth.ces]
        assert [e.time for e in ce_events] == pytest.approx([c.at for c in trace.truth.ces])
        for e in ce_events:
            assert e.phys_addr is not None and e.dram is not None
            truth = model.dram_address_of(e.phys_addr)
            assert (e.dram.rank, e.dram.bank_group, e.dram.bank, e.dram.row, e.dram.column) == (
                truth.rank,
                truth.bank_group,
                truth.bank,
                truth.row,
                truth.column,
            )
            assert e.label == truth.label and e.mc == truth.edac_mc
        ue_events = [e for e in events if e.severity in ("uncorrected", "fatal")]
        # Each UE is one mce_record and one mc_event line.
        assert len(ue_events) == 2 * len(trace.truth.ues)
        assert {e.pfn for e in ue_events} == {u.pfn for u in trace.truth.ues}


def test_cec_hosts_log_mce_record_and_the_kernel_offline() -> None:
    params = SuiteParams(seed=4, days=30, cec_fraction=1.0)
    offlines = 0
    for host in range(8):
        trace = generate_host(params, host)
        assert trace.truth.cec
        events, parser = _parse(trace.lines)
        assert parser.stats.malformed == {}
        assert not [e for e in events if e.source == "mc_event" and e.severity == "corrected"]
        ces = [e for e in events if e.source == "mce_record" and e.severity == "corrected"]
        assert [e.pfn for e in ces] == [c.pfn for c in trace.truth.ces]
        cec = [e for e in events if e.source == "kmsg_cec"]
        assert [(e.time, e.pfn) for e in cec] == [tuple(x) for x in trace.truth.cec_offlines]
        # No CE is logged on a page after the CEC offlined it.
        gone = {pfn: at for at, pfn in trace.truth.cec_offlines}
        assert all(c.at <= gone.get(c.pfn, float("inf")) for c in trace.truth.ces)
        offlines += len(cec)
    assert offlines > 0


def test_address_map_is_a_bijection() -> None:
    rng = random.Random(0)  # noqa: S311 (seeded test data, not crypto)
    for _ in range(5000):
        a = generator._random_address(rng)
        phys = model.phys_addr_of(a) + rng.randrange(8)
        assert model.dram_address_of(phys) == a
        assert model.PHYS_BASE <= phys < model.PHYS_BASE + model.HOST_RAM_BYTES


def test_a_dram_row_spans_16_pages_and_a_column_thousands() -> None:
    base = DramAddress(1, 2, 1, 1, 3, 2, 77_777, 0)
    row_pages = {
        model.phys_addr_of(DramAddress(1, 2, 1, 1, 3, 2, 77_777, col)) >> 12
        for col in range(1 << model.COLUMN_BITS)
    }
    assert len(row_pages) == 16
    rng = random.Random(1)  # noqa: S311 (seeded test data, not crypto)
    spread = generator._spreader("single-column", base, rng, controller=False)
    assert len({model.phys_addr_of(spread()) >> 12 for _ in range(3000)}) > 2900


def test_lead_time_curve_matches_alibaba() -> None:
    rng = random.Random(5)  # noqa: S311 (seeded test data, not crypto)
    leads = [generator._lead_seconds(rng) for _ in range(40_000)]
    n = len(leads)
    with_ce = [x for x in leads if x is not None]
    assert len(with_ce) / n == pytest.approx(0.965, abs=0.005)
    assert sum(1 for x in with_ce if x >= 3600) / n == pytest.approx(0.63, abs=0.01)
    assert sum(1 for x in with_ce if x >= 86400) / n == pytest.approx(0.335, abs=0.01)


def test_intensity_is_lognormal_with_the_stated_skew() -> None:
    rng = random.Random(6)  # noqa: S311 (seeded test data, not crypto)
    counts = sorted(generator._error_count(rng, 20.0) for _ in range(40_001))
    assert statistics.median(counts) == pytest.approx(20, rel=0.1)
    top = counts[int(0.8 * len(counts)) :]
    assert sum(top) / sum(counts) > 0.94


def test_ues_fall_inside_the_horizon_and_after_a_ce_mostly() -> None:
    params = SuiteParams(seed=9, days=90)
    preceded = total = 0
    for host in range(150):
        t = generate_host(params, host).truth
        for ue in t.ues:
            assert t.start_at <= ue.at <= t.end_at
            total += 1
            fault_ces = [c.at for c in t.ces if c.fault == ue.fault]
            preceded += bool(fault_ces and min(fault_ces) < ue.at)
    assert total >= 15
    assert preceded / total > 0.85


@pytest.mark.parametrize("all_mce_records", [True, False])
def test_mce_record_per_ce_on_edac_hosts_unless_edac_only(all_mce_records: bool) -> None:
    params = SuiteParams(seed=11, days=30, all_mce_records=all_mce_records)
    for host in range(5):
        trace = generate_host(params, host)
        events, _ = _parse(trace.lines)
        mce_ces = [e.pfn for e in events if e.source == "mce_record" and e.severity == "corrected"]
        assert mce_ces == ([c.pfn for c in trace.truth.ces] if all_mce_records else [])
