"""The bytes on the wire: the text format is unchanged from before client_python wrote it, the
OpenMetrics form says the same as the text form, and the part-reusing renderer always equals a
render from scratch.

`golden/835bf0a/` was written by the hand-written renderer this package had until it moved to
prometheus-client (commit 835bf0a), whose tests compared it byte for byte with `generate_latest`:
every line of it must still be on the wire, in order (families added since come in between).
`golden/*.prom` is today's exact exposition: regenerate it with `HWPOISOND_WRITE_GOLDEN=1` only
for a deliberate change, and review the diff. The build_info labels are placeholders (they name
the running Python).

Example counts are modest by default; HWPOISOND_HYPOTHESIS_MAX sets max_examples for longer runs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from hwpoisond import __version__
from hwpoisond.metrics import (
    OPENMETRICS,
    TEXT,
    DimmErrors,
    EdacDimmCounts,
    EdacMcCounts,
    LatencyHistogram,
    MetricsSnapshot,
    PartRenderer,
    SourceErrors,
    SourceHealth,
    render_snapshot,
    snapshot_families,
)
from tests.unit.metrics.samples import openmetrics_samples_of, populated_snapshot

GOLDEN = Path(__file__).parent / "golden"
MAX_EXAMPLES = int(os.environ.get("HWPOISOND_HYPOTHESIS_MAX", "200"))
SETTINGS = settings(
    max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

HOSTILE = 'DIMM "A1"\\\n\\n' + "é" * 3
SNAPSHOTS = {
    "populated": populated_snapshot(),
    "empty": MetricsSnapshot(),
    "hostile": MetricsSnapshot(
        edac=(
            EdacMcCounts(
                0, HOSTILE, 1, 0, 0, 0, dimms=(EdacDimmCounts("rank0", HOSTILE, '"', 1, 0),)
            ),
        ),
        sources=(SourceHealth("tracefs", True, True, 0, 1.7e9),),
    ),
}


_BUILD = (
    f'python_version="{platform.python_version()}",version="{__version__}"'.encode(),
    b'python_version="@PYTHON_VERSION@",version="@VERSION@"',
)


def golden(name: str, commit: str = "") -> bytes:
    return (GOLDEN / commit / f"{name}.prom").read_bytes().replace(_BUILD[1], _BUILD[0])


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_text_format_bytes_are_the_golden_ones(name: str) -> None:
    rendered = render_snapshot(SNAPSHOTS[name])
    if os.environ.get("HWPOISOND_WRITE_GOLDEN"):
        (GOLDEN / f"{name}.prom").write_bytes(rendered.replace(_BUILD[0], _BUILD[1]))
    assert rendered == golden(name)
    assert PartRenderer().render(SNAPSHOTS[name]) == golden(name)


#: Deliberate changes to lines that existed at 835bf0a (docs/METRICS.md, "Contract changes"):
#: issue 16 renamed the label `severity` (Alertmanager routes on it) of these two families.
RENAMED_SEVERITY = (b"hwpoisond_memory_errors_total{", b"hwpoisond_dimm_memory_errors_total{")
_PAIR = re.compile(rb'(\w+)="((?:[^"\\]|\\.)*)"')


def renamed(line: bytes) -> bytes:
    if line.startswith(b"# HELP hwpoisond_memory_errors_total "):
        return line.replace(b"reported them and severity.", b"reported them and error severity.")
    if not line.startswith(RENAMED_SEVERITY):
        return line
    name, rest = line.split(b"{", 1)
    pairs, value = rest.rsplit(b"} ", 1)
    labels = sorted(
        (b"error_severity" if k == b"severity" else k, v) for k, v in _PAIR.findall(pairs)
    )
    return name + b"{" + b",".join(k + b'="' + v + b'"' for k, v in labels) + b"} " + value


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_every_line_from_before_client_python_is_still_on_the_wire(name: str) -> None:
    old = [renamed(line) for line in golden(name, "835bf0a").splitlines()]
    lines = iter(render_snapshot(SNAPSHOTS[name]).splitlines())
    missing = [line for line in old if not any(line == new for new in lines)]
    assert missing == []


def _text_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


@pytest.mark.parametrize("name", sorted(SNAPSHOTS))
def test_openmetrics_is_valid_and_shows_the_same_samples(name: str) -> None:
    snap = SNAPSHOTS[name]
    om = render_snapshot(snap, OPENMETRICS).decode()
    assert om.endswith("# EOF\n") and om.count("# EOF") == 1
    assert openmetrics_samples_of(om) == _text_samples(render_snapshot(snap, TEXT).decode())
    assert PartRenderer().render_openmetrics(snap) == om.encode()


def test_label_pairs_are_in_name_order_on_the_wire() -> None:
    for line in golden("populated").decode().splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        pairs = line[line.index("{") + 1 : line.rindex("}")]
        names = [p.split("=", 1)[0] for p in pairs.split('",') if "=" in p]
        assert names == sorted(names), line


label_text = st.text(st.characters(codec="utf-8"), max_size=20)


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
def test_any_snapshot_round_trips_through_both_formats(
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
    text = _text_samples(render_snapshot(snap).decode())
    assert openmetrics_samples_of(render_snapshot(snap, OPENMETRICS).decode()) == text
    # What the parser reads back is what the snapshot holds (label values cut and defaulted).
    shown = {
        (s.name, frozenset(s.labels.items())): s.value
        for f in snapshot_families(snap)
        for s in f.samples
    }
    assert text == shown


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
    for fmt, render in ((TEXT, renderer.render), (OPENMETRICS, renderer.render_openmetrics)):
        assert render(full) == render_snapshot(full, fmt)
        assert render(changed) == render_snapshot(changed, fmt)
        assert render(full) == render_snapshot(full, fmt)


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
@given(
    st.lists(
        st.tuples(st.integers(0, len(_variants()) - 1), st.sampled_from([TEXT, OPENMETRICS])),
        min_size=1,
        max_size=12,
    )
)
def test_any_publish_sequence_renders_as_from_scratch(picks: list[tuple[int, str]]) -> None:
    variants = _variants()
    renderer = PartRenderer()
    for i, fmt in picks:
        render = renderer.render_openmetrics if fmt == OPENMETRICS else renderer.render
        assert render(variants[i]) == render_snapshot(variants[i], fmt)
