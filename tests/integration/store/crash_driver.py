"""Crash-test driver: runs daemon steps (event → intent → sysfs write → result) against a fake
root until its input is consumed, in a process the test SIGKILLs at random moments.

Rule: test helper; the step order is DESIGN.md's (gather → decide → persist intent → act →
persist result). The "decide" here is a stand-in for the policy core (offline a page at its
second corrected error) so that this test depends on the store and the executor only.

Usage: python -m tests.integration.store.crash_driver ROOT STATE_DIR EVENTS_JSONL
Prints "ready" once imports are done, "done" at the end.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hwpoisond.actions.offliner import Offliner
from hwpoisond.actions.reconcile import carry_out_owed, reconcile_at_start, record_report
from hwpoisond.core.model import Decision, Event
from hwpoisond.kernelfs import KernelFS
from hwpoisond.store import Store

CURSOR = "events"
#: The fake kernel (a thread in the test process reading the soft_offline_page FIFO) bumps this
#: file after it has handled a write, as the real write(2) returns only after the offline.
ACK_FILE = "kernel-acks"


class FifoKernelFS(KernelFS):
    """KernelFS whose offline write returns once the fake kernel has acknowledged it."""

    def _acks(self) -> int:
        try:
            return int((self.root / ACK_FILE).read_text() or 0)
        except (OSError, ValueError):
            return 0

    def write_text(self, kpath: str, text: str) -> None:
        before = self._acks()
        super().write_text(kpath, text)
        while self._acks() <= before:
            time.sleep(0.0005)


def main(argv: list[str]) -> int:
    root, state_dir, events_path = Path(argv[0]), Path(argv[1]), Path(argv[2])
    lines = events_path.read_text().splitlines()
    print("ready", flush=True)
    store = Store.open(state_dir)
    offliner = Offliner(FifoKernelFS(root))
    now = time.time()
    report = reconcile_at_start(store, offliner, now)
    carry_out_owed(store, offliner, report.owed, now, boot_id=report.boot_id)
    seq = int(store.get(CURSOR) or 0)
    while seq < len(lines):
        item = json.loads(lines[seq])
        pfn = int(item["pfn"])
        event = Event(
            kind="memory_error",
            source="mc_event",
            severity="corrected",
            pfn=pfn,
            phys_addr=pfn << 12,
            time=float(seq),
            line=seq,
        )
        now = time.time()
        decision = None
        with store.transaction():  # gather + decide + persist intent: one transaction
            store.record_event(event, now)
            store.set(CURSOR, str(seq + 1), now)
            page = store.rows("SELECT ce_count, state FROM pages WHERE pfn = ?", (pfn,))[0]
            if page["ce_count"] >= 2 and page["state"] == "tracked":
                decision = Decision(
                    kind="offline", at=float(seq), reason="2 CEs", pfn=pfn, action="soft"
                )
                action_id = store.record_intent(decision, now, boot_id=report.boot_id)
        if decision is not None:
            result = offliner.execute(decision, time.time())  # act
            with store.transaction():  # persist result
                record_report(store, action_id, result, report.boot_id)
        seq += 1
    store.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
