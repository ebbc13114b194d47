"""The exporter over real sockets and files: HTTP on a free loopback port, TLS, textfile mode,
and Prometheus' own tools (promtool, node_exporter's textfile collector) reading the result."""

from __future__ import annotations

import shutil
import socket
import ssl
import stat
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwpoisond.config import MetricsConfig
from hwpoisond.metrics import TEXTFILE_NAME, Exporter, MetricsSnapshot
from tests.integration.metrics.helpers import NODE_EXPORTER, free_port, get, wait_for
from tests.unit.metrics.samples import populated_snapshot, samples_of, value

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    e = Exporter(listen_address="127.0.0.1", port=0, snapshot=populated_snapshot())
    e.start()
    try:
        yield e
    finally:
        e.stop()


def test_http_scrape_on_a_free_loopback_port(exporter: Exporter) -> None:
    port = exporter.bound_port
    assert port is not None and port > 0
    assert exporter.url == f"http://127.0.0.1:{port}/metrics"
    status, ctype, body = get(exporter.url)
    assert status == 200
    assert ctype.startswith("text/plain")
    s = samples_of(body)
    assert value(s, "hwpoisond_offline_actions_total", action="soft", result="offlined") == 3
    assert value(s, "hwpoisond_edac_uncorrected_errors_total", mc="1") == 2
    assert value(s, "hwpoisond_budget_used_bytes") == 3 * 4096

    exporter.publish(MetricsSnapshot(retired_pages=7))
    s = samples_of(get(exporter.url)[2])
    assert value(s, "hwpoisond_retired_pages") == 7
    assert not any(n == "hwpoisond_edac_mc_info" for n, _ in s)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_check_metrics_is_silent_on_a_real_scrape(exporter: Exporter) -> None:
    assert exporter.url is not None
    body = get(exporter.url)[2]
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        check=False,
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == "", proc.stdout + proc.stderr


def test_stop_releases_the_port() -> None:
    e = Exporter(port=0)
    e.start()
    port = e.bound_port
    assert port is not None
    e.stop()
    assert e.bound_port is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # The same port can be bound again at once (a restart after SIGHUP does this).
    again = Exporter(port=port)
    again.start()
    try:
        assert again.bound_port == port
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        again.stop()


def test_binds_loopback_only_by_default() -> None:
    e = Exporter.from_config(MetricsConfig(port=0))
    e.start()
    try:
        assert e._server is not None
        assert e._server.server_address[0] == "127.0.0.1"
    finally:
        e.stop()


def test_disabled_config_serves_nothing() -> None:
    e = Exporter.from_config(MetricsConfig(enabled=False))
    e.start()
    assert e.bound_port is None and e.url is None


def test_scrapes_during_publishes_see_whole_snapshots(exporter: Exporter) -> None:
    # Every value in snapshot i equals i: a scrape that mixed two snapshots would show two values.
    stop = threading.Event()

    def publisher() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            exporter.publish(
                MetricsSnapshot(retired_pages=i, tracked_pages=i, pages_over_threshold=i)
            )

    t = threading.Thread(target=publisher)
    t.start()
    try:
        assert exporter.url is not None
        seen = set()
        for _ in range(30):
            s = samples_of(get(exporter.url)[2])
            values = {
                value(s, "hwpoisond_retired_pages"),
                value(s, "hwpoisond_tracked_pages"),
                value(s, "hwpoisond_pages_over_threshold"),
            }
            assert len(values) == 1
            seen |= values
    finally:
        stop.set()
        t.join()
    assert len(seen) > 1, "the publisher never got to run between scrapes"


def test_textfile_is_written_atomically_and_world_readable(tmp_path: Path) -> None:
    e = Exporter(textfile_dir=tmp_path)
    e.publish(populated_snapshot())
    target = tmp_path / TEXTFILE_NAME
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_bytes() == e.render()
    first_inode = target.stat().st_ino
    e.publish(MetricsSnapshot(retired_pages=5))
    # rename(2) put a new file in place: readers holding the old one never see a torn write.
    assert target.stat().st_ino != first_inode
    assert value(samples_of(target.read_text()), "hwpoisond_retired_pages") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [TEXTFILE_NAME]


def test_textfile_write_into_a_missing_directory_fails_loudly(tmp_path: Path) -> None:
    e = Exporter(textfile_dir=tmp_path / "absent")
    with pytest.raises(OSError):
        e.publish(MetricsSnapshot())
    assert e.snapshot == MetricsSnapshot()  # the swap happened before the write


@pytest.mark.skipif(
    NODE_EXPORTER is None, reason="node_exporter not installed (prometheus-node-exporter)"
)
def test_node_exporter_textfile_collector_accepts_the_file(tmp_path: Path) -> None:
    Exporter(textfile_dir=tmp_path).publish(populated_snapshot())
    port = free_port()
    assert NODE_EXPORTER is not None
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.textfile",
            f"--collector.textfile.directory={tmp_path}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        s = samples_of(wait_for(f"http://127.0.0.1:{port}/metrics"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert value(s, "node_textfile_scrape_error") == 0
    assert value(s, "hwpoisond_offline_actions_total", action="soft", result="failed") == 2
    assert value(s, "hwpoisond_edac_csrow_corrected_errors_total", mc="1", csrow="1") == 1


def test_tls_scrape(self_signed: tuple[Path, Path]) -> None:
    cert, key = self_signed
    e = Exporter(port=0, tls_cert_file=str(cert), tls_key_file=str(key))
    e.publish(populated_snapshot())
    e.start()
    try:
        assert e.url is not None and e.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        s = samples_of(get(e.url, ctx)[2])
        assert value(s, "hwpoisond_retired_pages") == 3
        # Plain HTTP to the TLS port gets no metrics.
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            get(e.url.replace("https://", "http://"))
    finally:
        e.stop()
