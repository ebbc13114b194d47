"""Start-up reconciliation: pending intents, reboot persistence, changed memory.

The fake machine's reboot() clears every HWPOISON bit and HardwareCorrupted and changes boot_id,
as a real reboot does (poison lives in kernel RAM only).
"""

from __future__ import annotations

from pathlib import Path

from hwpoisond.actions.offliner import Offliner
from hwpoisond.actions.reconcile import carry_out, reconcile_at_start
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
    assert [d.pfn for d in report.reoffline] == [0x300, 0x100, 0x200]
    assert all(
        d.action == "soft" and "re-offline after reboot" in d.reason for d in report.reoffline
    )
    assert "2 CEs in 24h" in report.reoffline[0].reason
    reports = carry_out(
        store, offliner, report.reoffline, T0 + 1001, origin="reboot", boot_id=BOOT2
    )
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
    assert [d.pfn for d in report.retry] == [0x11]
    results = {r["id"]: r["result"] for r in store.rows("SELECT id, result FROM actions")}
    assert results == {done: "offlined", lost: "interrupted"}
    carry_out(store, offliner, report.retry, T0 + 6, origin="retry")
    assert machine.writes == ["0x10000", "0x11000"]  # each page written exactly once
    assert store.pending_intents() == []


def test_unreadable_kpageflags_retries_nothing(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path / "root")
    offliner = Offliner(FakeKernelFS(machine))
    store = Store.open(tmp_path / "state")
    store.record_intent(offline(0x10), T0)
    (machine.root / "proc/kpageflags").unlink()
    report = reconcile_at_start(store, offliner, T0 + 5)
    assert report.retry == () and report.unverifiable == (0x10,)
    assert machine.writes == []


def test_reoffline_disabled_by_config(tmp_path: Path) -> None:
    machine, offliner, store = first_boot(tmp_path)
    machine.reboot(BOOT2)
    report = reconcile_at_start(store, offliner, T0 + 1000, reoffline_enabled=False)
    assert report.rebooted and report.reoffline == ()
