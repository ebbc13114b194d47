"""TracefsSource against fake roots (trace_pipe as a real FIFO) and against a real tracefs mount."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hwpoisond.core.model import Event
from hwpoisond.kernelfs import KernelFS
from hwpoisond.sources.tracefs import TracefsSource

from .conftest import BTIME, PrefixParser, make_instance, mc_event_payload, trace_line

TRACING = Path("sys/kernel/tracing")


def source(root: Path, instance_name: str = "hwpoisond") -> TracefsSource:
    """A source with the real line parser."""
    return TracefsSource(KernelFS(root), instance_name=instance_name)


def pfns(events: list[Event]) -> list[int | None]:
    return [e.pfn for e in events]


def readable(src: TracefsSource, timeout: float) -> bool:
    fd = src.fileno()
    assert fd is not None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(timeout))


def drain_until(src: TracefsSource, n: int, timeout: float = 5.0) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        if readable(src, 0.2):
            got.extend(src.read_events())
    return got


@pytest.fixture
def opened(fake_root: Path) -> Iterator[tuple[TracefsSource, Path]]:
    inst = make_instance(fake_root / TRACING, "hwpoisond")
    src = source(fake_root)
    st = src.open()
    assert st.available, st.reason
    yield src, inst
    src.close()


def test_open_enables_only_existing_events_and_selects_boot_clock(fake_root: Path) -> None:
    inst = make_instance(fake_root / TRACING, "hwpoisond", events=("ras/mc_event",))
    src = source(fake_root)
    st = src.open()
    try:
        assert st.available
        # KernelFS writes like `echo` into sysfs (no truncation): a fake file shows the write at
        # its start.
        assert (inst / "events/ras/mc_event/enable").read_text().startswith("1")
        assert not (inst / "events/mce").exists()
        assert (inst / "trace_clock").read_text().startswith("boot")
        assert src.enabled_events == ("ras:mc_event",)
        assert "mce:mce_record" in src.missing_events
        assert "not in this kernel: mce:mce_record" in st.reason
        assert "adopted instance hwpoisond" in st.reason
    finally:
        src.close()


def test_lines_become_events_with_wall_clock_time(opened: tuple[TracefsSource, Path]) -> None:
    src, inst = opened
    assert not readable(src, 0)
    with open(inst / "trace_pipe", "w") as w:
        w.write(trace_line(120.5, mc_event_payload(0x1234)))
        w.write("some unrelated kernel text without an event\n")
        w.write(trace_line(121.25, mc_event_payload(0x5678, label="DIMM_B1")))
    events = drain_until(src, 2)
    assert pfns(events) == [0x1234, 0x5678]
    assert [e.source for e in events] == ["mc_event", "mc_event"]
    assert events[1].label == "DIMM_B1"
    # Fake root: wall clock = /proc/stat btime + trace timestamp.
    assert [e.time for e in events] == [BTIME + 120.5, BTIME + 121.25]
    assert [e.line for e in events] == [1, 3]


def test_partial_lines_wait_for_their_newline(opened: tuple[TracefsSource, Path]) -> None:
    src, inst = opened
    line = trace_line(5.0, mc_event_payload(42))
    fd = os.open(inst / "trace_pipe", os.O_WRONLY)
    try:
        os.write(fd, line[:30].encode())
        assert readable(src, 1.0)
        assert src.read_events() == []
        os.write(fd, line[30:].encode())
        events = drain_until(src, 1)
    finally:
        os.close(fd)
    assert pfns(events) == [42]


def test_burst_larger_than_the_pipe_arrives_complete_and_in_order(
    opened: tuple[TracefsSource, Path],
) -> None:
    src, inst = opened
    n = 20_000  # ~1.6 MB: many times a FIFO's 64 KiB, so writer and reader interleave

    def writer() -> None:
        with open(inst / "trace_pipe", "w") as w:
            for i in range(n):
                w.write(trace_line(1000 + i / 1000, mc_event_payload(i + 1)))

    t = threading.Thread(target=writer)
    t.start()
    events = drain_until(src, n, timeout=15)
    t.join()
    assert len(events) == n
    assert pfns(events) == list(range(1, n + 1))


def test_writer_going_away_neither_spins_nor_ends_the_source(
    opened: tuple[TracefsSource, Path],
) -> None:
    src, inst = opened
    with open(inst / "trace_pipe", "w") as w:
        w.write(trace_line(1.0, mc_event_payload(1)))
    assert pfns(drain_until(src, 1)) == [1]
    # The writer closed: a bare FIFO would now be readable forever (EOF). Ours is not.
    assert not readable(src, 0.1)
    assert src.status().available
    with open(inst / "trace_pipe", "w") as w:
        w.write(trace_line(2.0, mc_event_payload(2)))
    assert pfns(drain_until(src, 1)) == [2]


def test_overlong_line_is_dropped_and_stream_resynchronises(
    opened: tuple[TracefsSource, Path],
) -> None:
    src, inst = opened

    def writer() -> None:
        with open(inst / "trace_pipe", "w") as w:
            w.write("x" * 200_000 + "\n")
            w.write(trace_line(3.0, mc_event_payload(3)))

    t = threading.Thread(target=writer)
    t.start()
    events = drain_until(src, 1)
    t.join()
    assert pfns(events) == [3]
    assert src.lines_too_long == 1


def test_second_daemon_takes_its_own_instance_and_steals_nothing(fake_root: Path) -> None:
    first_inst = make_instance(fake_root / TRACING, "hwpoisond")
    second_inst = make_instance(fake_root / TRACING, "hwpoisond-1")
    first, second = source(fake_root), source(fake_root)
    try:
        assert first.open().available
        st = second.open()
        assert st.available
        assert "instance hwpoisond-1" in st.reason
        # The kernel feeds every instance; here the test plays the kernel for each buffer.
        with open(first_inst / "trace_pipe", "w") as w:
            w.write(trace_line(1.0, mc_event_payload(1)))
        with open(second_inst / "trace_pipe", "w") as w:
            w.write(trace_line(1.0, mc_event_payload(2)))
        assert pfns(drain_until(first, 1)) == [1]
        assert pfns(drain_until(second, 1)) == [2]
        assert first.read_events() == []
    finally:
        first.close()
        second.close()


def test_all_instance_names_held_is_a_clear_refusal(fake_root: Path) -> None:
    holders = []
    for name in ["hwpoisond"] + [f"hwpoisond-{i}" for i in range(1, 8)]:
        make_instance(fake_root / TRACING, name)
        holders.append(source(fake_root))
    try:
        for h in holders:
            assert h.open().available
        late = source(fake_root)
        st = late.open()
        assert not st.available
        assert "all held by other running readers" in st.reason
        assert late.fileno() is None
    finally:
        for h in holders:
            h.close()


def test_instance_of_a_dead_daemon_is_adopted(fake_root: Path) -> None:
    make_instance(fake_root / TRACING, "hwpoisond")
    dead = source(fake_root)
    assert dead.open().available
    dead.close()  # the fake root's instance directory cannot be removed, like a crashed run's
    assert (fake_root / TRACING / "instances/hwpoisond").is_dir()
    again = source(fake_root)
    try:
        st = again.open()
        assert st.available
        assert "adopted instance hwpoisond;" in st.reason
    finally:
        again.close()


def test_close_disables_events_when_the_instance_cannot_be_removed(
    opened: tuple[TracefsSource, Path],
) -> None:
    src, inst = opened
    assert (inst / "events/ras/mc_event/enable").read_text().startswith("1")
    src.close()
    assert (inst / "events/ras/mc_event/enable").read_text().startswith("0")
    assert src.fileno() is None
    assert src.status().reason == "closed"


def test_created_instance_without_trace_pipe_is_unavailable_and_removed(fake_root: Path) -> None:
    # mkdir in a plain directory creates nothing inside: not a tracefs.
    src = source(fake_root)
    st = src.open()
    assert not st.available
    assert "has no trace_pipe" in st.reason
    assert list((fake_root / TRACING / "instances").iterdir()) == []


def test_missing_tracefs_then_appearing(fake_root: Path) -> None:
    tracing = fake_root / TRACING
    make_instance(tracing, "hwpoisond")
    hidden = fake_root / "hidden-tracing"
    tracing.rename(hidden)
    src = source(fake_root)
    st = src.open()
    assert not st.available
    assert "tracefs not found" in st.reason
    assert src.fileno() is None
    assert src.read_events() == []
    hidden.rename(tracing)
    st = src.open()
    try:
        assert st.available, st.reason
        assert src.fileno() is not None
    finally:
        src.close()


def test_debugfs_location_is_used_when_tracing_is_absent(fake_root: Path) -> None:
    shutil.rmtree(fake_root / TRACING)
    old = fake_root / "sys/kernel/debug/tracing"
    make_instance(old, "hwpoisond")
    src = source(fake_root)
    try:
        assert src.open().available
        with open(old / "instances/hwpoisond/trace_pipe", "w") as w:
            w.write(trace_line(7.0, mc_event_payload(7)))
        assert pfns(drain_until(src, 1)) == [7]
    finally:
        src.close()


def test_kernel_without_ras_events_is_unavailable(fake_root: Path) -> None:
    make_instance(fake_root / TRACING, "hwpoisond", events=())
    src = source(fake_root)
    st = src.open()
    assert not st.available
    assert "none of the RAS tracepoints" in st.reason


def test_trace_pipe_vanishing_marks_the_source_unavailable(fake_root: Path) -> None:
    make_instance(fake_root / TRACING, "hwpoisond")
    src = source(fake_root)
    assert src.open().available
    # A FIFO without our keep-alive writer ends the way a vanished trace_pipe would.
    assert src._keepalive_fd is not None
    os.close(src._keepalive_fd)
    src._keepalive_fd = None
    assert readable(src, 1.0)
    assert src.read_events() == []
    st = src.status()
    assert not st.available
    assert "end of file" in st.reason
    assert src.fileno() is None
    assert src.open().available  # and it comes back on the next open()
    src.close()


# -- real tracefs ---------------------------------------------------------------------------------


@pytest.fixture
def real_tracefs(tmp_path: Path) -> Iterator[Path]:
    """A real tracefs mounted inside a fake root; instances are kernel-global, so tests use a
    unique instance name."""
    root = tmp_path / "real"
    mnt = root / TRACING
    mnt.mkdir(parents=True)
    (root / "proc").mkdir()
    shutil.copy("/proc/stat", root / "proc/stat")
    r = subprocess.run(
        ["mount", "-t", "tracefs", "nodev", str(mnt)], check=False, capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount tracefs here: {r.stderr.decode().strip()}")
    try:
        yield root
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_real_tracefs_instance_lifecycle(real_tracefs: Path) -> None:
    name = f"hwpoisond-test-{os.getpid()}"
    inst = real_tracefs / TRACING / "instances" / name
    # trace_marker lines are not RAS events: the stand-in parser turns any trace line into one.
    src = TracefsSource(KernelFS(real_tracefs), parser_factory=PrefixParser, instance_name=name)
    st = src.open()
    if not st.available and "none of the RAS tracepoints" in st.reason:
        pytest.skip("kernel has no RAS tracepoints")
    try:
        assert st.available, st.reason
        assert f"created instance {name};" in st.reason
        assert "[boot]" in (inst / "trace_clock").read_text()
        enabled = [ev for ev in src.enabled_events]
        assert enabled
        sys_, ev = enabled[0].split(":")
        assert (inst / "events" / sys_ / ev / "enable").read_text().strip() == "1"
        # The instance's global event switch is untouched outside our instance.
        top = (real_tracefs / TRACING / "events" / sys_ / ev / "enable").read_text().strip()
        assert top == "0"

        # A second reader of the same name gets its own instance; the kernel refuses to remove
        # ours while it is read.
        other = source(real_tracefs, instance_name=name)
        try:
            assert "instance " + name + "-1;" in other.open().reason
            with pytest.raises(OSError):
                os.rmdir(inst)
        finally:
            other.close()
        assert not (inst.parent / f"{name}-1").exists()

        # trace_marker writes a line into this instance's buffer only: real trace_pipe readiness,
        # non-blocking drain and timestamp conversion (clock boot, live offset is not used for a
        # fake root: btime from the copied /proc/stat).
        assert not readable(src, 0)
        (inst / "trace_marker").write_text("hello from the test")
        events = drain_until(src, 1)
        assert [e.msg for e in events] == ["hello from the test"]
        assert events[0].time is not None
        assert abs(events[0].time - time.time()) < 5.0
    finally:
        src.close()
    assert not inst.exists()


def test_clock_already_boot_is_not_rewritten(fake_root: Path) -> None:
    """Writing trace_clock resets the instance's buffer (kernel/trace/trace.c tracing_set_clock),
    which would throw away what an adopted instance buffered while no daemon was reading."""
    inst = make_instance(fake_root / TRACING, "hwpoisond")
    selected_boot = "local global counter uptime perf mono mono_raw [boot] tai x86-tsc\n"
    (inst / "trace_clock").write_text(selected_boot)
    src = source(fake_root)
    try:
        assert "clock boot" in src.open().reason
        assert (inst / "trace_clock").read_text() == selected_boot
    finally:
        src.close()
