"""Builds a fixture machine's state database by driving the real store and executor.

Rule: test helper; reads tests/fixtures/machines/<name>/machine.json, lays out a fake root
(SMBIOS type 17 entries, meminfo, kpageflags, boot_id) and replays its timeline through Store,
Offliner (emulated kernel) and start-up reconciliation, so the database holds exactly what the
daemon would have written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hwpoisond.actions.offliner import Offliner
from hwpoisond.actions.reconcile import reconcile_at_start, record_report
from hwpoisond.core.model import Decision, DramLocation, Event
from hwpoisond.store import Store
from hwpoisond.store.db import META_DAEMON
from tests.integration.actions.fakekernel import FakeKernelFS, FakeMachine, smbios_type17

MACHINES = Path(__file__).resolve().parents[2] / "fixtures" / "machines"


def build_state(name: str, root: Path, state_dir: Path, t0: float) -> dict[str, Any]:
    """Create `state_dir` for machine `name` with its timeline starting at wall time `t0`.
    Returns the parsed machine.json."""
    spec: dict[str, Any] = json.loads((MACHINES / name / "machine.json").read_text())
    machine = FakeMachine(
        root, pages=1 << 22, mem_total_kb=spec["mem_total_kb"], boot_id=spec["boot_id"]
    )
    for i, d in enumerate(spec["dimms"]):
        machine.add_dimm(
            i,
            smbios_type17(
                d["locator"], d["bank"], d["size_mb"], d["manufacturer"], d["serial"], d["part"]
            ),
        )
    for pfn in spec["already_poisoned_pfns"]:
        machine.set_poisoned(int(pfn, 16))
        machine.set_hardware_corrupted_kb(machine.hardware_corrupted_kb() + 4)
    machine.busy_pfns.update(int(p, 16) for p in spec["busy_pfns"])
    offliner = Offliner(FakeKernelFS(machine))
    with Store.open(state_dir) as store:
        boot_id = reconcile_at_start(store, offliner, t0).boot_id
        for step in spec["timeline"]:
            at = t0 + step["t"]
            for key in ("ce", "ue"):
                if key in step:
                    e = step[key]
                    pfn = int(e["pfn"], 16)
                    store.record_event(
                        Event(
                            kind="memory_error",
                            source="mc_event",
                            severity="corrected" if key == "ce" else "uncorrected",
                            phys_addr=pfn << 12 | 0x2C0,
                            pfn=pfn,
                            time=at,
                            mc=e["mc"],
                            label=e["label"],
                            dram=DramLocation(mc=e["mc"], row=e["row"], bank=e["bank"]),
                        ),
                        at,
                    )
            if "unbusy" in step:
                machine.busy_pfns.discard(int(step["unbusy"]["pfn"], 16))
            if "offline" in step:
                o = step["offline"]
                pfn = int(o["pfn"], 16)
                label = store.rows("SELECT label FROM pages WHERE pfn = ?", (pfn,))[0]["label"]
                decision = Decision(
                    kind="offline",
                    at=at,
                    reason=o["reason"],
                    pfn=pfn,
                    action="soft",
                    attempt=o.get("attempt", 1),
                    label=label,
                )
                action_id = store.record_intent(decision, at, boot_id=boot_id)
                record_report(store, action_id, offliner.execute(decision, at), boot_id)
            if "escalate" in step:
                x = step["escalate"]
                store.record_intent(
                    Decision(
                        kind="escalate", at=at, reason=x["reason"], label=x["label"], mc=x["mc"]
                    ),
                    at,
                )
        last = t0 + spec["timeline"][-1]["t"]
        meta = spec["meta"]
        for key in ("policy", "budget", "dimms"):
            store.set_meta(key, meta[key], last)
        store.set_meta(
            "sources",
            {
                name: {"state": v["state"], "detail": v["detail"], "since": t0 + v["since_offset"]}
                for name, v in meta["sources"].items()
            },
            last,
        )
        store.set_meta(
            "kernel",
            {**meta["kernel"], "hardware_corrupted_kb": machine.hardware_corrupted_kb()},
            last,
        )
        store.set_meta(META_DAEMON, {"pid": 1234, "started_at": t0, "updated_at": last}, last)
    return spec
