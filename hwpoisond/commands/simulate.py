"""`hwpoisond simulate [SCENARIO]`: the real daemon against a simulated faulty machine.

Rule: everything real except the kernel. The daemon (sources, core, store, executor, metrics)
runs in this process on a `SimKernelFS`; a driver thread plays the scenario into the simulated
kernel's trace pipe on a clock that runs `--speed` times faster than real time. Nothing of the
real machine is touched.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hwpoisond import config as config_mod
from hwpoisond import exitcodes, logs
from hwpoisond.config import parse_duration
from hwpoisond.daemon import Daemon
from hwpoisond.notify import Notifier
from hwpoisond.progress import Progress
from hwpoisond.sim.kernel import SimKernelFS, SimMachine
from hwpoisond.sim.scenarios import HOUR, SCENARIOS, Happening, Scenario
from hwpoisond.store.db import Store
from hwpoisond.store.report import collect_status

DEFAULT_SPEED = 3600.0  # one simulated hour per second


#: How long the daemon may read nothing new while injected errors are still unread.
SETTLE_STALL_SECONDS = 120.0


class SimClock:
    """Simulated wall-clock seconds: `start` plus real elapsed time × `speed`."""

    def __init__(self, start: float, speed: float) -> None:
        self.start = start
        self.speed = speed
        self._mono0 = time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self._mono0) * self.speed

    def sleep_until(self, t: float, stop: threading.Event) -> bool:
        """Sleep (really) until simulated time `t`; False when `stop` was set meanwhile."""
        delay = (t - self()) / self.speed
        return not (delay > 0 and stop.wait(delay))


class _ReadyNotifier(Notifier):
    def __init__(self) -> None:
        super().__init__(environ={})
        self.is_ready = threading.Event()

    def ready(self, status: str) -> None:
        self.is_ready.set()


class Run:
    """One scenario run: the machine, the clock, and the daemon(s) across reboots."""

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        cfg: config_mod.Config,
        speed: float,
        duration_seconds: float | None,
        seed: int = 1,
    ) -> None:
        import random  # noqa: PLC0415 - only here

        self.scenario = scenario
        self.workdir = workdir
        self.cfg = cfg
        self.speed = speed
        rng = random.Random(seed)  # noqa: S311 - reproducible scenario, not secrets
        probe = SimMachine(workdir / "root")
        happenings = scenario.build(probe, rng)
        if duration_seconds is not None:
            happenings = [h for h in happenings if h.at <= duration_seconds]
        self.happenings = happenings
        # The simulated clock ends about now, so times in `status` and the metrics read as
        # recent history rather than the future.
        span = max((h.at for h in happenings), default=0.0) + HOUR
        self.sim_start = float(int(time.time() - span))
        self.machine = SimMachine(workdir / "root", boot_time=int(self.sim_start) - 600, seed=seed)
        self.machine.busy_pfns = {
            self.machine.phys_addr_of(a) >> 12 for a in scenario.busy_cells(self.machine)
        }
        self.machine.build()
        self.clock = SimClock(self.sim_start, speed)
        self.progress = Progress(f"simulate {scenario.name}", total=int(span))
        self.stop_event = threading.Event()
        self.emitted = 0
        self.daemon: Daemon | None = None
        self.boots = 1
        self.error: BaseException | None = None

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    def _new_daemon(self) -> tuple[Daemon, _ReadyNotifier]:
        notifier = _ReadyNotifier()
        daemon = Daemon(
            self.cfg,
            SimKernelFS(self.machine),
            self.state_dir,
            None,
            notifier,
            wall_clock=self.clock,
            time_scale=self.speed,
        )
        return daemon, notifier

    def run(self) -> None:
        """Phases separated by reboots; each phase runs the daemon in this (main) thread."""
        phases: list[list[Happening]] = [[]]
        for h in self.happenings:
            if h.kind == "reboot":
                phases.append([])
            else:
                phases[-1].append(h)
        for index, phase in enumerate(phases):
            if index > 0:
                self.machine.reboot()
                self.boots += 1
            daemon, notifier = self._new_daemon()
            self.daemon = daemon
            driver = threading.Thread(
                target=self._drive, args=(daemon, notifier, phase), daemon=True
            )
            driver.start()
            try:
                daemon.run()
            finally:
                if driver.is_alive():  # stopped by a signal, not by the driver: stop it too
                    self.stop_event.set()
                driver.join()
            if self.stop_event.is_set():
                raise KeyboardInterrupt
            if self.error is not None:
                raise self.error

    def _drive(self, daemon: Daemon, notifier: _ReadyNotifier, phase: list[Happening]) -> None:
        try:
            if not notifier.is_ready.wait(30):
                raise RuntimeError("the daemon did not become ready within 30 s")
            emitted_before = self.emitted  # each boot's daemon counts from 0
            for h in phase:
                if not self.clock.sleep_until(self.sim_start + h.at, self.stop_event):
                    break
                ts = self.clock() - self.machine.boot_time
                if h.kind == "ce" and h.address is not None:
                    self.machine.corrected_error(ts, h.address, h.count)
                    self.emitted += 1
                elif h.kind == "ue" and h.address is not None:
                    self.machine.uncorrected_error(ts, h.address)
                    self.emitted += 2  # the mc_event line and the memory_failure_event line
                self._show_progress(daemon)
            self._settle(daemon, self.emitted - emitted_before)
        except BaseException as e:  # surfaced by run() in the main thread
            self.error = e
        finally:
            daemon.request_stop()

    def _settle(self, daemon: Daemon, emitted: int) -> None:
        """Wait until the daemon has read the `emitted` errors of this boot and due retries
        have run."""
        # A condition, not a timer: wait while the daemon makes progress, and fail loudly when
        # it stalls; a report cut short would read as events the daemon lost.
        seen, stalled_since = daemon.tally.events_total, time.monotonic()
        while daemon.tally.events_total < emitted:
            if daemon.tally.events_total != seen:
                seen, stalled_since = daemon.tally.events_total, time.monotonic()
            elif time.monotonic() - stalled_since > SETTLE_STALL_SECONDS:
                raise RuntimeError(
                    f"the daemon read {seen} of {emitted} injected errors and made no "
                    f"progress for {SETTLE_STALL_SECONDS:g} s"
                )
            time.sleep(0.02)
        # Retries and deferred offlines are due within simulated minutes: give them an hour.
        self.clock.sleep_until(self.clock() + HOUR, self.stop_event)
        time.sleep(0.2)

    def _show_progress(self, daemon: Daemon) -> None:
        elapsed = int(self.clock() - self.sim_start)
        self.progress.update(
            elapsed,
            f"{elapsed / HOUR:.1f} h simulated, {self.emitted} errors injected, "
            f"{len(self.machine.poisoned)} pages poisoned, boot {self.boots}",
        )


def _report(run: Run) -> dict[str, Any]:
    with Store.open_readonly(run.state_dir) as store:
        status = collect_status(store)
    offline_errnos = [w for w in run.machine.offline_writes if w[2] is not None]
    return {
        "scenario": run.scenario.name,
        "summary": run.scenario.summary,
        "expected": run.scenario.expectation,
        "workdir": str(run.workdir),
        "state_dir": str(run.state_dir),
        "metrics_file": str(run.workdir / "metrics.prom"),
        "errors_injected": run.emitted,
        "boots": run.boots,
        "pages_retired": [r["pfn"] for r in status["retired"]],
        "pages_poisoned_now": sorted(run.machine.poisoned),
        "offline_writes": len(run.machine.offline_writes),
        "offline_write_log": [
            {"kind": kind, "pfn": pfn, "errno": err}
            for kind, pfn, err in run.machine.offline_writes
        ],
        "offline_refusals": len(offline_errnos),
        "failures": status["failures"],
        "escalations": [e["reason"] for e in status["escalations"] if e["kind"] == "escalate"],
        "budget": status["budget"],
        "uncorrected": sum(d.get("events_ue") or 0 for d in status["dimms"]),
        "lines_dropped": run.machine.lines_dropped,
    }


def _print_report(report: dict[str, Any]) -> None:
    retired = report["pages_retired"]
    lines = [
        f"Scenario {report['scenario']}: {report['summary']}.",
        f"Expected: {report['expected']}.",
        "",
        f"What happened: {report['errors_injected']} error reports injected over "
        f"{report['boots']} boot(s).",
        f"  pages retired: {len(retired)}"
        + (
            f" ({', '.join(hex(p) for p in retired[:8])}{' …' if len(retired) > 8 else ''})"
            if retired
            else ""
        ),
        f"  writes to soft_offline_page: {report['offline_writes']}, refused by the kernel: "
        f"{report['offline_refusals']}",
    ]
    for f in report["failures"][:5]:
        lines.append(
            f"  failed: pfn {f['pfn']:#x} {f['action']} attempt {f['attempt']}: "
            f"{f['errno_name'] or f['result']}"
        )
    for reason in report["escalations"]:
        lines.append(f"  ESCALATION: {reason}")
    if report["uncorrected"]:
        lines.append(f"  uncorrected errors recorded: {report['uncorrected']}")
    budget = report["budget"] or {}
    if budget:
        lines.append(
            f"  budget: {budget.get('retired_bytes', 0) // 1024} KiB of "
            f"{(budget.get('max_retired_bytes') or 0) // 1024} KiB used"
            + (" (EXHAUSTED)" if budget.get("exhausted") else "")
        )
    lines += [
        "",
        f"State for inspection: hwpoisond status --state-dir {report['state_dir']}",
        f"Final metrics: {report['metrics_file']}",
    ]
    print("\n".join(lines))


def main(args: argparse.Namespace) -> int:
    if args.list or args.scenario is None:
        for s in SCENARIOS.values():
            print(f"{s.name:17} {s.summary}")
        return exitcodes.OK if args.list else exitcodes.USAGE
    scenario = SCENARIOS.get(args.scenario)
    if scenario is None:
        print(
            f"hwpoisond simulate: unknown scenario {args.scenario!r}; one of: "
            + ", ".join(SCENARIOS),
            file=sys.stderr,
        )
        return exitcodes.USAGE
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as e:
        for problem in e.problems:
            print(f"hwpoisond: {e.source}: {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    duration = None
    if args.duration is not None:
        try:
            duration = parse_duration(args.duration)
        except ValueError as e:
            print(f"hwpoisond simulate: --duration: {e}", file=sys.stderr)
            return exitcodes.USAGE
    speed = args.speed or DEFAULT_SPEED
    if speed <= 0:
        print("hwpoisond simulate: --speed must be positive", file=sys.stderr)
        return exitcodes.USAGE
    workdir = (
        Path(args.state_dir)
        if args.state_dir
        else Path(tempfile.mkdtemp(prefix=f"hwpoisond-sim-{scenario.name}-"))
    )
    # The simulation's own settings: metrics on an ephemeral port unless configured, fast
    # counter polls, and (always) the textfile so the final metrics stay for inspection.
    metrics = cfg.metrics.model_copy(
        update={
            "port": cfg.metrics.port if args.config else 0,
            "textfile_dir": str(workdir),
        }
    )
    daemon_cfg = cfg.daemon.model_copy(update={"poll_interval": 1.0})
    sources = cfg.sources.model_copy(update={"journald": False})
    cfg = cfg.model_copy(update={"metrics": metrics, "daemon": daemon_cfg, "sources": sources})
    logs.setup(args.log_level or "warning", cfg.daemon.log_rate_limit_interval, force_stderr=True)
    run = Run(scenario, workdir, cfg, speed, duration)
    try:
        run.run()
    except KeyboardInterrupt:
        run.stop_event.set()
        return 130
    finally:
        run.machine.close_pipes()
        run.progress.done()
    (workdir / "hwpoisond.prom").replace(workdir / "metrics.prom")
    report = _report(run)
    if getattr(args, "json", False):
        import json  # noqa: PLC0415

        print(json.dumps(report, sort_keys=True))
    else:
        _print_report(report)
    logging.getLogger("hwpoisond").debug("simulation finished: %s", report)
    return exitcodes.OK
