"""The exposition cache and the HTTP server over real sockets: one render per published snapshot,
whole expositions under concurrent scrapes and publishes, gzip, HEAD, 404/501, slow clients, and
a stop() that returns at once."""

from __future__ import annotations

import gzip
import http.client
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwpoisond.metrics import DimmErrors, Exporter, MetricsSnapshot, PartRenderer
from tests.integration.metrics.helpers import get
from tests.unit.metrics.samples import (
    openmetrics_samples_of,
    populated_snapshot,
    samples_of,
    value,
)


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter(listen_address="127.0.0.1", port=0, snapshot=populated_snapshot())
    e.start()
    try:
        yield e
    finally:
        e.stop()


def request(
    e: Exporter, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    assert e.bound_port is not None
    conn = http.client.HTTPConnection("127.0.0.1", e.bound_port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


# -- the cache ----------------------------------------------------------------------------------


def test_a_snapshot_is_rendered_once_and_a_publish_invalidates_it() -> None:
    e = Exporter(snapshot=MetricsSnapshot(retired_pages=1))
    first = e.render()
    assert e.render() is first  # served from the cache, not rendered again
    e.publish(MetricsSnapshot(retired_pages=2))
    second = e.render()
    assert second is not first
    assert value(samples_of(second.decode()), "hwpoisond_retired_pages") == 2
    # Publishing an equal snapshot is still a publish: the next scrape renders it.
    e.publish(MetricsSnapshot(retired_pages=2))
    assert e.render() is not second
    assert e.render() == second


class CountingRenderer(PartRenderer):
    """The real renderer, counting how often the exporter asks it for a whole exposition, and
    slow enough that scrapes racing the first one arrive while it is still rendering."""

    renders = 0

    def render(self, snap: MetricsSnapshot) -> bytes:
        type(self).renders += 1
        time.sleep(0.3)
        return super().render(snap)


def test_concurrent_scrapes_after_a_publish_render_once(
    exporter: Exporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter, "_renderer", CountingRenderer())
    CountingRenderer.renders = 0
    exporter.publish(MetricsSnapshot(retired_pages=11))
    assert exporter.url is not None
    url = exporter.url
    start = threading.Barrier(8)
    bodies: list[str] = []

    def scrape() -> None:
        start.wait()
        bodies.append(get(url)[2])

    threads = [threading.Thread(target=scrape) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(bodies) == 8 and len(set(bodies)) == 1
    assert value(samples_of(bodies[0]), "hwpoisond_retired_pages") == 11
    assert CountingRenderer.renders == 1


def numbered_snapshot(i: int) -> MetricsSnapshot:
    """Snapshot i: every value is i and there are i % 7 + 1 DIMM series, so a body mixing two
    snapshots shows two values or the wrong number of series."""
    return MetricsSnapshot(
        retired_pages=i,
        tracked_pages=i,
        pages_over_threshold=i,
        errors_by_dimm=tuple(DimmErrors(0, f"DIMM_{d}", "corrected", i) for d in range(i % 7 + 1)),
    )


def check_whole(body: str) -> float:
    s = samples_of(body)
    dimm_values = [v for (name, _), v in s.items() if name == "hwpoisond_dimm_memory_errors_total"]
    i = value(s, "hwpoisond_retired_pages")
    assert value(s, "hwpoisond_tracked_pages") == i
    assert value(s, "hwpoisond_pages_over_threshold") == i
    assert dimm_values == [i] * (int(i) % 7 + 1)
    return i


def test_concurrent_scrapes_during_publishes_never_see_a_torn_exposition(
    exporter: Exporter,
) -> None:
    stop = threading.Event()
    published = [0]

    def publisher() -> None:
        while not stop.is_set():
            published[0] += 1
            exporter.publish(numbered_snapshot(published[0]))
            time.sleep(0.0005)

    seen: set[float] = set()
    failures: list[BaseException] = []

    def scraper(headers: dict[str, str]) -> None:
        try:
            for _ in range(25):
                status, got, body = request(exporter, "GET", "/metrics", headers)
                assert status == 200
                assert int(got["content-length"]) == len(body)
                if got.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                seen.add(check_whole(body.decode()))
        except BaseException as e:  # collected: an assertion in a thread must fail the test
            failures.append(e)

    exporter.publish(numbered_snapshot(0))
    pub = threading.Thread(target=publisher)
    scrapers = [
        threading.Thread(target=scraper, args=(h,))
        for h in ({}, {}, {"Accept-Encoding": "gzip"}, {"Accept-Encoding": "gzip"})
    ]
    pub.start()
    for t in scrapers:
        t.start()
    for t in scrapers:
        t.join()
    stop.set()
    pub.join()
    assert failures == []
    assert len(seen) > 1, "the publisher never got to run between scrapes"


# -- HTTP ---------------------------------------------------------------------------------------


def test_gzip_is_the_same_exposition(exporter: Exporter) -> None:
    status, plain_headers, plain = request(exporter, "GET", "/metrics")
    assert status == 200 and "content-encoding" not in plain_headers
    status, headers, body = request(
        exporter, "GET", "/metrics", {"Accept-Encoding": "deflate, gzip;q=0.8"}
    )
    assert status == 200
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept, Accept-Encoding"
    assert int(headers["content-length"]) == len(body) < len(plain)
    assert gzip.decompress(body) == plain
    # q=0 means "not gzip".
    _, refused, body = request(exporter, "GET", "/metrics", {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused and body == plain


def test_head_gives_the_headers_of_get_without_a_body(exporter: Exporter) -> None:
    _, get_headers, body = request(exporter, "GET", "/metrics")
    status, headers, head_body = request(exporter, "HEAD", "/metrics")
    assert status == 200 and head_body == b""
    assert int(headers["content-length"]) == len(body)
    assert headers["content-type"] == get_headers["content-type"]
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_only_metrics_and_a_landing_page_are_served(exporter: Exporter) -> None:
    status, headers, body = request(exporter, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'href="/metrics"' in body
    assert request(exporter, "GET", "/metrics?name[]=x")[0] == 200
    for path in ("/metricsx", "/metrics/", "/favicon.ico", "/../etc/passwd"):
        assert request(exporter, "GET", path)[0] == 404, path
    # Read-only: no other method is implemented.
    for method in ("POST", "PUT", "DELETE"):
        assert request(exporter, method, "/metrics")[0] == 501, method


def test_an_idle_client_does_not_hold_up_other_scrapes(exporter: Exporter) -> None:
    assert exporter.bound_port is not None and exporter.url is not None
    with socket.create_connection(("127.0.0.1", exporter.bound_port), timeout=5) as idle:
        idle.sendall(b"GET /metrics HTTP/1.0\r\n")  # never finishes its request
        start = time.monotonic()
        assert get(exporter.url)[0] == 200
        assert time.monotonic() - start < 2.0


def test_stop_returns_at_once_even_with_a_client_connected(exporter: Exporter) -> None:
    assert exporter.bound_port is not None
    durations = []
    with socket.create_connection(("127.0.0.1", exporter.bound_port), timeout=5):
        start = time.perf_counter()
        exporter.stop()
        durations.append(time.perf_counter() - start)
    for _ in range(4):
        e = Exporter(port=0)
        e.start()
        time.sleep(0.05)  # let the serving thread settle into its wait
        start = time.perf_counter()
        e.stop()
        durations.append(time.perf_counter() - start)
        assert e.bound_port is None
    # socketserver's serve_forever() would wait out (most of) its 0.5 s poll interval every
    # time; the median keeps one scheduling hiccup on a loaded machine from failing the test.
    assert statistics.median(durations) < 0.1, durations


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    e = Exporter(listen_address="::1", port=0)
    try:
        e.start()
    except OSError as err:
        pytest.skip(f"cannot bind ::1 here: {err}")
    try:
        assert e.url == f"http://[::1]:{e.bound_port}/metrics"
        assert get(e.url)[0] == 200
    finally:
        e.stop()


def test_a_silent_tls_client_does_not_hold_up_other_scrapes(
    self_signed: tuple[Path, Path],
) -> None:
    cert, key = self_signed
    e = Exporter(port=0, tls_cert_file=str(cert), tls_key_file=str(key))
    e.start()
    try:
        assert e.url is not None and e.bound_port is not None
        ctx = ssl.create_default_context(cafile=str(cert))
        # A client that connects and never starts its handshake: the handshake runs in the
        # connection's own thread, so accepting goes on.
        with socket.create_connection(("127.0.0.1", e.bound_port), timeout=5):
            start = time.monotonic()
            assert value(samples_of(get(e.url, ctx)[2]), "hwpoisond_retired_pages") == 0
            assert time.monotonic() - start < 2.0
    finally:
        e.stop()


def test_openmetrics_is_offered_on_request(exporter: Exporter) -> None:
    _, _, text = request(exporter, "GET", "/metrics")
    # What Prometheus 2.x sends: OpenMetrics first, the text format as the fallback.
    accept = (
        "application/openmetrics-text;version=1.0.0;q=0.5,"
        "application/openmetrics-text;version=0.0.1;q=0.4,"
        "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )
    status, headers, body = request(exporter, "GET", "/metrics", {"Accept": accept})
    assert status == 200
    assert headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body.endswith(b"# EOF\n") and body != text
    assert openmetrics_samples_of(body.decode()) == samples_of(text.decode())
    _, gz_headers, gz = request(
        exporter, "GET", "/metrics", {"Accept": accept, "Accept-Encoding": "gzip"}
    )
    assert gz_headers["content-encoding"] == "gzip" and gzip.decompress(gz) == body
    # Text preferred, or OpenMetrics refused: the text format, byte for byte.
    for refused in (
        "text/plain;q=1,application/openmetrics-text;q=0.5",
        "application/openmetrics-text;q=0",
    ):
        _, h, b = request(exporter, "GET", "/metrics", {"Accept": refused})
        assert h["content-type"] == "text/plain; version=0.0.4; charset=utf-8" and b == text
