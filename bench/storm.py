"""Benchmark: a corrected-error storm into the running daemon (distinct pages at a fixed rate).

Rule: measures a real `hwpoisond run` subprocess (default config, metrics on) against a
`SimMachine` fake root; never asserts, prints one JSON object. The bench plays the kernel: it
writes real `ras:mc_event` lines (SimMachine.mc_event_line, timestamps on the fake root's boot
clock) into the adopted instance's trace_pipe FIFO at `--rate` lines per second, every line a
distinct page, in 10 ms batches. A blocking write into a full FIFO is the daemon pushing back.

Measured, sampled every 0.5 s by a second thread:
- backlog = lines written − events committed to the state database (max(id) of `events` through a
  read-only connection) — the daemon's lag; its slope over the second half of the storm says
  whether it grows (keeps up: slope ≈ 0 and the lag stays within a fraction of a second);
- writer lag = lines the schedule called for − lines written: non-zero when the FIFO stayed full,
  i.e. the daemon did not read fast enough;
- drain: seconds after the last write until every event is committed;
- peak RSS (VmHWM of /proc/PID/status) and the daemon's CPU (schedstat of all its threads).
Targets (issue 8): keeps up at 10,000 events/s with 1,000,000 distinct pages; peak RSS ≤ 80 MB.

    .venv/bin/python -m bench storm                                   # 5 runs x 300,000 events
    .venv/bin/python -m bench.storm --events 1000000 --runs 5         # the issue's full storm
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.daemon_lifecycle import (
    BenchDaemon,
    build_root,
    cpu_ns,
    loadavg,
    machine,
    start_py_spy,
    status_kb,
    stop_py_spy,
    write_config,
)
from hwpoisond.sim.kernel import COLUMNS, INSTANCE, PAGES_PER_ROW, DramAddress, SimMachine

BATCH_SECONDS = 0.01
SAMPLE_SECONDS = 0.5
#: An odd multiplier is a bijection on pfns modulo the (power-of-two) page count, so the first
#: N pfns are N distinct pages spread over every DIMM, bank and row of the simulated machine.
PFN_STRIDE = 7919
TS_PLACEHOLDER = f"{0.0:12.6f}: mc_event:".encode()


def storm_pfns(machine_: SimMachine, events: int) -> list[int]:
    if events > machine_.max_pfn:
        raise ValueError(f"only {machine_.max_pfn} distinct pages on the simulated machine")
    return [(k * PFN_STRIDE + 1) % machine_.max_pfn for k in range(events)]


def write_storm_file(machine_: SimMachine, pfns: list[int], path: Path, batch: int) -> list[int]:
    """The storm's lines with a placeholder timestamp, one file (formatting a line costs ~20 µs,
    too much to do while timing); returns each batch's byte length."""
    columns_per_page = COLUMNS // PAGES_PER_ROW
    lengths = []
    with open(path, "wb") as f:
        for start in range(0, len(pfns), batch):
            chunk = []
            for pfn in pfns[start : start + batch]:
                dimm, bank, row, page_in_row = machine_.dram_of(pfn)
                addr = DramAddress(dimm, bank, row, page_in_row * columns_per_page)
                chunk.append(machine_.mc_event_line(0.0, addr) + "\n")
            data = "".join(chunk).encode()
            f.write(data)
            lengths.append(len(data))
    return lengths


@dataclass
class Sample:
    t: float  # seconds since the first write
    written: int
    recorded: int
    scheduled: int
    rss_kb: int


@dataclass
class StormRun:
    events: int
    rate_per_second: float
    ready_seconds: float
    write_seconds: float
    achieved_rate_per_second: float
    drain_seconds: float | None
    recorded: int
    max_backlog: int
    max_writer_lag: int
    backlog_slope_per_second: float
    peak_rss_mb: float
    rss_at_ready_mb: float
    daemon_cpu_percent: float
    daemon_cpu_us_per_event: float
    loadavg_1m: tuple[float, float]
    samples: list[Sample] = field(repr=False)


class Sampler(threading.Thread):
    def __init__(self, daemon: BenchDaemon, rate: float, events: int) -> None:
        super().__init__(daemon=True)
        self.d = daemon
        self.rate = rate
        self.events = events
        self.written = 0
        self.start_mono = 0.0
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()

    def sample(self) -> Sample:
        t = time.monotonic() - self.start_mono
        s = Sample(
            t=t,
            written=self.written,
            recorded=self.d.events_recorded(),
            scheduled=min(self.events, int(t * self.rate)),
            rss_kb=status_kb(self.d.pid, "VmRSS"),
        )
        self.samples.append(s)
        return s

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_SECONDS):
            self.sample()


