"""The exposition: a snapshot's families as the bytes a scrape returns, written by client_python.

Rule: prometheus-client writes every byte (`prometheus_client.exposition.generate_latest` for the
text format 0.0.4, `prometheus_client.openmetrics.exposition.generate_latest` for OpenMetrics
1.0.0); this module only chooses the format a client asked for and renders each part of the
exposition once while its inputs stay equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.exposition import generate_latest as _text_generate_latest
from prometheus_client.openmetrics import exposition as _openmetrics
from prometheus_client.registry import Collector

from hwpoisond.metrics.builders import Family
from hwpoisond.metrics.families import PartCollector, SnapshotCollector, snapshot_parts
from hwpoisond.metrics.snapshot import MetricsSnapshot

#: The text format's media type (what Prometheus gets unless it asks for OpenMetrics).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
#: OpenMetrics 1.0.0, offered on `Accept: application/openmetrics-text`.
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT = "text"
OPENMETRICS = "openmetrics"
CONTENT_TYPES = {TEXT: CONTENT_TYPE, OPENMETRICS: OPENMETRICS_CONTENT_TYPE}

#: An OpenMetrics exposition ends with this line, once: parts are rendered without it.
_EOF = b"# EOF\n"

# Typed here because prometheus-client leaves the OpenMetrics writer unannotated.
_openmetrics_generate_latest: Callable[[Collector], bytes] = _openmetrics.generate_latest


def render_text(collector: Collector) -> bytes:
    """The Prometheus text format 0.0.4 of what `collector` collects."""
    return _text_generate_latest(collector)


def render_openmetrics(collector: Collector) -> bytes:
    """OpenMetrics 1.0.0 text of what `collector` collects, `# EOF` included."""
    return _openmetrics_generate_latest(collector)


def render_snapshot(snap: MetricsSnapshot, fmt: str = TEXT) -> bytes:
    """The exposition a scrape of `snap` returns in format `fmt` (pure: no I/O)."""
    collector = SnapshotCollector(snap)
    return render_openmetrics(collector) if fmt == OPENMETRICS else render_text(collector)


def _render_part(
    families_of: Callable[..., Iterator[Family]], inputs: tuple[object, ...], fmt: str
) -> bytes:
    collector = PartCollector(families_of, inputs)
    if fmt == OPENMETRICS:
        return render_openmetrics(collector)[: -len(_EOF)]
    return render_text(collector)


class PartRenderer:
    """Renders snapshots, reusing the text of each part whose inputs equal (`==`) those of the
    previous render in that format: most publishes change a timestamp and a few counters, not 700
    series. The result is always `render_snapshot(snap, fmt)`. Not thread-safe: one caller at a
    time."""

    def __init__(self) -> None:
        self._last: dict[
            tuple[str, Callable[..., Iterator[Family]]], tuple[tuple[object, ...], bytes]
        ] = {}

    def render(self, snap: MetricsSnapshot) -> bytes:
        """The text format 0.0.4."""
        return self._render(snap, TEXT)

    def render_openmetrics(self, snap: MetricsSnapshot) -> bytes:
        """OpenMetrics 1.0.0."""
        return self._render(snap, OPENMETRICS) + _EOF

    def _render(self, snap: MetricsSnapshot, fmt: str) -> bytes:
        chunks = []
        for families_of, inputs in snapshot_parts(snap):
            last = self._last.get((fmt, families_of))
            if last is None or last[0] != inputs:
                last = (inputs, _render_part(families_of, inputs, fmt))
                self._last[(fmt, families_of)] = last
            chunks.append(last[1])
        return b"".join(chunks)


def _media_ranges(accept: str) -> Iterator[tuple[str, dict[str, str]]]:
    for item in accept.split(","):
        media, *params = item.split(";")
        values = {}
        for param in params:
            key, _, value = param.partition("=")
            values[key.strip().lower()] = value.strip().strip('"')
        yield media.strip().lower(), values


def _quality(params: dict[str, str]) -> float:
    try:
        return float(params.get("q", "1"))
    except ValueError:
        return 0.0


def choose_format(accept: str) -> str:
    """OPENMETRICS when the Accept header (RFC 9110 section 12.5.1) lists
    `application/openmetrics-text` at a quality at least that of the text format, else TEXT.
    Prometheus lists both, OpenMetrics first; a client that names neither gets the text format."""
    openmetrics_q = text_q = 0.0
    for media, params in _media_ranges(accept):
        q = _quality(params)
        if media == "application/openmetrics-text":
            openmetrics_q = max(openmetrics_q, q)
        elif media in ("text/plain", "text/*", "*/*"):
            text_q = max(text_q, q)
    return OPENMETRICS if openmetrics_q > 0 and openmetrics_q >= text_q else TEXT


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header (RFC 9110 section 12.5.3) allows gzip: `gzip` listed
    without `q=0`."""
    for coding, params in _media_ranges(accept_encoding):
        if coding == "gzip":
            return _quality(params) > 0
    return False
