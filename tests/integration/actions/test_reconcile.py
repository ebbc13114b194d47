"""Start-up reconciliation: pending intents, reboot persistence, changed memory.

The fake machine's reboot() clears every HWPOISON bit and HardwareCorrupted and changes boot_id,
as a real reboot does (poison lives in kernel RAM only).
"""

from __future__ import annotations

from pathlib import Path

from hwpoisond.actions.offliner import Offliner
from hwpoisond.actions.reconcile import carry_out, carry_out_owed, reconcile_at_start
from hwpoisond.core.model import Decision
from hwpoisond.store import Store
from hwpoisond.store.db import ARCHIVE_PREFIX
from tests.integration.actions.fakekernel import FakeKernelFS, FakeMachine, smbios_type17
from tests.integration.actions.test_fingerprint import two_dimms

T0 = 1_700_000_000.0
BOOT2 = "0c6f9d40-2d34-4f49-8f0f-6a1d8b7e2e22"


def offline(pfn: int, reason: str = "2 CEs in 24h") -> Decision:
    return Decision(kind="offline", at=T0, reason=reason, pfn=pfn, action="soft")


def first_boot(tmp_path: Path) -> tuple[FakeMachine, Offliner, Store]:
    machine = FakeMachine(tmp_path / "root")
    two_dimms(machine)
    offliner = Offliner(FakeKernelFS(machine))
    store = Store.open(tmp_path / "state")
    report = reconcile_at_start(store, offliner, T0)
    assert not report.rebooted and report.previous_fingerprint is None
    carry_out(
        store,
        offliner,
        [offline(0x300), offline(0x100), offline(0x200)],
        T0 + 10,
        boot_id=report.boot_id,
    )
    assert machine.writes == ["0x300000", "0x100000", "0x200000"]
    return machine, offliner, store


def test_restart_without_reboot_owes_nothing(tmp_path: Path) -> None:
    machine, offliner, store = first_boot(tmp_path)
    report = reconcile_at_start(store, offliner, T0 + 100)
    assert not report.rebooted
    assert report.reoffline == () and report.retry == () and report.resolved == ()
    assert len(machine.writes) == 3


def test_reboot_same_memory_reoffline_in_retirement_order(tmp_path: Path) -> None:
    machine, offliner, store = first_boot(tmp_path)
    machine.reboot(BOOT2)
    assert not machine.poisoned(0x100)
    report = reconcile_at_start(store, offliner, T0 + 1000)
    assert report.rebooted and report.boot_id == BOOT2
    assert not report.fingerprint_changed
    assert [o.decision.pfn for o in report.reoffline] == [0x300, 0x100, 0x200]
    assert all(
        o.decision.action == "soft" and "re-offline after reboot" in o.decision.reason
        for o in report.reoffline
    )
    assert "2 CEs in 24h" in report.reoffline[0].decision.reason
    # the re-offline intents are durable before anything is written
    assert [p.action_id for p in store.pending_intents()] == [o.action_id for o in report.reoffline]
    reports = carry_out_owed(store, offliner, report.reoffline, T0 + 1001, boot_id=BOOT2)
    assert [r.result.result for r in reports] == ["offlined"] * 3
    assert all(machine.poisoned(p) for p in (0x100, 0x200, 0x300))
    assert machine.hardware_corrupted_kb() == 12
    assert {p.boot_id for p in store.retired_pages()} == {BOOT2}
    origins = [r["origin"] for r in store.rows("SELECT origin FROM actions ORDER BY id")]
    assert origins == ["policy"] * 3 + ["reboot"] * 3
    # a second start in the same boot owes nothing
    assert reconcile_at_start(store, offliner, T0 + 2000).reoffline == ()


def test_reboot_with_replaced_dimm_archives_and_offlines_nothing(tmp_path: Path) -> None:
    machine, offliner, store = first_boot(tmp_path)
    machine.reboot(BOOT2)
    machine.add_dimm(
        1,
        smbios_type17("B1", "P1_Node1_Channel0_Dimm0", 16384, "Hynix", "NEWSERIAL", "HMA82GR7"),
    )
    writes_before = len(machine.writes)
    report = reconcile_at_start(store, offliner, T0 + 1000)
    assert report.rebooted and report.fingerprint_changed
    assert report.reoffline == () and report.archived_pages == 3
    assert report.archive_key is not None and report.archive_key.startswith(ARCHIVE_PREFIX)
    assert len(machine.writes) == writes_before
    archive = store.get_meta(report.archive_key)
    assert sorted(p["pfn"] for p in archive["pages"]) == [0x100, 0x200, 0x300]
    assert "NEWSERIAL" in archive["new_fingerprint"]["description"]
    assert "NEWSERIAL" not in archive["old_fingerprint"]["description"]
    assert store.retired_pages() == []
    # the new memory is now the reference: the next start is quiet
    again = reconcile_at_start(store, offliner, T0 + 2000)
    assert not again.fingerprint_changed and again.reoffline == ()


