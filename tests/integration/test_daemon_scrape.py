"""The real daemon as a subprocess on a simulated machine's tree: kernel trace lines in through a
FIFO trace_pipe, a real HTTP scrape of /metrics out, and `status --json` from the database."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hwpoisond.sim.kernel import DramAddress, SimMachine
from tests.integration.daemonproc import DaemonProcess


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        v
        for (n, ls), v in metrics.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


def test_events_through_the_fifo_show_in_metrics_and_status(tmp_path: Path) -> None:
    machine = SimMachine(tmp_path / "root", boot_time=int(time.time()) - 3600).build()
    cfg = tmp_path / "hwpoisond.toml"
    cfg.write_text(
        "[metrics]\nport = 0\n[sources]\njournald = false\n"
        "[daemon]\npoll_interval = '1s'\n[policy]\nretry_max = 1\nretry_backoff = '1s'\n"
    )
    state = tmp_path / "state"
    with DaemonProcess(tmp_path, machine.root, state, config=cfg) as d:
        d.wait_ready(timeout=20)
        m = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", d.stderr())
        assert m, d.stderr()
        url = m.group(1)

        cell = DramAddress(machine.dimms[3], bank=2, row=100, column=64)
        other = DramAddress(machine.dimms[6], bank=9, row=7, column=1000)
        now = time.time() - machine.boot_time
        machine.corrected_error(now, cell)
        machine.corrected_error(now + 1, other)
        machine.corrected_error(now + 2, cell)  # second CE on the page: over threshold
        pfn = machine.phys_addr_of(cell) >> 12

        deadline = time.monotonic() + 20
        metrics = _scrape(url)
        while time.monotonic() < deadline and (
            _value(metrics, "hwpoisond_memory_errors_total", error_severity="corrected") < 3
            or _value(metrics, "hwpoisond_offline_actions_total") < 2
            or _value(metrics, "hwpoisond_edac_corrected_errors_total") < 3
        ):
            time.sleep(0.2)
            metrics = _scrape(url)
        label = machine.dimms[3].label
        assert _value(metrics, "hwpoisond_memory_errors_total", source="mc_event") == 3
        assert _value(metrics, "hwpoisond_dimm_memory_errors_total", dimm=label) == 2
        assert _value(metrics, "hwpoisond_edac_dimm_corrected_errors_total", dimm=label) == 2
        assert _value(metrics, "hwpoisond_edac_corrected_errors_total", mc="0") == 2
        assert _value(metrics, "hwpoisond_edac_corrected_errors_total", mc="1") == 1
        # A plain file stands in for soft_offline_page here: the write succeeds but no kernel
        # poisons the page, so verification must fail and the policy retries once, then stops.
        assert _value(metrics, "hwpoisond_offline_actions_total", result="failed") == 2
        assert _value(metrics, "hwpoisond_retired_pages") == 0
        assert _value(metrics, "hwpoisond_source_up", source="tracefs") == 1
        assert _value(metrics, "hwpoisond_source_up", source="edac") == 1
        written = (machine.root / "sys/devices/system/memory/soft_offline_page").read_text()
        assert written == f"{pfn << 12:#x}"
        assert d.stop() == 0

    status = subprocess.run(
        [sys.executable, "-m", "hwpoisond", "status", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(status.stdout)
    assert report["events_stored"] == 3
    assert report["retired"] == []
    assert [f["pfn"] for f in report["failures"]] == [pfn, pfn]
    assert {f["result"] for f in report["failures"]} == {"failed"}
    assert report["sources"]["tracefs"]["state"] == "up"
