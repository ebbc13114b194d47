"""JournaldSource against real journal files in a fake root.

The journal files are written by systemd-journal-remote from journal export format, so the real
`journal.Reader` (sd-journal) reads real files: matches, boots, cursors, inotify wake-ups. The
kernel lines are those of a real 6.1 capture (tests/e2e/captures/6.1.0-56-amd64/dmesg.txt)
without their dmesg timestamps, as journald stores them in MESSAGE.
"""

from __future__ import annotations

import selectors
import subprocess
import uuid
from pathlib import Path

import pytest

from hwpoisond.core.model import Event
from hwpoisond.kernelfs import KernelFS
from hwpoisond.sources import journald
from hwpoisond.sources.base import FileCursorStore
from hwpoisond.sources.journald import CURSOR_KEY, JournaldSource

from .conftest import write_file

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
MACHINE_ID = "0123456789abcdef0123456789abcdef"
BOOT = uuid.UUID("5d0c3f9a-6b1e-4c2f-8a7d-9e0b1c2d3e4f")
OLD_BOOT = uuid.UUID("11111111-2222-3333-4444-555555555555")
T0_USEC = 1_700_000_000_000_000

EDAC_LINE = (
    "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0"
    " (channel:0 slot:0 page:0x1234 offset:0x0 grain:32 syndrome:0x0)"
)
MCE_LINES = (
    "mce: [Hardware Error]: Machine check events logged",
    "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: 9c0000000008009f",
    "mce: [Hardware Error]: TSC bb7669849 ADDR 7654000 MISC 86 ",
    # The capture came from qemu's AMD-flavoured CPU (vendor 2), where bank 7 is not a memory
    # controller; with an Intel CPU (vendor 0, CPUID 806f8) the same record is a memory error.
    "mce: [Hardware Error]: PROCESSOR 0:806f8 TIME 1795736173 SOCKET 0 APIC 0 microcode 1",
)
MF_LINE = "Memory failure: 0x3d3fe: recovery action for free buddy page: Recovered"


class Journal:
    """Writes entries into <root>/var/log/journal/<machine-id>/ the way journald would store
    them; each `write()` is one systemd-journal-remote run appending to `name`."""

    def __init__(self, root: Path) -> None:
        if not JOURNAL_REMOTE.exists():
            pytest.skip(
                "systemd-journal-remote is not installed (Debian package systemd-journal-remote)"
            )
        self.dir = root / "var/log/journal" / MACHINE_ID
        self.dir.mkdir(parents=True)
        self.mono_usec = 10_000_000

    def write(
        self,
        messages: list[str],
        *,
        name: str = "system.journal",
        transport: str = "kernel",
        boot: uuid.UUID = BOOT,
        lag_usec: int = 0,
    ) -> None:
        """One entry per message, one second apart; `lag_usec` is how late journald stored them
        after the kernel printed them."""
        records = []
        for message in messages:
            self.mono_usec += 1_000_000
            fields = {
                "__REALTIME_TIMESTAMP": str(T0_USEC + self.mono_usec),
                "__MONOTONIC_TIMESTAMP": str(self.mono_usec),
                "_BOOT_ID": boot.hex,
                "_TRANSPORT": transport,
                "MESSAGE": message,
            }
            if transport == "kernel":
                fields["_SOURCE_MONOTONIC_TIMESTAMP"] = str(self.mono_usec - lag_usec)
            records.append("".join(f"{k}={v}\n" for k, v in fields.items()) + "\n")
        r = subprocess.run(
            [str(JOURNAL_REMOTE), "-o", str(self.dir / name), "-"],
            input="".join(records).encode(),
            capture_output=True,
            check=False,
        )
        assert r.returncode == 0, r.stderr.decode()

    def now_seconds(self) -> float:
        """Realtime of the last entry written."""
        return (T0_USEC + self.mono_usec) / 1e6


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_file(tmp_path / "proc/sys/kernel/random/boot_id", f"{BOOT}\n")
    return tmp_path


def readable(src: JournaldSource, timeout: float) -> bool:
    fd = src.fileno()
    assert fd is not None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def summary(events: list[Event]) -> list[tuple[str, int | None]]:
    return [(e.source, e.pfn) for e in events]