def test_pending_intents_resolved_from_kpageflags(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path / "root")
    offliner = Offliner(FakeKernelFS(machine))
    store = Store.open(tmp_path / "state")
    reconcile_at_start(store, offliner, T0)
    done = store.record_intent(offline(0x10), T0)  # written, then killed before the result
    machine.kernel_offline("0x10000")
    lost = store.record_intent(offline(0x11), T0)  # killed before the write
    report = reconcile_at_start(store, offliner, T0 + 5)
    assert report.resolved == (done,)
    assert [o.decision.pfn for o in report.retry] == [0x11]
    successor = report.retry[0].action_id
    results = {r["id"]: r["result"] for r in store.rows("SELECT id, result FROM actions")}
    assert results == {done: "offlined", lost: "interrupted", successor: None}
    carry_out_owed(store, offliner, report.retry, T0 + 6)
    assert machine.writes == ["0x10000", "0x11000"]  # each page written exactly once
    assert store.pending_intents() == []


def test_interrupted_intent_survives_a_second_kill(tmp_path: Path) -> None:
    """Kill 1 after the intent, before the write; kill 2 after reconciliation committed, before
    the retry was written: the third start still owes the page (issue 19's lost offline)."""
    machine = FakeMachine(tmp_path / "root")
    offliner = Offliner(FakeKernelFS(machine))
    store = Store.open(tmp_path / "state")
    reconcile_at_start(store, offliner, T0)
    store.record_intent(offline(0x11), T0)  # kill 1 lands here
    reconcile_at_start(store, offliner, T0 + 5)  # start 2 reconciles ... and kill 2 lands here
    store.close()
    store = Store.open(tmp_path / "state")
    report = reconcile_at_start(store, offliner, T0 + 10)  # start 3
    assert [o.decision.pfn for o in report.owed] == [0x11]
    carry_out_owed(store, offliner, report.owed, T0 + 11)
    assert machine.writes == ["0x11000"]
    assert [p.pfn for p in store.retired_pages()] == [0x11]


def test_policy_pending_without_intent_is_recorded_and_owed(tmp_path: Path) -> None:
    """The policy decided and the step failed before the intent was stored: the decision comes
    back from the checkpoint as a pending page, and reconciliation records it."""
    machine = FakeMachine(tmp_path / "root")
    offliner = Offliner(FakeKernelFS(machine))
    store = Store.open(tmp_path / "state")
    report = reconcile_at_start(store, offliner, T0, policy_pending=[offline(0x12)])
    assert [o.decision.pfn for o in report.retry] == [0x12]
    assert [p.decision.pfn for p in store.pending_intents()] == [0x12]
    # a second start before the write owes it once, not twice
    again = reconcile_at_start(store, offliner, T0 + 1, policy_pending=[offline(0x12)])
    assert [o.decision.pfn for o in again.owed] == [0x12]
    assert len(store.pending_intents()) == 1
    carry_out_owed(store, offliner, again.owed, T0 + 2)
    assert machine.writes == ["0x12000"]
    # once done, the policy learns the result from the store instead of owing it again
    third = reconcile_at_start(store, offliner, T0 + 3, policy_pending=[offline(0x12)])
    assert third.owed == ()
    assert [(r.pfn, r.result) for r in third.results] == [(0x12, "offlined")]


def test_unreadable_kpageflags_retries_nothing(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path / "root")
    offliner = Offliner(FakeKernelFS(machine))
    store = Store.open(tmp_path / "state")
    store.record_intent(offline(0x10), T0)
    kpageflags = machine.root / "proc/kpageflags"
    saved = kpageflags.read_bytes()
    kpageflags.unlink()
    report = reconcile_at_start(store, offliner, T0 + 5)
    assert report.retry == () and report.unverifiable == (0x10,)
    assert machine.writes == []
    # nothing is known, so nothing is closed: the intent is still owed at the next start
    assert [p.decision.pfn for p in store.pending_intents()] == [0x10]
    kpageflags.write_bytes(saved)
    report = reconcile_at_start(store, offliner, T0 + 10)
    assert [o.decision.pfn for o in report.retry] == [0x10] and report.unverifiable == ()
    carry_out_owed(store, offliner, report.retry, T0 + 11)
    assert machine.writes == ["0x10000"]


def test_reoffline_disabled_by_config(tmp_path: Path) -> None:
    machine, offliner, store = first_boot(tmp_path)
    machine.reboot(BOOT2)
    report = reconcile_at_start(store, offliner, T0 + 1000, reoffline_enabled=False)
    assert report.rebooted and report.reoffline == ()
