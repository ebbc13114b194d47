"""Benchmark: `hwpoisond parse` throughput on a 1,000,000-line mixed kernel log.

Rule: measures, never asserts. Writes (or reuses, with --log) a deterministic log where most
lines are irrelevant kernel chatter and a fraction (default 2%) are memory-error lines in every
supported format, then times the real command in a subprocess (stdout to /dev/null; wall and CPU
time) and the in-process `LineParser.feed` loop (line by line, the path sources use), five runs
each, and prints the medians as JSON.

    .venv/bin/python bench/parse_throughput.py [--lines N] [--log FILE] [--runs 5]
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
from pathlib import Path

_IRRELEVANT = (
    "[{ts:12.6f}] usb 1-1: new high-speed USB device number {n} using xhci_hcd",
    "[{ts:12.6f}] e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex",
    '[{ts:12.6f}] audit: type=1400 audit({ts:.3f}:{n}): apparmor="STATUS" operation="x"',
    "Jan 02 03:04:05 host kernel: EXT4-fs (sda1): mounted filesystem with ordered data mode",
    "2024-01-02T03:04:05+0000 host kernel: perf: interrupt took too long ({n} > 2500)",
    "          <idle>-0       [001] d.h1.  {ts:.6f}: sched_switch: prev_comm=x prev_pid={n}",
    "[{ts:12.6f}] systemd[1]: Started Session {n} of user root.",
)
_RELEVANT = (
    "          <idle>-0       [000] d.h1.  {ts:.6f}: mce_record: CPU: 0, MCGc/s: 1000c14/0, "
    "MC7: 9c0000000008009f, IPID: 0000000000000000, ADDR/MISC/SYND: "
    "{addr:016x}/0000000000000086/0000000000000000, RIP: 00:<0000000000000000>, TSC: 0, "
    "PROCESSOR: 0:806ec, TIME: 1700000000, SOCKET: 0, APIC: 0",
    "  kworker/0:1-12  [002] .....  {ts:.6f}: mc_event: 1 Corrected error: memory read error on "
    "CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (mc:0 location:1:0:-1 address:0x{addr:x} grain:32 "
    "syndrome:0x0 err_code:0x0000:0x009f socket:0 imc:0 rank:0 bg:1 ba:2 row:0x1f col:0x8)",
    "[{ts:12.6f}] EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (channel:0 "
    "slot:0 page:0x{pfn:x} offset:0x0 grain:32 syndrome:0x0 - err_code:0x0000:0x009f socket:0 "
    "imc:0 rank:0 bg:0 ba:1 row:0x2 col:0x3)",
    "[{ts:12.6f}] Memory failure: 0x{pfn:x}: recovery action for free buddy page: Recovered",
    "[{ts:12.6f}] RAS: Soft-offlining pfn: 0x{pfn:x}",
)


def write_log(path: Path, lines: int, relevant_fraction: float, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        ts = 0.0
        for n in range(lines):
            ts += rng.random() / 100
            if rng.random() < relevant_fraction:
                pfn = rng.randrange(0x1000, 0x400000)
                template = rng.choice(_RELEVANT)
                f.write(template.format(ts=ts, addr=pfn << 12, pfn=pfn) + "\n")
            else:
                f.write(rng.choice(_IRRELEVANT).format(ts=ts, n=n) + "\n")


def time_cli(log: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `hwpoisond parse` run: on a shared machine the CPU
    time is the steadier number."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "hwpoisond", "parse", str(log)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def time_feed(lines: list[str]) -> float:
    from hwpoisond.parse import LineParser

    parser = LineParser()
    feed = parser.feed
    start = time.perf_counter()
    for i, line in enumerate(lines, 1):
        feed(line, i)
    parser.flush()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--log", type=Path, default=None, help="use this log instead of generating")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--relevant-fraction", type=float, default=0.02)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = args.log or Path(tmp) / "mixed.log"
        if args.log is None:
            write_log(log, args.lines, args.relevant_fraction)
        text_lines = log.read_text(errors="replace").splitlines()
        n = len(text_lines)
        load_before = os.getloadavg()[0]
        runs = [time_cli(log) for _ in range(args.runs)]
        feed = sorted(time_feed(text_lines) for _ in range(args.runs))
        load_after = os.getloadavg()[0]
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    result = {
        "lines": n,
        "runs": args.runs,
        "relevant_fraction": args.relevant_fraction,
        "load_average_1m_before_after": [load_before, load_after],
        "cli_wall_seconds_median": round(wall, 3),
        "cli_lines_per_second_median": round(n / wall),
        "cli_cpu_seconds_median": round(cpu, 3),
        "cli_lines_per_cpu_second_median": round(n / cpu),
        "feed_seconds_median": round(statistics.median(feed), 3),
        "feed_lines_per_second_median": round(n / statistics.median(feed)),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