def test_backfill_reads_this_boots_kernel_messages_only(root: Path) -> None:
    j = Journal(root)
    j.write([EDAC_LINE], boot=OLD_BOOT)  # an earlier boot: not ours
    j.write([EDAC_LINE], transport="stdout")  # a program echoing kernel text: not the kernel
    j.write(
        [EDAC_LINE, "usb 1-1: new high-speed USB device", *MCE_LINES, MF_LINE], lag_usec=3_000_000
    )
    src = JournaldSource(KernelFS(root))
    st = src.open()
    try:
        assert st.available, st.reason
        assert "backfilling this boot" in st.reason
        events = src.read_events()
    finally:
        src.close()
    assert summary(events) == [
        ("kmsg_edac", 0x1234),
        ("kmsg_mce", 0x7654),
        ("kmsg_memory_failure", 0x3D3FE),
    ]
    # Times are when the kernel printed: the entry's realtime less journald's 3 s ingestion lag.
    # The EDAC line was the 3rd entry written (1 s apart), the mce record started on the 6th.
    base = T0_USEC / 1e6 + 10
    assert events[0].time == pytest.approx(base + 3 - 3)
    assert events[1].time == pytest.approx(base + 6 - 3)
    assert events[2].time == pytest.approx(base + 10 - 3)


def test_live_entries_wake_the_fd_and_are_read(root: Path) -> None:
    j = Journal(root)
    j.write(["Linux version 6.1.0"])
    src = JournaldSource(KernelFS(root))
    try:
        assert src.open().available
        assert src.read_events() == []
        assert not readable(src, 0.05)
        j.write([EDAC_LINE])
        assert readable(src, 2.0)
        assert summary(src.read_events()) == [("kmsg_edac", 0x1234)]
        j.write([MF_LINE], name="system@rotated.journal")  # journald rotated to a new file
        assert readable(src, 2.0)
        assert summary(src.read_events()) == [("kmsg_memory_failure", 0x3D3FE)]
    finally:
        src.close()


def test_restart_neither_loses_nor_repeats(root: Path, tmp_path: Path) -> None:
    j = Journal(root)
    store = FileCursorStore(tmp_path / "state" / "cursors.json")
    j.write([EDAC_LINE, *MCE_LINES])

    first = JournaldSource(KernelFS(root), store.get(CURSOR_KEY))
    assert first.open().available
    assert summary(first.read_events()) == [("kmsg_edac", 0x1234), ("kmsg_mce", 0x7654)]
    assert first.cursor is not None
    store.set(CURSOR_KEY, first.cursor)
    first.close()

    j.write([MF_LINE, EDAC_LINE.replace("0x1234", "0x5678")])  # while the daemon was down

    second = JournaldSource(KernelFS(root), store.get(CURSOR_KEY))
    st = second.open()
    assert "resuming after the saved cursor" in st.reason
    assert summary(second.read_events()) == [
        ("kmsg_memory_failure", 0x3D3FE),
        ("kmsg_edac", 0x5678),
    ]
    assert second.cursor is not None
    store.set(CURSOR_KEY, second.cursor)
    second.close()

    third = JournaldSource(KernelFS(root), store.get(CURSOR_KEY))
    assert third.open().available
    assert third.read_events() == []
    third.close()


def test_cursor_of_a_vacuumed_entry_resumes_at_the_next_one(root: Path) -> None:
    j = Journal(root)
    j.write([EDAC_LINE], name="system@old.journal")
    reader = JournaldSource(KernelFS(root))
    assert reader.open().available
    assert len(reader.read_events()) == 1
    saved = reader.cursor
    reader.close()
    j.write([MF_LINE], name="system.journal")
    (j.dir / "system@old.journal").unlink()  # journald vacuumed the old file

    src = JournaldSource(KernelFS(root), saved)
    st = src.open()
    try:
        assert "resuming at the next entry" in st.reason
        assert summary(src.read_events()) == [("kmsg_memory_failure", 0x3D3FE)]
    finally:
        src.close()


def test_cursor_from_an_earlier_boot_backfills_this_boot(root: Path) -> None:
    j = Journal(root)
    write_file(root / "proc/sys/kernel/random/boot_id", f"{OLD_BOOT}\n")
    j.write([EDAC_LINE], boot=OLD_BOOT)
    before = JournaldSource(KernelFS(root))
    assert before.open().available
    assert len(before.read_events()) == 1
    old_cursor = before.cursor
    before.close()

    write_file(root / "proc/sys/kernel/random/boot_id", f"{BOOT}\n")  # rebooted
    j.write([MF_LINE])
    after = JournaldSource(KernelFS(root), old_cursor)
    st = after.open()
    try:
        assert "earlier boot" in st.reason
        assert summary(after.read_events()) == [("kmsg_memory_failure", 0x3D3FE)]
    finally:
        after.close()


def test_no_journal_is_unavailable_then_available(root: Path) -> None:
    src = JournaldSource(KernelFS(root))
    st = src.open()
    assert not st.available
    assert "no systemd journal" in st.reason
    assert src.fileno() is None
    assert src.read_events() == []
    j = Journal(root)
    j.write([EDAC_LINE])
    st = src.open()
    try:
        assert st.available, st.reason
        assert summary(src.read_events()) == [("kmsg_edac", 0x1234)]
    finally:
        src.close()


def test_unreadable_boot_id_is_unavailable(root: Path) -> None:
    Journal(root).write([EDAC_LINE])
    (root / "proc/sys/kernel/random/boot_id").unlink()
    st = JournaldSource(KernelFS(root)).open()
    assert not st.available
    assert "boot's id" in st.reason


