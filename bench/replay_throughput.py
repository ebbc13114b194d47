"""Benchmark: `hwpoisond replay` throughput, parse + policy core, on 1,000,000 event lines.

Rule: measures, never asserts. Writes (or reuses, with --log) a deterministic trace where every
line is an event: ras:mc_event and mce:mce_record lines (formats as in bench/parse_throughput.py,
from the kernel's TP_printk), over a mix of recurring bad pages, rows and one-off pages. Five runs
each of: a bare `for line in file` loop, the in-process replay (Replay + replay_file, the code the
command runs) and the real command in a subprocess; prints medians (events/s) and the replay's
ratio to the bare loop as JSON.

    .venv/bin/python bench/replay_throughput.py [--lines N] [--log FILE] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
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


def bare_loop(path: Path) -> float:
    start = time.perf_counter()
    n = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for _line in f:
            n += 1
    return time.perf_counter() - start


def in_process(path: Path) -> tuple[float, int]:
    params = config.policy_params(config.Config(), 256 * 1024**3)
    run = Replay(params, 0.0, config.Config().daemon.housekeeping_interval)
    start = time.perf_counter()
    with path.open(encoding="utf-8", errors="replace") as f:
        replay_file(run, f)
    run.finish()
    return time.perf_counter() - start, run.events


def command(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hwpoisond", "replay", str(path), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


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
        bare, replay, cmd = [], [], []
        events = 0
        for _ in range(args.runs):
            bare.append(bare_loop(path))
            seconds, events = in_process(path)
            replay.append(seconds)
            cmd.append(command(path))
        b, r, c = (statistics.median(x) for x in (bare, replay, cmd))
        print(
            json.dumps(
                {
                    "lines": args.lines,
                    "events": events,
                    "runs": args.runs,
                    "bare_loop_lines_per_s": round(args.lines / b),
                    "replay_in_process_events_per_s": round(events / r),
                    "replay_command_events_per_s": round(events / c),
                    "replay_over_bare_loop_time_ratio": round(r / b, 1),
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
