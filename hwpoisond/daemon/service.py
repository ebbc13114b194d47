"""The daemon: wires the loop, start-up, the pipeline, sources, metrics and triggers together.

Rule: owns the life cycle (start, run, reload, shutdown) and the timers; the order of side
effects within a step belongs to pipeline.py, start-up's owed work to startup.py, the loop's
waiting to loop.py, the published views to publish.py.
"""

from __future__ import annotations

import functools
import logging
import select
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from hwpoisond import config as config_mod
from hwpoisond.actions.offliner import ExecutorMode, Offliner
from hwpoisond.actions.reconcile import StartupReport, resolve_pending
from hwpoisond.actions.triggers import TriggerEvent, TriggerRunner
from hwpoisond.core import state as core_state
from hwpoisond.core.model import Event
from hwpoisond.core.params import PolicyParams
from hwpoisond.core.state import to_plain
from hwpoisond.daemon import publish
from hwpoisond.daemon.crashpoints import crash_point
from hwpoisond.daemon.loop import EventLoop, SignalPipe
from hwpoisond.daemon.outcomes import Outcomes
from hwpoisond.daemon.pipeline import JOURNALD_CURSOR, Pipeline
from hwpoisond.daemon.startup import seed_deduper, start_up
from hwpoisond.kernelfs import KernelFS
from hwpoisond.metrics import Exporter
from hwpoisond.metrics.exporter import MetricsBindError
from hwpoisond.notify import Notifier
from hwpoisond.sources.base import EventSource, SourceStatus
from hwpoisond.sources.edac import EdacSnapshot, EdacSource
from hwpoisond.sources.journald import JournaldSource
from hwpoisond.sources.memstate import MemoryState, read_memory_state
from hwpoisond.sources.tracefs import TracefsSource
from hwpoisond.store.db import Retention, Store, ensure_state_dir
from hwpoisond.tally import Tally

log = logging.getLogger("hwpoisond")

#: How often an unverifiable pending intent (kpageflags unreadable at start) is looked at again.
RECHECK_SECONDS = 30.0


