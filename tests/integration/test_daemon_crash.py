"""kill -9 the real daemon at many points of a stream of errors; after every restart no page is
written to soft_offline_page twice, and at the end every page whose recorded errors reach the
threshold is retired (the policy's state was rebuilt from checkpoint + recorded events)."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from hwpoisond.simkernel import KPF_HWPOISON, SOFT_OFFLINE, DramAddress, SimMachine
from tests.integration.daemonproc import DaemonProcess

KILLS = int(os.environ.get("HWPOISOND_DAEMON_KILLS", "20"))


class FakeKernel(threading.Thread):
    """Reads soft_offline_page (a FIFO) like the kernel's store function: logs every write and
    poisons the page in kpageflags."""

    def __init__(self, machine: SimMachine) -> None:
        super().__init__(daemon=True)
        self.machine = machine
        self.path = machine.root / SOFT_OFFLINE
        self.path.unlink()
        os.mkfifo(self.path, 0o600)
        self.writes: list[int] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            with open(self.path, "rb") as f:  # blocks until a daemon opens it for writing
                data = f.read()
            # Each write(2) is one "%#x" address; a FIFO joins writes, "0x" separates them.
            for text in data.split(b"0x")[1:]:
                pfn = int(text.strip(), 16) >> 12
                self.writes.append(pfn)
                with open(self.machine.root / "proc/kpageflags", "r+b") as kpf:
                    kpf.seek(pfn * 8)
                    kpf.write((1 << KPF_HWPOISON).to_bytes(8, "little"))

    def stop(self) -> None:
        self._stopping.set()
        fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # wake the blocked open()
        os.close(fd)


def _committed(state: Path) -> int:
    db = state / "hwpoisond.db"
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def test_kill_9_at_many_points(tmp_path: Path) -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible kill points, not secrets
    machine = SimMachine(tmp_path / "root", boot_time=int(time.time()) - 3600).build()
    kernel = FakeKernel(machine)
    kernel.start()
    cfg = tmp_path / "hwpoisond.toml"
    cfg.write_text(
        "[metrics]\nenabled = false\n[sources]\njournald = false\n"
        "[daemon]\nhousekeeping_interval = '2s'\n"
        # Futility rules off: this test is about crash safety, and its 80 single-cell faults
        # share banks, which the default policy would rightly escalate instead of retiring.
        "[policy]\nretry_backoff = '1s'\nbank_rows_limit = 0\ndimm_pages_limit = 0\n"
        "[budget]\nmax_offlines_per_hour = 100000\n"
        "max_retired_bytes = '1GiB'\nmax_retired_fraction = 1.0\n"
    )
    state = tmp_path / "state"
    pipe = machine.root / "sys/kernel/tracing/instances/hwpoisond/trace_pipe"
    cells = [
        DramAddress(machine.dimms[i % 8], bank=i % 16, row=100 + i, column=(37 * i) % 1024)
        for i in range(4 * KILLS)
    ]
    kills_landed = 0
    try:
        for k in range(KILLS + 1):
            d = DaemonProcess(tmp_path, machine.root, state, config=cfg)
            try:
                d.wait_ready(timeout=30)
                # Two errors on each of this round's pages (each pair makes one offline), one
                # error on a page of the next round (it must add up across the restart).
                lines = []
                for cell in cells[4 * k : 4 * k + 4] if k < KILLS else []:
                    for _ in range(2):
                        lines.append(machine.mc_event_line(time.time() - machine.boot_time, cell))
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
                try:
                    for line in lines:
                        os.write(fd, (line + "\n").encode())
                        if rng.random() < 0.3:
                            time.sleep(rng.random() * 0.05)
                finally:
                    os.close(fd)
                if k == KILLS:
                    # The last start: let it settle, then stop cleanly.
                    time.sleep(3)
                    assert d.stop(timeout=10) == 0
                    break
                time.sleep(rng.random() * 0.4)
                if d.proc.poll() is None:
                    d.proc.send_signal(signal.SIGKILL)
                    d.proc.wait(10)
                    kills_landed += 1
            finally:
                d.close()
    finally:
        kernel.stop()
        kernel.join(5)

    assert kills_landed == KILLS
    # No page was ever written twice, whatever the kill point.
    assert len(kernel.writes) == len(set(kernel.writes)), sorted(kernel.writes)
    # Every page with two recorded errors ended up retired, each retired page was written once.
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "hwpoisond", "status", "--json", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    conn = sqlite3.connect(f"file:{state / 'hwpoisond.db'}?mode=ro", uri=True)
    twice = {
        int(pfn)
        for (pfn,) in conn.execute(
            "SELECT pfn FROM events WHERE severity = 'corrected' GROUP BY pfn HAVING count(*) >= 2"
        )
    }
    conn.close()
    retired = {r["pfn"] for r in status["retired"]}
    assert twice, "no page reached the threshold: the test proved nothing"
    assert twice <= retired | set(kernel.writes), sorted(twice - retired)
    assert set(kernel.writes) <= retired
    assert status["pending"] == []
    assert _committed(state) == status["events_stored"]