def test_undecodable_message_does_not_stop_the_stream(root: Path) -> None:
    j = Journal(root)
    j.write([EDAC_LINE])
    # Binary MESSAGE: export format's length-prefixed field form.
    blob = b"\xff\xfe EDAC MC0: garbage \x00\x01"
    export = (
        (
            f"__REALTIME_TIMESTAMP={T0_USEC + 99_000_000}\n__MONOTONIC_TIMESTAMP=99000000\n"
            f"_BOOT_ID={BOOT.hex}\n_TRANSPORT=kernel\n"
        ).encode()
        + b"MESSAGE\n"
        + len(blob).to_bytes(8, "little")
        + blob
        + b"\n\n"
    )
    r = subprocess.run(
        [str(JOURNAL_REMOTE), "-o", str(j.dir / "system.journal"), "-"],
        input=export,
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr.decode()
    j.mono_usec = 100_000_000
    j.write([MF_LINE])
    src = JournaldSource(KernelFS(root))
    try:
        assert src.open().available
        assert summary(src.read_events()) == [
            ("kmsg_edac", 0x1234),
            ("kmsg_memory_failure", 0x3D3FE),
        ]
        assert src.entries_read == 3
    finally:
        src.close()


def test_live_machine_journal_opens_or_says_why() -> None:
    src = JournaldSource(KernelFS("/"))
    st = src.open()
    try:
        has_dirs = Path("/var/log/journal").is_dir() or Path("/run/log/journal").is_dir()
        assert st.available == has_dirs, st.reason
        if st.available:
            assert src.fileno() is not None
            assert all(e.time is not None for e in src.read_events())
    finally:
        src.close()


def test_file_cursor_store_survives_damage(tmp_path: Path) -> None:
    store = FileCursorStore(tmp_path / "c.json")
    assert store.get(CURSOR_KEY) is None
    store.set(CURSOR_KEY, "s=abc;i=1")
    store.set("other", "x")
    assert FileCursorStore(tmp_path / "c.json").get(CURSOR_KEY) == "s=abc;i=1"
    assert (tmp_path / "c.json").stat().st_mode & 0o777 == 0o600
    (tmp_path / "c.json").write_text("{not json")
    assert store.get(CURSOR_KEY) is None
    store.set(CURSOR_KEY, "s=def")
    assert store.get(CURSOR_KEY) == "s=def"
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_backfill_off_reads_only_new_messages(root: Path) -> None:
    j = Journal(root)
    j.write([EDAC_LINE, MF_LINE])  # history from before the daemon's first start
    src = JournaldSource(KernelFS(root), backfill=False)
    st = src.open()
    try:
        assert st.available, st.reason
        assert "reading new messages only" in st.reason
        assert src.read_events() == []
        j.write([MF_LINE.replace("0x3d3fe", "0x3d3ff")], name="system@2.journal")
        assert readable(src, 5.0)
        events = src.read_events()
    finally:
        src.close()
    assert summary(events) == [("kmsg_memory_failure", 0x3D3FF)]


def test_backfill_is_read_in_bounded_batches_without_splitting_a_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 19: 300k entries of backfill were one read, one transaction, 25 s before READY.
    # A bound of 10 entries here; the machine-check record (4 entries) straddles it.
    monkeypatch.setattr(journald, "MAX_ENTRIES_PER_READ", 10)
    filler = [f"usb 1-1: new high-speed USB device number {n}" for n in range(30)]
    j = Journal(root)
    j.write([*filler[:8], *MCE_LINES, EDAC_LINE, *filler[8:30], MF_LINE])
    everything = JournaldSource(KernelFS(root))
    everything.open()
    monkeypatch.setattr(journald, "MAX_ENTRIES_PER_READ", 10_000)
    unbounded = everything.read_events()
    everything.close()
    monkeypatch.setattr(journald, "MAX_ENTRIES_PER_READ", 10)

    src = JournaldSource(KernelFS(root))
    src.open()
    batches: list[list[Event]] = []
    cursors: list[str | None] = []
    try:
        while True:
            batches.append(src.read_events())
            cursors.append(src.cursor)
            if not src.more_pending:
                break
            assert len(batches) < 20, "never caught up"
    finally:
        src.close()
    assert len(batches) >= 3  # 35 entries, 10 a read (one read runs on to close the record)
    assert summary([e for b in batches for e in b]) == summary(unbounded)
    assert [e.time for b in batches for e in b] == [e.time for e in unbounded]
    # The record came out whole, in the batch that read its first line.
    mce = [i for i, b in enumerate(batches) for e in b if e.source == "kmsg_mce"]
    assert len(mce) == 1
    assert len(set(cursors)) == len(cursors)  # every batch moved the cursor
