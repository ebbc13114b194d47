"""Benchmark: `hwpoisond replay` throughput, parse + policy core, on 1,000,000 event lines.

Rule: measures, never asserts. Writes (or reuses, with --log) a deterministic trace where every
line is an event: ras:mc_event and mce:mce_record lines (formats as in bench/parse_throughput.py,
from the kernel's TP_printk), over a mix of recurring bad pages, rows and one-off pages. Five runs
each of: a bare `for line in file` loop, the in-process replay (Replay + replay_file, the code the
command runs) and the real command in a subprocess; prints medians (events/s, by wall-clock and
by CPU time: on a shared machine the CPU-time rate is the steadier number), the replay's ratio
to the bare loop and the load average before and after, as JSON.

    .venv/bin/python bench/replay_throughput.py [--lines N] [--log FILE] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hwpoisond import config
from hwpoisond.commands.replay import Replay, replay_file

MC_EVENT = (
    "  kworker/0:1-12  [002] .....  {ts:.6f}: mc_event: 1 Corrected error: memory read error on "
    "CPU_SrcID#0_MC#{mc}_Chan#1_DIMM#0 (mc:{mc} location:1:0:-1 address:0x{addr:x} grain:32 "
    "syndrome:0x0 err_code:0x0000:0x009f socket:0 imc:{mc} rank:0 bg:1 ba:{ba} row:0x{row:x} "
    "col:0x8)"
)
MCE_RECORD = (
    "          <idle>-0       [000] d.h1.  {ts:.6f}: mce_record: CPU: 0, MCGc/s: 1000c14/0, "
    "MC7: 9c0000000008009f, IPID: 0000000000000000, ADDR/MISC/SYND: "
    "{addr:016x}/0000000000000086/0000000000000000, RIP: 00:<0000000000000000>, TSC: 0, "
    "PROCESSOR: 0:806ec, TIME: 1700000000, SOCKET: 0, APIC: 0"
)


def write_log(path: Path, lines: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    recurring = [rng.randrange(0x1000, 0x4000000) for _ in range(2000)]
    with path.open("w") as f:
        ts = 0.0
        for _ in range(lines):
            ts += rng.random() / 10
            pfn = rng.choice(recurring) if rng.random() < 0.5 else rng.randrange(0x1000, 0x4000000)
            if rng.random() < 0.5:
                f.write(
                    MC_EVENT.format(ts=ts, mc=pfn % 2, addr=pfn << 12, ba=pfn % 16, row=pfn >> 7)
                    + "\n"
                )
            else:
                f.write(MCE_RECORD.format(ts=ts, addr=pfn << 12) + "\n")


def bare_loop(path: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of reading every line and doing nothing with it."""
    start, cpu_start = time.perf_counter(), time.process_time()
    n = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for _line in f:
            n += 1
    return time.perf_counter() - start, time.process_time() - cpu_start


def in_process(path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, events) of one replay of the file, as the command runs it."""
    params = config.policy_params(config.Config(), 256 * 1024**3)
    run = Replay(params, 0.0, config.Config().daemon.housekeeping_interval)
    start, cpu_start = time.perf_counter(), time.process_time()
    with path.open(encoding="utf-8", errors="replace") as f:
        replay_file(run, f)
    run.finish()
    return time.perf_counter() - start, time.process_time() - cpu_start, run.events


def command(path: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the real command, start-up included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hwpoisond", "replay", str(path), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--log", type=Path, default=None, help="reuse (or create) this trace file")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.log or Path(tmp) / "replay.trace"
        if not path.exists():
            write_log(path, args.lines)
        load_before = os.getloadavg()[0]
        bare, replay, cmd = [], [], []
        events = 0
        for _ in range(args.runs):
            bare.append(bare_loop(path))
            wall, cpu, events = in_process(path)
            replay.append((wall, cpu))
            cmd.append(command(path))
        load_after = os.getloadavg()[0]
    lines = args.lines

    def median(runs: Sequence[tuple[float, ...]], i: int) -> float:
        return statistics.median(r[i] for r in runs)

    print(
        json.dumps(
            {
                "lines": lines,
                "events": events,
                "runs": args.runs,
                "load_average_1m_before_after": [load_before, load_after],
                "bare_loop_lines_per_s": round(lines / median(bare, 0)),
                "bare_loop_lines_per_cpu_s": round(lines / median(bare, 1)),
                "replay_in_process_events_per_s": round(events / median(replay, 0)),
                "replay_in_process_events_per_cpu_s": round(events / median(replay, 1)),
                "replay_command_events_per_s": round(events / median(cmd, 0)),
                "replay_command_events_per_cpu_s": round(events / median(cmd, 1)),
                "replay_over_bare_loop_time_ratio": round(median(replay, 0) / median(bare, 0), 1),
                "replay_over_bare_loop_cpu_ratio": round(median(replay, 1) / median(bare, 1), 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
