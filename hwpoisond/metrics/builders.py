"""Builders of prometheus-client metric families from rows of label values.

Rule: every family hwpoisond exports is built here, so each follows the same conventions: the
`hwpoisond_` prefix, label values cut to a bounded length and `unknown` for a missing one, series
ordered by their label values, duplicate label sets summed into one series (a duplicate series
makes Prometheus reject the whole scrape) and a value that could not be read (None) left out.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

PREFIX = "hwpoisond_"
#: A label value longer than this is cut: DIMM labels come from firmware (SMBIOS, ACPI) and a
#: runaway string must not bloat every scrape.
MAX_LABEL_VALUE_CHARS = 128
UNKNOWN = "unknown"

#: One family in prometheus-client's data model (`name` without the `_total`/`_info` suffix its
#: samples carry; `type` is `counter`, `gauge`, `info` or `histogram`).
Family = Metric

#: Rows of a labelled family: the label values (in the order the labels were named) and a value.
Rows = Iterable[tuple[tuple[str, ...], float | None]]


def label(value: object) -> str:
    """A label value: `unknown` for None or empty, cut to MAX_LABEL_VALUE_CHARS."""
    if value is None or value == "":
        return UNKNOWN
    return str(value)[:MAX_LABEL_VALUE_CHARS]


def _summed(rows: Rows) -> dict[tuple[str, ...], float]:
    # Two records with the same labels (e.g. two unknown DIMMs) must become one series. A value
    # that could not be read (None) leaves its series out: an absent series is honest, a 0 is not.
    out: dict[tuple[str, ...], float] = {}
    for labels, value in rows:
        if value is not None:
            out[labels] = out.get(labels, 0.0) + value
    return out


def counter(name: str, doc: str, labels: tuple[str, ...], rows: Rows) -> Family:
    family = CounterMetricFamily(PREFIX + name, doc, labels=labels)
    for values, value in sorted(_summed(rows).items()):
        family.add_metric(values, value)
    return family


def gauge(name: str, doc: str, labels: tuple[str, ...], rows: Rows) -> Family:
    family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
    for values, value in sorted(_summed(rows).items()):
        family.add_metric(values, value)
    return family


def scalar(name: str, doc: str, value: float) -> Family:
    return GaugeMetricFamily(PREFIX + name, doc, value=float(value))


def scalar_counter(name: str, doc: str, value: float) -> Family:
    return CounterMetricFamily(PREFIX + name, doc, value=float(value))


def info(name: str, doc: str, rows: Iterable[tuple[tuple[str, str], ...]]) -> Family:
    """An info family: each row's label pairs make one series whose value is always 1."""
    family = InfoMetricFamily(PREFIX + name, doc)
    for row in rows:
        family.add_metric([], dict(row))
    return family


def histogram(
    name: str,
    doc: str,
    bounds_seconds: tuple[float, ...],
    counts: tuple[int, ...],
    sum_seconds: float,
) -> Family:
    """A histogram from per-bucket counts (`counts[-1]` is the overflow above the last bound)."""
    cumulative, buckets = 0, list[tuple[str, float]]()
    for bound, count in zip(bounds_seconds, counts, strict=False):
        cumulative += count
        # prometheus-client's own histograms write bucket bounds this way ("0.005", "1.0").
        buckets.append((repr(float(bound)), float(cumulative)))
    buckets.append(("+Inf", float(cumulative + counts[-1])))
    family = HistogramMetricFamily(PREFIX + name, doc)
    family.add_metric([], buckets, sum_seconds)
    return family