class Daemon:
    """`start()` opens everything (store, reconciliation, sources, metrics) before READY;
    `shutdown()` closes it all after the last step."""

    def __init__(
        self,
        cfg: config_mod.Config,
        kfs: KernelFS,
        state_dir: Path,
        config_path: str | None,
        notifier: Notifier | None = None,
        wall_clock: Callable[[], float] = time.time,
        *,
        install_signals: bool = True,
        time_scale: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.kfs = kfs
        self.state_dir = state_dir
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.wall_clock = wall_clock
        self.loop = EventLoop()
        self.signals = SignalPipe()
        self.install_signals = install_signals
        #: Seconds of `wall_clock` per real second (a simulation runs faster than real time).
        self.time_scale = time_scale
        self.tally = Tally(start_time_seconds=wall_clock())
        self.store: Store | None = None
        self.pipeline: Pipeline | None = None
        self.exporter: Exporter | None = None
        self.params: PolicyParams = config_mod.policy_params(cfg, None)
        self.offliner = Offliner(kfs, _executor_mode(cfg))
        self.triggers = _trigger_runner(cfg)
        self._trigger_drops_logged = False
        self._unparsed_logged: set[str] = set()
        self.outcomes = Outcomes(self.tally, self.triggers)
        self.event_sources: list[EventSource] = []
        self.edac_source: EdacSource | None = None
        self.edac: EdacSnapshot | None = None
        self.memstate: MemoryState | None = None
        self._checkpointed_event_id = 0
        self._unverifiable = False
        self._last_cursor: str | None = None

    @property
    def wakeups(self) -> int:
        return self.loop.wakeups

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        # Signals first: a SIGTERM during start-up is then handled at the first loop turn
        # instead of killing the process half-way through reconciliation.
        if self.install_signals:
            self.signals.install()
        self.loop.register(self.signals.read_fd, "signals", self._on_signal)
        # The metrics port first: a bad [metrics] address or TLS file is a config error (exit
        # 78) found before anything is touched, and a taken port is known before the slow work.
        self._bind_metrics()
        ensure_state_dir(self.state_dir)
        self._open_store()
        crash_point("startup.store_opened")
        self._sample_counters()
        total_ram = self.memstate.mem_total_bytes if self.memstate else None
        self.params = config_mod.policy_params(self.cfg, total_ram)
        self._reconcile()
        self._open_sources()
        self._start_metrics()
        timers = self.loop.timers
        timers.every("poll", self.cfg.daemon.poll_interval, self._poll)
        timers.every("housekeeping", self.cfg.daemon.housekeeping_interval, self._housekeeping)
        if self.notifier.watchdog_interval_seconds:
            timers.every("watchdog", self.notifier.watchdog_interval_seconds, self._watchdog)
        self._write_status()
        self._publish()
        self._arm_expire()

    def status_line(self) -> str:
        sources = [s.status() for s in self.event_sources]
        up = [s.name for s in sources if s.available]
        policy = self.pipeline.policy if self.pipeline else core_state.new_state()
        budget = core_state.budget_status(policy, self.params)
        retired = len(core_state.retired_pages(policy))
        listening = f", metrics {self.exporter.url}" if self.exporter and self.exporter.url else ""
        if self.exporter is not None and self.exporter.bind_error is not None:
            listening = f"; METRICS ENDPOINT DOWN ({self.exporter.bind_error})"
        degraded = ""
        if self.pipeline is not None and self.pipeline.store_error is not None:
            degraded = f"; DATABASE NOT WRITING ({self.pipeline.held_events} events held)"
        return (
            f"sources up: {', '.join(up) or 'none'}; {retired} pages retired; "
            f"budget {budget.retired_bytes // 1024} KiB used{listening}{degraded}"
        )

    def run(self) -> int:
        try:
            self.start()
        except Exception:
            self.shutdown()
            raise
        self.notifier.ready(self.status_line())
        log.info("hwpoisond ready: %s", self.status_line())
        try:
            while not self.loop.stopped:
                self.loop.run_once(self.triggers.timeout())
                if self.triggers.running() or self.triggers.timeout() is not None:
                    self._reap_triggers()
        finally:
            self.notifier.stopping()
            self.shutdown()
        log.info("hwpoisond stopped")
        return 0

    def shutdown(self) -> None:
        for source in self.event_sources:
            source.close()
        if self.edac_source is not None:
            self.edac_source.close()
        self._stop_triggers()
        if self.store is not None:
            if not self.store.readonly:
                self._checkpoint(force=True)
            self.store.close()
            self.store = None
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        self.loop.close()
        self.signals.close()

    # -- start-up ---------------------------------------------------------------------------------

    def _open_store(self) -> None:
        retention = Retention(self.cfg.store.event_retention, self.cfg.store.event_max_rows)
        self.store = Store.open(self.state_dir, retention)
        if self.store.recovery is not None:
            self.tally.database_recoveries += 1
            log.error(
                "state database was corrupt (%s): moved aside to %s, started a fresh one",
                self.store.recovery.reason,
                self.store.recovery.moved_to,
                extra={"message_id": "database_recovered"},
            )

    def _reconcile(self) -> None:
        assert self.store is not None
        now = self.wall_clock()
        started = start_up(
            self.store,
            self.offliner,
            self.params,
            now,
            reoffline_enabled=self.cfg.reboot.reoffline,
        )
        self._checkpointed_event_id = started.checkpointed_event_id
        report = started.report
        self.pipeline = Pipeline(
            self.store,
            self.offliner,
            self.params,
            started.policy,
            retired_pfns=set(started.retired_pfns),
            outcomes=self.outcomes,
            tally=self.tally,
            boot_id=report.boot_id,
            last_event_id=started.last_event_id,
            wall_clock=self.wall_clock,
        )
        seed_deduper(self.store, self.pipeline.deduper, now)
        self._log_report(report)
        self.pipeline.carry_out_owed(list(report.owed), now)
        crash_point("startup.owed_written")

    def _log_report(self, report: StartupReport) -> None:
        if report.fingerprint_changed:
            self.tally.fingerprint_changes += 1
            log.warning(
                "installed memory changed since pages were retired (%s): archived %d retired "
                "pages as %s, none offlined again",
                report.fingerprint.description,
                report.archived_pages,
                report.archive_key,
                extra={"message_id": "memory_changed"},
            )
        if report.unverifiable:
            self._unverifiable = True
            log.warning(
                "kpageflags unreadable for %d pages: their offlines stay owed and are looked "
                "at again every %.0fs",
                len(report.unverifiable),
                RECHECK_SECONDS,
            )
            self.loop.timers.every("recheck", RECHECK_SECONDS / self.time_scale, self._recheck)
        if report.retry:
            log.info("%d interrupted or owed offlines carried out again", len(report.retry))
        if report.rebooted or report.reoffline:
            log.info(
                "boot %s: %d retired pages are back in use, offlining them again",
                report.boot_id,
                len(report.reoffline),
            )

    def _recheck(self) -> None:
        """Pending intents whose page could not be read at start, until kpageflags answers."""
        assert self.store is not None and self.pipeline is not None
        now = self.wall_clock()
        with self.store.transaction():
            resolved, owed, unverifiable = resolve_pending(
                self.store, self.offliner, now, self.pipeline.boot_id
            )
        if resolved:
            self.pipeline.retired_pfns.update(p.pfn for p in self.store.retired_pages())
        self.pipeline.carry_out_owed(owed, now)
        if not unverifiable:
            self.loop.timers.cancel("recheck")
            self._unverifiable = False
            log.info("kpageflags readable again: every owed offline is accounted for")

    def _open_sources(self) -> None:
        sources_cfg = self.cfg.sources
        if sources_cfg.tracefs:
            self.event_sources.append(TracefsSource(self.kfs))
        if sources_cfg.journald:
            assert self.store is not None
            cursor = self.store.get(JOURNALD_CURSOR)
            self.event_sources.append(
                JournaldSource(self.kfs, cursor or None, backfill=sources_cfg.journal_backfill)
            )
        for source in self.event_sources:
            self._open_source(source)
        self.loop.timers.every(
            "reopen", max(self.cfg.daemon.poll_interval, 5.0), self._reopen_sources
        )
        self._say_what_is_missing()

    def _say_what_is_missing(self) -> None:
        """One line for the common first run on a laptop, VM or CI box: no memory-failure
        support and no EDAC driver means nothing will ever happen here."""
        missing = []
        if not self.offliner.supported("soft"):
            missing.append("no soft_offline_page (kernel without CONFIG_MEMORY_FAILURE?)")
        if self.edac is not None and not self.edac.controllers:
            missing.append("no EDAC memory controller")
        if missing:
            log.warning(
                "this machine lacks memory-failure interfaces (%s): hwpoisond will watch and "
                "count but cannot retire pages; to see it act, run `hwpoisond simulate`",
                "; ".join(missing),
            )

    def _open_source(self, source: EventSource) -> None:
        try:
            status = source.open()
        except Exception:  # a source bug must cost that source, never the daemon
            log.exception("source %s failed to open", source.name)
            return
        fd = source.fileno()
        if fd is not None:
            self.loop.register(fd, "source", functools.partial(self._on_readable, source))
        level = logging.INFO if status.available else logging.WARNING
        log.log(
            level,
            "source %s %s: %s",
            source.name,
            "up" if status.available else "unavailable",
            status.reason,
        )
        if status.available:
            # Events already waiting (journal backfill, a trace buffer filled while we were
            # down) are read at the loop's first turn, after READY, rather than at the next
            # wake-up: a long backfill must not hold READY past systemd's start timeout.
            self._drain_soon(source)

    def _drain_soon(self, source: EventSource) -> None:
        name = f"drain:{source.name}"
        if name not in self.loop.timers:
            self.loop.timers.once(name, 0.0, functools.partial(self._on_readable, source))

    def _reopen_sources(self) -> None:
        for source in self.event_sources:
            if source.fileno() is None:
                was = source.status()
                try:
                    status = source.open()
                except Exception:
                    log.exception("source %s failed to open", source.name)
                    continue
                if status.available and not was.available:
                    self._open_source(source)

    def _bind_metrics(self) -> None:
        """Take the metrics port before the slow start-up work (store, reconciliation), and
        never fail start-up for it: retiring pages matters more than metrics. A port that cannot
        be bound is said once, loudly; housekeeping retries. A config error (an address that is
        not one, unusable TLS files) still raises."""
        if not self.cfg.metrics.enabled and not self.cfg.metrics.textfile_dir:
            return
        self.exporter = Exporter.from_config(self.cfg.metrics)
        try:
            self.exporter.bind()
        except MetricsBindError as e:
            log.warning(
                "%s; running WITHOUT the metrics endpoint (hwpoisond_metrics_endpoint_up 0), "
                "retrying every %g s",
                e.strerror,
                self.cfg.daemon.housekeeping_interval,
            )

    def _start_metrics(self) -> None:
        if self.exporter is None:
            return
        self.exporter.serve()
        if self.exporter.url:
            log.info("metrics on %s", self.exporter.url)

    # -- the step ---------------------------------------------------------------------------------

    def _on_readable(self, source: EventSource) -> None:
        assert self.pipeline is not None
        received_mono = time.monotonic()
        fd_before = source.fileno()
        events = self._read(source)
        if events and fd_before is not None:
            # Group commit: a storm arrives faster than one durable commit per read can keep
            # up with, so keep reading while more is waiting, for at most as long as the last
            # commit took (bounded: latency stays within a few commits).
            commit = self.pipeline.commit_seconds
            deadline = received_mono + min(0.05, max(0.002, commit))
            while time.monotonic() < deadline and source.fileno() == fd_before:
                if not select.select([fd_before], [], [], 0)[0]:
                    break
                events.extend(self._read(source))
        fd_after = source.fileno()
        if fd_before is not None and fd_after != fd_before and fd_before in self.loop:
            self.loop.unregister(fd_before)
            log.warning("source %s went away: %s", source.name, source.status().reason)
        cursor = getattr(source, "cursor", None)
        if events or isinstance(cursor, str):
            self.step(events, cursor if isinstance(cursor, str) else None, received_mono)
        if getattr(source, "more_pending", False):
            # A bounded read (journal backfill) left entries waiting that will not wake the fd:
            # come back at the next loop turn, after signals and the other sources.
            self._drain_soon(source)

    @staticmethod
    def _read(source: EventSource) -> list[Event]:
        try:
            return source.read_events()
        except Exception:  # a source bug must not take the daemon down; it is logged loudly
            log.exception("source %s failed while reading", source.name)
            return []

    def step(
        self, events: list[Event], cursor: str | None = None, received_mono: float = 0.0
    ) -> None:
        """gather → decide → persist intent → act → persist result → publish metrics."""
        assert self.pipeline is not None
        if not events and cursor == self._last_cursor:
            return
        self._last_cursor = cursor
        self.pipeline.step(events, self.wall_clock(), cursor)
        if received_mono and events:
            latency = time.monotonic() - received_mono
            self.tally.latency = self.tally.latency.observe(latency, len(events))
        self._sync_trigger_fds()
        self._arm_publish()
        self._arm_expire()

    # -- timers -----------------------------------------------------------------------------------

    def _expire(self) -> None:
        assert self.pipeline is not None
        self.pipeline.expire(self.wall_clock())
        self._sync_trigger_fds()
        self._arm_expire()

    def _arm_expire(self) -> None:
        """A one-shot timer for the policy's next retry or deferred offline, if any."""
        assert self.pipeline is not None
        due = core_state.next_due(self.pipeline.policy)
        timers = self.loop.timers
        timers.cancel("expire")
        if due is not None:
            delay = max(0.0, due - self.wall_clock()) / self.time_scale
            timers.once("expire", delay, self._expire)

    def _housekeeping(self) -> None:
        assert self.store is not None and self.pipeline is not None
        if self.exporter is not None and self.exporter.bind_error is not None:
            self.exporter.retry_bind()  # logs once it succeeds
        now = self.wall_clock()
        self.pipeline.expire(now)  # also writes what a store failure held back
        self._checkpoint(now=now, force=True)
        try:
            pruned = self.store.prune_events(now)
            pruned_pages = self.store.prune_pages(now)
        except sqlite3.Error as e:
            log.error("pruning the state database failed: %s", e)
            pruned = pruned_pages = 0
        if pruned or pruned_pages:
            log.debug(
                "pruned %d events and %d count-only pages past retention", pruned, pruned_pages
            )
        self._write_status()
        self._publish()
        self._sync_trigger_fds()
        self._arm_expire()

    def _poll(self) -> None:
        if self.edac_source is not None and self.edac_source.fileno() is not None:
            self.edac_source.read_changes()
        self._sample_counters()
        self._write_status()
        self._publish()

    def _sample_counters(self) -> None:
        if self.cfg.sources.edac_sysfs:
            if self.edac_source is None:
                self.edac_source = EdacSource(self.kfs)
                self.edac_source.open()
                fd = self.edac_source.fileno()
                if fd is not None:
                    self.loop.register(fd, "edac", self._poll)
            self.edac = self.edac_source.poll()
        if self.cfg.sources.memory_state:
            self.memstate = read_memory_state(self.kfs)

    def _watchdog(self) -> None:
        self.notifier.watchdog()

    def _arm_publish(self) -> None:
        # Under a storm, steps come faster than anyone scrapes: publish at most twice a second.
        if "publish" not in self.loop.timers:
            self.loop.timers.once("publish", 0.5, self._publish)

    def _publish(self) -> None:
        assert self.pipeline is not None
        unparsed = self._unparsed_lines()
        snapshot = self.tally.snapshot(
            now=self.wall_clock(),
            policy_state=self.pipeline.policy,
            params=self.params,
            sources=self._source_statuses(),
            parse_failures={s.name: _parse_failures(s) for s in self.event_sources},
            edac=self.edac,
            memstate=self.memstate,
            events_held=self.pipeline.held_events,
            deduplicated=self.pipeline.deduper.duplicates,
            unparsed=unparsed,
        )
        if self.exporter is not None:
            try:
                self.exporter.publish(snapshot)  # also writes the textfile when configured
            except OSError as e:
                log.error("cannot write the metrics textfile: %s", e)
        self.notifier.status(self.status_line())

    def _unparsed_lines(self) -> dict[str, int]:
        """Lines about memory errors no parser understood, per source; the first of each
        source's is logged once (the count keeps going up in the metric and status)."""
        unparsed: dict[str, int] = {}
        for source in self.event_sources:
            count, first = source.unparsed_candidates()
            if not count:
                continue
            unparsed[source.name] = count
            if source.name not in self._unparsed_logged:
                self._unparsed_logged.add(source.name)
                log.warning(
                    "%s: a line about memory errors that no parser understands (first: %r); "
                    "such lines are counted in hwpoisond_parse_candidate_lines_unparsed_total, "
                    "not acted on",
                    source.name,
                    (first or "")[:200],
                )
        return unparsed

    def _source_statuses(self) -> list[SourceStatus]:
        out = [s.status() for s in self.event_sources]
        if self.edac_source is not None:
            out.append(self.edac_source.status())
        return out

    # -- persistence ------------------------------------------------------------------------------

    def _checkpoint(self, now: float | None = None, force: bool = False) -> None:
        """Save the policy state with the id of the last event it has seen."""
        assert self.store is not None
        if self.pipeline is None:
            return
        last = self.pipeline.last_event_id
        if not force and self._checkpointed_event_id == last:
            return
        now = self.wall_clock() if now is None else now
        try:
            self.store.set_checkpoint(
                {"policy": to_plain(self.pipeline.policy), "last_event_id": last}, now
            )
        except sqlite3.Error as e:
            log.error("cannot save the policy checkpoint: %s", e)
            return
        self._checkpointed_event_id = last

    def _write_status(self) -> None:
        """What `hwpoisond status` shows without touching the kernel."""
        assert self.store is not None and self.pipeline is not None
        p = self.pipeline
        try:
            publish.write_status(
                self.store,
                self.wall_clock(),
                policy=p.policy,
                params=self.params,
                preset=self.cfg.policy.preset,
                sources=self._source_statuses(),
                memstate=self.memstate,
                edac=self.edac,
                soft_offline_supported=self.offliner.supported("soft"),
                started_at=self.tally.start_time_seconds,
                degraded={
                    "store_error": p.store_error,
                    "held_events": p.held_events,
                    "events_unstored": self.tally.events_unstored,
                    "unverifiable_intents": self._unverifiable,
                    "metrics_endpoint_error": self.exporter.bind_error if self.exporter else None,
                    "unparsed_candidate_lines": self._unparsed_lines(),
                    "triggers": {
                        f"{event}/{kind}": n
                        for (event, kind), n in sorted(self.tally.triggers.items())
                    },
                },
            )
        except sqlite3.Error as e:
            # The pipeline already says loudly that the database does not write.
            log.debug("status record not written: %s", e)

    # -- triggers ---------------------------------------------------------------------------------

    def _sync_trigger_fds(self) -> None:
        for fd in self.triggers.fds():
            self.loop.register(fd, "trigger", self._reap_triggers)

    def _stop_triggers(self) -> None:
        outcomes = self.triggers.close()
        for outcome in outcomes:
            self.tally.trigger(outcome.event, outcome.kind)
        cut = [o for o in outcomes if o.at_shutdown]
        if cut:
            log.warning(
                "%d trigger scripts killed or never started at shutdown (%s); counted in "
                'hwpoisond_triggers_total{outcome="shutdown"}',
                len(cut),
                ", ".join(sorted({o.path for o in cut})),
            )
        if self.pipeline is not None and self.exporter is not None:
            self._publish()  # the last metrics (and textfile) count them too

    def _reap_triggers(self) -> None:
        # poll() closes the pidfds of finished scripts and may open new ones under the same
        # numbers: take every trigger fd out of the selector first, register the live ones after.
        for fd in self.loop.fds("trigger"):
            self.loop.unregister(fd)
        for outcome in self.triggers.poll():
            self.tally.trigger(outcome.event, outcome.kind)
            if outcome.dropped:
                # Once per burst: a storm of retirements would otherwise log one line each.
                if not self._trigger_drops_logged:
                    log.error(
                        "trigger %s dropped: %d scripts already waiting; every drop is counted "
                        'in hwpoisond_triggers_total{outcome="dropped"}',
                        outcome.path,
                        self.triggers.max_queued,
                    )
                    self._trigger_drops_logged = True
            elif outcome.refused:
                log.error("trigger %s not run: %s", outcome.path, outcome.refused)
            elif outcome.timed_out:
                log.error("trigger %s killed after %.0fs", outcome.path, outcome.duration_seconds)
            elif outcome.returncode:
                log.warning("trigger %s exited %s", outcome.path, outcome.returncode)
        if not self.triggers.queued():
            self._trigger_drops_logged = False
        self._sync_trigger_fds()

    # -- signals ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the current step, from any thread (as SIGTERM would)."""
        self.signals.send(signal.SIGTERM)

    def _on_signal(self) -> None:
        for signum in self.signals.drain():
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s, stopping", signal.Signals(signum).name)
                self.loop.stopped = True
            elif signum == signal.SIGHUP:
                self.reload()

    def reload(self) -> None:
        """SIGHUP: re-read the config; a bad one is reported and the old one stays in force."""
        self.notifier.reloading()
        try:
            new_cfg = config_mod.load(self.config_path)
        except config_mod.ConfigError as e:
            for problem in e.problems:
                log.error(
                    "config reload rejected, keeping the old config: %s: %s", e.source, problem
                )
            self.notifier.reloaded(self.status_line())
            return
        self.apply_config(new_cfg)
        log.info("config reloaded from %s", self.config_path or "(built-in defaults)")
        self.notifier.reloaded(self.status_line())

    def apply_config(self, new_cfg: config_mod.Config) -> None:
        """Policy, budget, executor mode, triggers and log level change at once; sources,
        metrics address and state directory need a restart (said in the log)."""
        assert self.pipeline is not None
        old = self.cfg
        self.cfg = new_cfg
        logging.getLogger("hwpoisond").setLevel(new_cfg.daemon.log_level.upper())
        total_ram = self.memstate.mem_total_bytes if self.memstate else None
        self.params = config_mod.policy_params(new_cfg, total_ram)
        self.offliner = Offliner(self.kfs, _executor_mode(new_cfg))
        self._stop_triggers()
        self.triggers = _trigger_runner(new_cfg)
        self.outcomes.triggers = self.triggers
        self.pipeline.params = self.params
        self.pipeline.offliner = self.offliner
        for part in ("sources", "metrics", "store"):
            if getattr(old, part) != getattr(new_cfg, part):
                log.warning("config [%s] changed: takes effect at the next restart", part)
        self._write_status()
        self._publish()


def _executor_mode(cfg: config_mod.Config) -> ExecutorMode:
    return "account" if cfg.policy.action == "account" else "enforce"


def _trigger_runner(cfg: config_mod.Config) -> TriggerRunner:
    t = cfg.triggers
    scripts: dict[TriggerEvent, str | None] = {
        "page_retired": t.page_retired,
        "offline_failed": t.offline_failed,
        "uncorrected_error": t.uncorrected_error,
        "dimm_escalation": t.dimm_escalation,
        "budget_exhausted": t.budget_exhausted,
    }
    runner = TriggerRunner(scripts, t.timeout)
    for event, problem in runner.problems().items():
        log.error("trigger for %s refused: %s", event, problem)
    return runner


def _parse_failures(source: EventSource) -> int:
    return source.parse_failures()