def _one_run(
    work: Path,
    lines_path: Path,
    lengths: list[int],
    events: int,
    rate: float,
    batch: int,
    profile: Path | None,
) -> StormRun:
    m = build_root(work / "root", journal=False)
    config = write_config(work / "hwpoisond.toml")
    load_start = loadavg()[0]
    with BenchDaemon(work, work / "root", work / "state", config) as d:
        ready = d.wait_ready()
        rss_ready = status_kb(d.pid, "VmRSS")
        # Blocking: a full FIFO holds the writer back as a full trace buffer would lose lines.
        fd = os.open(m.root / INSTANCE / "trace_pipe", os.O_WRONLY | os.O_CLOEXEC)
        sampler = Sampler(d, rate, events)
        spy = None if profile is None else start_py_spy(d.pid, profile)
        cpu0 = cpu_ns(d.pid)
        try:
            with open(lines_path, "rb") as lines:
                start = sampler.start_mono = time.monotonic()
                sampler.start()
                written = 0
                for n, length in enumerate(lengths):
                    delay = start + n * BATCH_SECONDS - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    ts = f"{time.time() - m.boot_time:12.6f}: mc_event:".encode()
                    view = memoryview(lines.read(length).replace(TS_PLACEHOLDER, ts))
                    while view:
                        view = view[os.write(fd, view) :]
                    written += min(batch, events - written)
                    sampler.written = written
                write_seconds = time.monotonic() - start
            drain: float | None = None
            deadline = time.monotonic() + 120.0
            while time.monotonic() < deadline:
                if d.events_recorded() >= written:
                    drain = time.monotonic() - start - write_seconds
                    break
                time.sleep(0.05)
        finally:
            sampler.stop_event.set()
            sampler.join()
            os.close(fd)
            if spy is not None:
                stop_py_spy(spy)
        wall = time.monotonic() - start
        cpu_seconds = (cpu_ns(d.pid) - cpu0) / 1e9
        peak_kb = status_kb(d.pid, "VmHWM")
        recorded = d.events_recorded()
        load_end = loadavg()[0]
        d.stop()
    samples = [s for s in sampler.samples if s.t <= write_seconds]
    second_half = [s for s in samples if s.t >= write_seconds / 2]
    slope = 0.0
    if len(second_half) >= 2:
        slope = statistics.linear_regression(
            [s.t for s in second_half], [float(s.written - s.recorded) for s in second_half]
        ).slope
    return StormRun(
        events=events,
        rate_per_second=rate,
        ready_seconds=ready,
        write_seconds=write_seconds,
        achieved_rate_per_second=events / write_seconds,
        drain_seconds=drain,
        recorded=recorded,
        max_backlog=max((s.written - s.recorded for s in samples), default=0),
        max_writer_lag=max((s.scheduled - s.written for s in samples), default=0),
        backlog_slope_per_second=slope,
        peak_rss_mb=peak_kb / 1024,
        rss_at_ready_mb=rss_ready / 1024,
        daemon_cpu_percent=cpu_seconds / wall * 100.0,
        daemon_cpu_us_per_event=cpu_seconds / events * 1e6,
        loadavg_1m=(load_start, load_end),
        samples=samples,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000, help="distinct pages, one line each")
    parser.add_argument("--rate", type=float, default=10_000.0, help="lines per second")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", action="store_true", help="print every run's samples")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record the first run's daemon with py-spy (pip install py-spy) into this file,"
        " as collapsed stacks",
    )
    args = parser.parse_args(argv)
    batch = max(1, round(args.rate * BATCH_SECONDS))
    runs: list[StormRun] = []
    with tempfile.TemporaryDirectory(prefix="hwpoisond-storm-") as tmp:
        work = Path(tmp)
        sim = SimMachine(work / "unbuilt", boot_time=0)  # the address map only
        lines_path = work / "storm.lines"
        t0 = time.monotonic()
        lengths = write_storm_file(sim, storm_pfns(sim, args.events), lines_path, batch)
        print(f"generated {args.events} lines in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        for i in range(args.runs):
            run_dir = work / f"run{i}"
            run_dir.mkdir()
            profile = args.profile if i == 0 else None
            run = _one_run(run_dir, lines_path, lengths, args.events, args.rate, batch, profile)
            summary = {k: v for k, v in asdict(run).items() if k != "samples"}
            print(f"run {i + 1}/{args.runs}: {json.dumps(summary)}", file=sys.stderr, flush=True)
            if args.samples:
                print(json.dumps([asdict(s) for s in run.samples]), file=sys.stderr)
            runs.append(run)

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 3)

    drains = [r.drain_seconds for r in runs]
    peak_rss = med([r.peak_rss_mb for r in runs])
    keeps_up = all(
        r.drain_seconds is not None
        and r.drain_seconds < 2.0
        and r.achieved_rate_per_second >= 0.99 * args.rate
        and abs(r.backlog_slope_per_second) < 0.01 * args.rate
        for r in runs
    )
    print(
        json.dumps(
            {
                "benchmark": "storm",
                "machine": machine(),
                "events": args.events,
                "rate_per_second": args.rate,
                "runs": args.runs,
                "achieved_rate_per_second_median": med([r.achieved_rate_per_second for r in runs]),
                "max_backlog_events_median": med([r.max_backlog for r in runs]),
                "max_backlog_events_all": [r.max_backlog for r in runs],
                "backlog_slope_events_per_second_median": med(
                    [r.backlog_slope_per_second for r in runs]
                ),
                "max_writer_lag_events_median": med([r.max_writer_lag for r in runs]),
                "drain_seconds_all": [None if x is None else round(x, 3) for x in drains],
                "events_recorded_all": [r.recorded for r in runs],
                "peak_rss_mb_median": peak_rss,
                "peak_rss_mb_all": [round(r.peak_rss_mb, 1) for r in runs],
                "rss_at_ready_mb_median": med([r.rss_at_ready_mb for r in runs]),
                "daemon_cpu_percent_of_one_core_median": med([r.daemon_cpu_percent for r in runs]),
                "daemon_cpu_us_per_event_median": med([r.daemon_cpu_us_per_event for r in runs]),
                "cpu_needed_at_rate_percent_of_one_core": med(
                    [r.daemon_cpu_us_per_event * args.rate / 1e4 for r in runs]
                ),
                "keeps_up": keeps_up,
                "rss_target_met": peak_rss <= 80.0,
                "loadavg_1m_per_run": [r.loadavg_1m for r in runs],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
