"""A taken metrics port never stops retirement: the real daemon, its port held by a real socket,
reaches READY, says so once (naming address, port and errno), retires a page, shows
`hwpoisond_metrics_endpoint_up 0` in its textfile and the error in its status record, and serves
the endpoint once the port is free."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
from collections.abc import Callable
from pathlib import Path

from hwpoisond.metrics import TEXTFILE_NAME, Exporter
from hwpoisond.metrics.exporter import MetricsBindError, MetricsConfigError
from hwpoisond.sim.kernel import SOFT_OFFLINE, DramAddress, SimMachine
from tests.integration.daemonproc import DaemonProcess
from tests.integration.metrics.helpers import get
from tests.unit.metrics.samples import samples_of, value


def wait_until(condition: Callable[[], bool], what: str, limit_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + limit_seconds
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {limit_seconds} s: {what}"
        time.sleep(0.05)


def textfile_value(path: Path, name: str) -> float | None:
    try:
        return value(samples_of(path.read_text()), name)
    except (OSError, KeyError):
        return None


def scrape_or_none(url: str) -> str | None:
    try:
        return get(url)[2]
    except (urllib.error.URLError, ConnectionError):
        return None


def test_the_daemon_retires_pages_without_its_port_and_binds_once_it_is_free(
    tmp_path: Path,
) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    machine = SimMachine(tmp_path / "root", boot_time=int(time.time()) - 3600).build()
    # soft_offline_page is a plain file here, and with no /proc/kpageflags an offline whose
    # write succeeds counts as retired, unverified (a FIFO-fed fake kernel sets HWPOISON only
    # after the write returns, racing the daemon's check): this test is about the port.
    (machine.root / "proc/kpageflags").unlink()
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    cfg = tmp_path / "hwpoisond.toml"
    cfg.write_text(
        f"[metrics]\nport = {port}\ntextfile_dir = '{textfile}'\n[sources]\njournald = false\n"
        "[daemon]\npoll_interval = '1s'\nhousekeeping_interval = '1s'\n"
    )
    state = tmp_path / "state"
    prom = textfile / TEXTFILE_NAME
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with DaemonProcess(tmp_path, machine.root, state, config=cfg) as d:
            d.wait_ready(timeout=30)
            warning = f"cannot bind the metrics endpoint to 127.0.0.1:{port}: "
            assert f"WARNING {warning}" in d.stderr()
            assert "(errno 98)" in d.stderr()  # EADDRINUSE
            wait_until(
                lambda: textfile_value(prom, "hwpoisond_metrics_endpoint_up") == 0.0,
                "endpoint_up 0 in the textfile",
            )

            # Two corrected errors on one page: over the default threshold, so it is retired.
            cell = DramAddress(machine.dimms[2], bank=5, row=300, column=8)
            now = time.time() - machine.boot_time
            machine.corrected_error(now, cell)
            machine.corrected_error(now + 1, cell)
            pfn = machine.phys_addr_of(cell) >> 12
            wait_until(
                lambda: textfile_value(prom, "hwpoisond_retired_pages") == 1.0,
                "the page retired without the endpoint",
            )
            written = (machine.root / SOFT_OFFLINE).read_text()
            assert written == f"{pfn << 12:#x}"
            status = subprocess.run(
                [sys.executable, "-m", "hwpoisond", "status", "--json", "--state-dir", str(state)],
                capture_output=True,
                text=True,
                check=True,
            )
            report = json.loads(status.stdout)
            assert [r["pfn"] for r in report["retired"]] == [pfn]
            assert warning in report["daemon"]["metrics_endpoint_error"]

            # Let a few housekeeping rounds (1 s each, every one a failed retry) go by.
            published = textfile_value(prom, "hwpoisond_snapshot_timestamp_seconds")
            assert published is not None
            wait_until(
                lambda: (
                    (textfile_value(prom, "hwpoisond_snapshot_timestamp_seconds") or 0)
                    > published + 3
                ),
                "three more housekeeping rounds",
            )
            holder.close()
            wait_until(lambda: scrape_or_none(url) is not None, "the endpoint once the port freed")
            assert "metrics endpoint bound at last" in d.stderr()
            assert d.stderr().count(f"WARNING {warning}") == 1
            wait_until(
                lambda: (
                    (body := scrape_or_none(url)) is not None
                    and value(samples_of(body), "hwpoisond_metrics_endpoint_up") == 1.0
                ),
                "endpoint_up 1 once bound",
            )
            body = scrape_or_none(url)
            assert body is not None
            assert value(samples_of(body), "hwpoisond_retired_pages") == 1
            assert d.stop(timeout=10) == 0
    finally:
        holder.close()


def test_bind_names_the_address_port_and_errno_and_retry_binds_later() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    e = Exporter(port=port)
    try:
        try:
            e.bind()
        except MetricsBindError as err:
            assert err.errno == 98
            assert f"127.0.0.1:{port}" in str(err) and "errno 98" in str(err)
        else:
            raise AssertionError("bind() on a taken port did not raise")
        assert e.bind_error is not None and f"127.0.0.1:{port}" in e.bind_error
        assert e.retry_bind() is False and not e.endpoint_up
        e.publish(e.snapshot)
        assert value(samples_of(e.render().decode()), "hwpoisond_metrics_endpoint_up") == 0
        holder.close()
        assert e.retry_bind() is True and e.endpoint_up and e.bind_error is None
        e.publish(e.snapshot)
        assert (
            value(
                samples_of(get(f"http://127.0.0.1:{port}/metrics")[2]),
                "hwpoisond_metrics_endpoint_up",
            )
            == 1
        )
    finally:
        holder.close()
        e.stop()


def test_an_address_that_is_not_one_is_a_config_error_not_a_retry() -> None:
    e = Exporter(listen_address="not an address", port=0)
    try:
        e.bind()
    except MetricsConfigError as err:
        assert "metrics.listen_address" in str(err) and "not an address" in str(err)
    else:
        raise AssertionError("a bad address was accepted")
    assert e.bound_port is None
