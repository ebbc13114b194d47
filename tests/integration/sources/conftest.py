"""Fake kernel roots for the source tests: real directory trees, real FIFOs, real file formats."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from hwpoisond.core.model import Event

#: What `cat trace_clock` prints on a 6.x kernel (kernel/trace/trace.c trace_clocks[]).
TRACE_CLOCK_TEXT = "[local] global counter uptime perf mono mono_raw boot tai x86-tsc\n"
BTIME = 1_700_000_000

_TRACE_PREFIX = re.compile(
    r"^\s*\S.*?\[\d+\]\s+\S+\s+(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s?(?P<rest>.*)$"
)


class PrefixParser:
    """A stand-in line parser for I/O tests: any raw trace_pipe line becomes one event whose
    `time` is the trace timestamp and whose `msg` is the payload. It knows nothing of RAS
    formats; the point is to check what the source does around the parser."""

    def __init__(self) -> None:
        self.flushed = 0

    def malformed_lines(self) -> int:
        return 0

    def unparsed_candidates(self) -> int:
        return 0

    def first_unparsed(self) -> str | None:
        return None

    def feed(self, line: str, lineno: int) -> list[Event]:
        m = _TRACE_PREFIX.match(line)
        if m is None:
            return []
        return [
            Event(
                kind="memory_error",
                source="mc_event",
                severity=None,
                time=float(m["ts"]),
                line=lineno,
                msg=m["rest"],
            )
        ]

    def flush(self) -> list[Event]:
        self.flushed += 1
        return []

    def record_open(self) -> bool:
        return False


def trace_line(ts: float, payload: str, event: str = "mc_event", pid: int = 0) -> str:
    """A trace_pipe line as the kernel prints it (kernel/trace/trace_output.c: comm-pid, cpu,
    irq/preempt flags, timestamp, event name)."""
    return f"          <idle>-{pid}       [002] d.h1. {ts:12.6f}: {event}: {payload}\n"


def mc_event_payload(pfn: int, label: str = "CPU_SrcID#0_MC#0_Chan#0_DIMM#0") -> str:
    """An `mc_event` body in the kernel's print fmt (include/ras/ras_event.h, as printed by the
    6.x `events/ras/mc_event/format`), one corrected error at page `pfn`."""
    return (
        f"1 Corrected error: memory read error on {label} (mc:0 location:0:0:-1"
        f" address:0x{pfn << 12:016x} grain:32 syndrome:0x00000000 APEI location: node:0"
        " card:0 module:0 rank:1 bank:3 row:4660 column:128)"
    )


def write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_instance(
    tracing: Path, name: str, events: tuple[str, ...] = ("ras/mc_event", "mce/mce_record")
) -> Path:
    """What `mkdir instances/NAME` creates on a real tracefs, reduced to the files we touch."""
    inst = tracing / "instances" / name
    inst.mkdir(parents=True)
    os.mkfifo(inst / "trace_pipe")
    write_file(inst / "trace_clock", TRACE_CLOCK_TEXT)
    write_file(inst / "tracing_on", "1\n")
    for ev in events:
        write_file(inst / "events" / ev / "enable", "0\n")
    return inst


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write_file(
        root / "proc" / "stat",
        "cpu  100 0 100 1000 0 0 0 0 0 0\nintr 0\nctxt 10\n"
        f"btime {BTIME}\nprocesses 10\nprocs_running 1\nprocs_blocked 0\n",
    )
    (root / "sys" / "kernel" / "tracing" / "instances").mkdir(parents=True)
    return root
