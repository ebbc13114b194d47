"""The text writer matches prometheus-client's own `generate_latest` byte for byte, and the
part-reusing renderer always equals a render from scratch.

Example counts are modest by default; HWPOISOND_HYPOTHESIS_MAX sets max_examples for longer runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hwpoisond.metrics import (
    DimmErrors,
    EdacDimmCounts,
    EdacMcCounts,
    Family,
    LatencyHistogram,
    MetricsSnapshot,
    PartRenderer,
    SourceErrors,
    SourceHealth,
    render_families,
    render_snapshot,
    snapshot_families,
)
from tests.unit.metrics.samples import populated_snapshot

MAX_EXAMPLES = int(os.environ.get("HWPOISOND_HYPOTHESIS_MAX", "200"))
SETTINGS = settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class _Families(Collector):
    """Hands our families to prometheus-client as its own Metric objects: the reference writer."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        for f in self._families:
            metric = Metric(f.name, f.documentation, f.type)
            for name, labels, value in f.samples:
                metric.add_sample(name, dict(labels), value)
            yield metric


def reference(families: Iterable[Family]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


HOSTILE = 'DIMM "A1"\\\n\\n' + "é" * 3


@pytest.mark.parametrize(
    "snap",
    [
        populated_snapshot(),
        MetricsSnapshot(),
        MetricsSnapshot(
            edac=(
                EdacMcCounts(
                    0, HOSTILE, 1, 0, 0, 0, dimms=(EdacDimmCounts("rank0", HOSTILE, '"', 1, 0),)
                ),
            ),
            sources=(SourceHealth("tracefs", True, True, 0, 1.7e9),),
        ),
    ],
    ids=["populated", "empty", "hostile"],
)
def test_text_equals_prometheus_client_reference(snap: MetricsSnapshot) -> None:
    families = list(snapshot_families(snap))
    assert render_families(families) == reference(families)


def test_label_pairs_are_in_name_order() -> None:
    # render_families writes pairs as given; the text format (and the reference) sorts them.
    for family in snapshot_families(populated_snapshot()):
        for _, labels, _ in family.samples:
            names = [k for k, _ in labels]
            assert names == sorted(names), family.name


label_text = st.text(st.characters(codec="utf-8"), max_size=20)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63).map(float),
)


@SETTINGS
@given(
    doc=label_text,
    rows=st.lists(st.tuples(label_text, label_text, values), max_size=8),
)
def test_any_label_text_and_value_is_written_as_the_reference_writes_it(
    doc: str, rows: list[tuple[str, str, float]]
) -> None:
    family = Family(
        "hwpoisond_x",
        "gauge",
        doc,
        tuple(("hwpoisond_x", (("a", a), ("b", b)), v) for a, b, v in rows),
    )
    counter = Family("hwpoisond_y", "counter", doc, (("hwpoisond_y_total", (), 1.0),))
    assert render_families([family, counter]) == reference([family, counter])


@SETTINGS
@given(
    errors=st.lists(
        st.tuples(
            st.sampled_from(["mc_event", "mce_record"]),
            st.sampled_from(["corrected", "uncorrected"]),
            st.integers(0, 10**12),
        ),
        max_size=6,
    ),
    dimms=st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(0, 3)),
            st.one_of(st.none(), label_text),
            st.integers(0, 10**6),
        ),
        max_size=6,
    ),
    latency=st.lists(st.floats(0, 100), max_size=5),
    published_at=st.one_of(st.none(), st.floats(0, 2e9)),
)
def test_snapshot_families_match_the_reference(
    errors: list[tuple[str, str, int]],
    dimms: list[tuple[int | None, str | None, int]],
    latency: list[float],
    published_at: float | None,
) -> None:
    histogram = LatencyHistogram()
    for seconds in latency:
        histogram = histogram.observe(seconds)
    snap = MetricsSnapshot(
        published_at_seconds=published_at,
        errors_by_source=tuple(SourceErrors(*e) for e in errors),
        errors_by_dimm=tuple(DimmErrors(mc, dimm, "corrected", n) for mc, dimm, n in dimms),
        latency=histogram,
    )
    families = list(snapshot_families(snap))
    assert render_families(families) == reference(families)


# -- the part-reusing renderer --------------------------------------------------------------------

FIELDS = [f.name for f in dataclasses.fields(MetricsSnapshot)]


@pytest.mark.parametrize("name", FIELDS)
def test_every_snapshot_field_reaches_the_exposition_through_the_part_cache(name: str) -> None:
    # Change one field (populated → default): the reusing renderer must notice. A field that no
    # part takes as input would be served stale here.
    full = populated_snapshot()
    changed = dataclasses.replace(full, **{name: getattr(MetricsSnapshot(), name)})
    assert render_snapshot(changed) != render_snapshot(full), f"{name} does not show at all"
    renderer = PartRenderer()
    assert renderer.render(full) == render_snapshot(full)
    assert renderer.render(changed) == render_snapshot(changed)
    assert renderer.render(full) == render_snapshot(full)


def _variants() -> list[MetricsSnapshot]:
    base = populated_snapshot()
    return [
        base,
        MetricsSnapshot(),
        dataclasses.replace(base, published_at_seconds=1_700_000_200.0),
        dataclasses.replace(base, retired_pages=4, tracked_pages=0),
        dataclasses.replace(base, errors_by_dimm=base.errors_by_dimm[:2]),
        dataclasses.replace(base, edac=base.edac[1:], budget=None),
        dataclasses.replace(base, latency=base.latency.observe(math.pi)),
        dataclasses.replace(base, kernel_settings=None, sources=base.sources[:1]),
        # Equal but not identical: a part's inputs are compared by value.
        dataclasses.replace(base, edac=tuple(dataclasses.replace(c) for c in base.edac)),
    ]


@SETTINGS
@given(st.lists(st.integers(0, len(_variants()) - 1), min_size=1, max_size=12))
def test_any_publish_sequence_renders_as_from_scratch(picks: list[int]) -> None:
    variants = _variants()
    renderer = PartRenderer()
    for i in picks:
        assert renderer.render(variants[i]) == render_snapshot(variants[i])
