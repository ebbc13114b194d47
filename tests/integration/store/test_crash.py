"""kill -9 crash safety with real processes.

A driver process (crash_driver.py) runs daemon steps against a fake root; this test SIGKILLs it
at random moments, restarts it, and after every kill checks what a restart must find: every
event before the source cursor recorded exactly once, and no page written to soft_offline_page
twice. At the end an unkilled run finishes the input and everything is accounted for.

soft_offline_page is a real FIFO read by a fake kernel thread in this process: the driver's
write(2) into the pipe is atomic and survives the driver's death, like a syscall that completed,
and the thread appends every write it receives to an append-only log (the offline count) and sets
the page's HWPOISON bit in kpageflags. Before inspecting state after a kill the test drains the
pipe, so a write that reached the "kernel" is always applied (the real kernel has no such lag).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from hwpoisond.actions.offliner import SOFT_OFFLINE_PAGE
from hwpoisond.store import Store
from tests.integration.actions.fakekernel import FakeMachine
from tests.integration.store.crash_driver import ACK_FILE, CURSOR

REPO = Path(__file__).resolve().parents[3]
KILLS = int(os.environ.get("HWPOISOND_CRASH_KILLS", "24"))
SYNC = b"sync"


class FifoKernel(threading.Thread):
    """The kernel's side of a FIFO soft_offline_page."""

    def __init__(self, machine: FakeMachine, log: Path) -> None:
        super().__init__(daemon=True)
        self.machine = machine
        self.fifo = machine.root / SOFT_OFFLINE_PAGE
        self.fifo.unlink()
        os.mkfifo(self.fifo, 0o600)
        self.log = log
        self.acks = 0
        self.synced = threading.Event()
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            fd = os.open(self.fifo, os.O_RDONLY)  # blocks until a writer opens
            data = b""
            while chunk := os.read(fd, 4096):
                data += chunk
            os.close(fd)
            sync = data.endswith(SYNC)
            text = data.removesuffix(SYNC).decode()
            if text:
                with open(self.log, "a") as f:
                    f.write(text + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                self.machine.kernel_offline(text)
                self.acks += 1
                ack = self.machine.root / (ACK_FILE + ".tmp")
                ack.write_text(str(self.acks))
                os.replace(ack, self.machine.root / ACK_FILE)
            if sync:
                self.synced.set()

    def drain(self) -> None:
        """Wait until every byte written into the pipe so far has been handled."""
        self.synced.clear()
        fd = os.open(self.fifo, os.O_WRONLY)
        os.write(fd, SYNC)
        os.close(fd)
        assert self.synced.wait(10), "fake kernel did not drain"

    def stop(self) -> None:
        self.stopping = True
        self.drain()
        self.join(5)


def make_events(rng: random.Random) -> list[int]:
    """150 pages; 120 get 2-3 corrected errors (offlined at the 2nd), 30 only one."""
    pfns = [0x1000 + 7 * i for i in range(150)]
    seq = [p for i, p in enumerate(pfns) for _ in range(1 if i >= 120 else rng.choice((2, 3)))]
    rng.shuffle(seq)
    return seq


def start(root: Path, state: Path, events: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.store.crash_driver",
            str(root),
            str(state),
            str(events),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def check_invariants(state: Path, log: Path, pfn_seq: list[int]) -> tuple[int, int]:
    """After a kill: recorded events are exactly the input before the cursor, each once; no
    page was written twice. Returns (cursor, pending intents) to describe the kill point."""
    writes = log.read_text().splitlines() if log.exists() else []
    dup = [w for w, n in Counter(writes).items() if n > 1]
    assert dup == [], f"pages written twice: {dup}"
    if not (state / "hwpoisond.db").exists():
        return 0, 0
    with Store.open_readonly(state) as store:
        cursor = int(store.get(CURSOR) or 0)
        rows = store.rows("SELECT data FROM events ORDER BY id")
        lines = [json.loads(r["data"])["line"] for r in rows]
        assert lines == list(range(cursor)), "recorded events differ from input before cursor"
        pending = len(store.pending_intents())
        retired = {p.pfn for p in store.retired_pages()}
    # every offlined page that the store calls retired was written exactly once
    assert retired <= {int(w, 0) >> 12 for w in writes}
    return cursor, pending


def test_kill_9_at_random_points(tmp_path: Path) -> None:
    seed = int(os.environ.get("HWPOISOND_CRASH_SEED", "20240611"))
    rng = random.Random(seed)  # noqa: S311 - reproducible kill points, not cryptography
    machine = FakeMachine(tmp_path / "root", pages=1 << 14)
    log = tmp_path / "offline.log"
    kernel = FifoKernel(machine, log)
    kernel.start()
    state = tmp_path / "state"
    pfn_seq = make_events(rng)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps({"pfn": p}) + "\n" for p in pfn_seq))

    # one measured run over a copy of the input tells how long a whole run takes
    proc = start(machine.root, tmp_path / "probe-state", events)
    t = time.monotonic()
    assert proc.wait(60) == 0
    full_run = time.monotonic() - t
    step_seconds = full_run / len(pfn_seq)
    kernel.drain()
    log.unlink()
    machine.reboot("0c6f9d40-2d34-4f49-8f0f-6a1d8b7e2e22")  # clean slate: no poison
    machine.writes.clear()

    kill_points: list[tuple[int, int]] = []
    for _ in range(KILLS):
        cursor = kill_points[-1][0] if kill_points else 0
        proc = start(machine.root, state, events)
        # Kill within the next ~25 steps of what is left, so the kills spread over the input.
        time.sleep(rng.uniform(0, step_seconds * min(25, len(pfn_seq) - cursor + 1)))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kernel.drain()
        kill_points.append(check_invariants(state, log, pfn_seq))

    proc = start(machine.root, state, events)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "done"
    assert proc.wait(60) == 0
    kernel.stop()

    cursor, pending = check_invariants(state, log, pfn_seq)
    assert (cursor, pending) == (len(pfn_seq), 0)
    counts = Counter(pfn_seq)
    want = sorted(p for p, n in counts.items() if n >= 2)
    written = sorted(int(w, 0) >> 12 for w in log.read_text().splitlines())
    assert written == want  # each page with 2+ CEs written once, the others never
    assert all(machine.poisoned(p) for p in want)
    with Store.open_readonly(state) as store:
        assert sorted(p.pfn for p in store.retired_pages()) == want
        assert all(p.verified for p in store.retired_pages())
        results = Counter(r["result"] for r in store.rows("SELECT result FROM actions"))
    assert set(results) <= {"offlined", "interrupted"}
    assert results["offlined"] == len(want)

    distinct = set(kill_points)
    print(
        f"\nkill points: {len(kill_points)} kills, {len(distinct)} distinct states, "
        f"{sum(1 for _, p in kill_points if p)} between intent and result, "
        f"{results['interrupted']} interrupted intents retried, full run {full_run:.2f}s"
    )
    assert len(kill_points) >= 20
    # the kills must land across the run, not all before the first step
    assert len(distinct) >= KILLS // 2
