"""The daemon's pipeline and start-up over a real SQLite file and the simulated kernel.

Issue 19's defects, each reproduced at the seam where it lived: a batch the deduper empties
must still move the journal cursor; after a restart the journal copies of errors already
recorded through tracefs must not count again; a store that cannot write (SQLITE_FULL, made
real with `PRAGMA max_page_count`) must cost no event, no decision and no offline.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from hwpoisond.actions.offliner import Offliner
from hwpoisond.actions.triggers import TriggerRunner
from hwpoisond.core import state as core_state
from hwpoisond.core.model import Event
from hwpoisond.core.params import BudgetParams, PolicyParams
from hwpoisond.daemon.outcomes import Outcomes
from hwpoisond.daemon.pipeline import JOURNALD_CURSOR, Pipeline
from hwpoisond.daemon.startup import seed_deduper, start_up
from hwpoisond.sim.kernel import SimKernelFS, SimMachine
from hwpoisond.store.db import Store
from hwpoisond.tally import Tally

PFN = 0x12345
LABEL = "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"


def _params(ce_threshold: int) -> PolicyParams:
    return dataclasses.replace(
        PolicyParams(),
        ce_threshold=ce_threshold,
        bank_rows_limit=0,
        dimm_pages_limit=0,
        budget=BudgetParams(max_retired_bytes=1 << 30, max_offlines_per_hour=1000),
    )


class Rig:
    def __init__(self, tmp_path: Path, params: PolicyParams) -> None:
        self.machine = SimMachine(tmp_path / "root", boot_time=int(time.time()) - 3600).build()
        self.state = tmp_path / "state"
        self.state.mkdir(exist_ok=True)
        self.params = params
        self.offliner = Offliner(SimKernelFS(self.machine))

    def start(self) -> tuple[Store, Pipeline]:
        """What Daemon.start() does with the store, as a restart would."""
        store = Store.open(self.state)
        now = time.time()
        started = start_up(store, self.offliner, self.params, now, reoffline_enabled=True)
        tally = Tally(start_time_seconds=now)
        pipeline = Pipeline(
            store,
            self.offliner,
            self.params,
            started.policy,
            retired_pfns=set(started.retired_pfns),
            outcomes=Outcomes(tally, TriggerRunner({}, 5.0)),
            tally=tally,
            boot_id=started.report.boot_id,
            last_event_id=started.last_event_id,
        )
        seed_deduper(store, pipeline.deduper, now)
        return store, pipeline


def _copies(at: float, pfn: int = PFN) -> tuple[Event, Event]:
    """One corrected error as ras:mc_event and as its EDAC kernel-log line."""
    common = dict(
        kind="memory_error",
        severity="corrected",
        count=1,
        mc=0,
        label=LABEL,
        pfn=pfn,
        phys_addr=pfn << 12,
        time=at,
    )
    return Event(source="mc_event", **common), Event(source="kmsg_edac", **common)  # type: ignore[arg-type]


def _ce_count(pipeline: Pipeline, pfn: int = PFN) -> int:
    page = core_state.page(pipeline.policy, pfn)
    return 0 if page is None else page.ce_count


def test_a_batch_the_deduper_empties_still_moves_the_journal_cursor(tmp_path: Path) -> None:
    rig = Rig(tmp_path, _params(ce_threshold=3))
    store, pipeline = rig.start()
    trace, journal = _copies(time.time())
    pipeline.step([trace], time.time())
    pipeline.step([journal], time.time(), cursor="s=1;i=2;b=ab")
    assert store.get(JOURNALD_CURSOR) == "s=1;i=2;b=ab"
    assert pipeline.deduper.duplicates == {"edac": 1}
    assert _ce_count(pipeline) == 1
    store.close()


def test_journal_copies_after_a_restart_do_not_count_again(tmp_path: Path) -> None:
    # The audit's case: threshold 3, two real errors, both recorded through tracefs; after a
    # restart the journal delivers its copies of both. Counted again, the page was offlined.
    rig = Rig(tmp_path, _params(ce_threshold=3))
    store, pipeline = rig.start()
    now = time.time()
    copies = [_copies(now - 5), _copies(now - 4)]
    pipeline.step([c[0] for c in copies], now)
    assert _ce_count(pipeline) == 2
    store.close()  # SIGTERM or kill: the journal copies were never read

    store, pipeline = rig.start()
    assert _ce_count(pipeline) == 2
    pipeline.step([c[1] for c in copies], time.time(), cursor="s=1;i=9;b=ab")
    assert _ce_count(pipeline) == 2
    assert pipeline.deduper.duplicates == {"edac": 2}
    assert not rig.machine.poisoned
    assert store.rows("SELECT count(*) AS n FROM events")[0]["n"] == 2
    # A third real error still retires the page: the deduper dropped copies, not errors.
    pipeline.step([_copies(time.time())[0]], time.time())
    assert PFN in rig.machine.poisoned
    store.close()


def test_a_full_disk_holds_events_and_intents_and_loses_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, _params(ce_threshold=2))
    store, pipeline = rig.start()
    pipeline.step([_copies(time.time(), pfn=0x100)[0]], time.time())
    # SQLITE_FULL for real: the file may not grow past the pages it has.
    pages = store.rows("PRAGMA page_count")[0]["page_count"]
    store.rows(f"PRAGMA max_page_count = {pages}")
    burst = [_copies(time.time(), pfn=0x200 + i)[0] for i in range(300)]
    burst += [_copies(time.time(), pfn=0x100)[0]]  # the second error: an offline is owed
    pipeline.step(burst, time.time(), cursor=None)
    assert pipeline.store_error is not None and "full" in pipeline.store_error
    assert pipeline.held_events == len(burst)
    assert pipeline.tally.store_write_failures >= 1
    # Decided from memory, but no offline whose intent is not durable.
    assert _ce_count(pipeline, 0x100) == 2
    assert 0x100 not in rig.machine.poisoned
    assert store.rows("SELECT count(*) AS n FROM events")[0]["n"] == 1

    store.rows("PRAGMA max_page_count = 1073741823")  # space again
    pipeline.flush(time.time())
    assert pipeline.store_error is None and pipeline.held_events == 0
    assert store.rows("SELECT count(*) AS n FROM events")[0]["n"] == 1 + len(burst)
    assert 0x100 in rig.machine.poisoned
    retired = [r.pfn for r in store.retired_pages()]
    assert retired == [0x100]
    store.close()
