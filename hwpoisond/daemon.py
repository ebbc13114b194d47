"""The daemon loop: one thread, one selector over source fds and timers, no busy polling.

Rule: this module sequences side effects and owns their order; it decides nothing (the core does)
and parses nothing (parse/ does). Per step: gather → decide → persist intent → act → persist
result → publish metrics.
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import json
import logging
import os
import select
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from hwpoisond import __version__
from hwpoisond import config as config_mod
from hwpoisond.actions.offliner import ExecutorMode, Offliner, OfflineReport
from hwpoisond.actions.reconcile import reconcile_at_start, record_report
from hwpoisond.actions.triggers import TriggerEvent, TriggerRunner
from hwpoisond.core import state as core_state
from hwpoisond.core.model import ActionResult, Decision, Event
from hwpoisond.core.params import PolicyParams
from hwpoisond.core.policy import decide, expire, on_result
from hwpoisond.core.state import PlainStateError, PolicyState, from_plain, new_state, to_plain
from hwpoisond.kernelfs import KernelFS
from hwpoisond.metrics import Exporter
from hwpoisond.notify import Notifier
from hwpoisond.sources.base import EventSource, SourceStatus
from hwpoisond.sources.dedupe import Deduper
from hwpoisond.sources.edac import EdacSnapshot, EdacSource
from hwpoisond.sources.journald import JournaldSource
from hwpoisond.sources.memstate import MemoryState, read_memory_state
from hwpoisond.sources.tracefs import TracefsSource
from hwpoisond.store.db import (
    META_BUDGET,
    META_DAEMON,
    META_DIMMS,
    META_KERNEL,
    META_POLICY,
    META_SOURCES,
    ActionOrigin,
    Retention,
    Store,
    event_from_plain,
)
from hwpoisond.tally import Tally

log = logging.getLogger("hwpoisond")


@dataclass(order=True)
class _Timer:
    due: float
    name: str = field(compare=False)
    interval: float = field(compare=False)
    callback: Callable[[], None] = field(compare=False)


class Timers:
    """Periodic callbacks on the monotonic clock; the loop sleeps until the earliest is due."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._heap: list[_Timer] = []

    def every(self, name: str, interval_seconds: float, callback: Callable[[], None]) -> None:
        heapq.heappush(
            self._heap, _Timer(self._clock() + interval_seconds, name, interval_seconds, callback)
        )

    def once(self, name: str, delay_seconds: float, callback: Callable[[], None]) -> None:
        """Run `callback` once after `delay_seconds` (interval 0 marks it one-shot)."""
        heapq.heappush(self._heap, _Timer(self._clock() + delay_seconds, name, 0.0, callback))

    def __contains__(self, name: str) -> bool:
        return any(t.name == name for t in self._heap)

    def cancel(self, name: str) -> None:
        self._heap = [t for t in self._heap if t.name != name]
        heapq.heapify(self._heap)

    def timeout(self) -> float | None:
        """Seconds until the next timer is due (None: no timers, sleep until an fd wakes us)."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0].due - self._clock())

    def run_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0].due <= now:
            timer = heapq.heappop(self._heap)
            if timer.interval > 0:
                # Re-arm from now, not from `due`: after a long stall we tick once, not in a burst.
                timer.due = max(timer.due + timer.interval, now)
                heapq.heappush(self._heap, timer)
            timer.callback()


class SignalPipe:
    """Turns SIGTERM/SIGINT/SIGHUP into bytes on a pipe the selector watches (self-pipe trick via
    signal.set_wakeup_fd), so a signal wakes the loop and is handled between steps, never inside
    one."""

    HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous: dict[int, object] = {}
        self._old_wakeup = -1
        self._installed = False

    def install(self) -> None:
        for sig in self.HANDLED:
            self._previous[sig] = signal.signal(sig, self._noop)
        self._old_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self._installed = True

    @staticmethod
    def _noop(signum: int, frame: FrameType | None) -> None:
        # The byte written by set_wakeup_fd is what the loop reads; nothing to do here.
        return None

    def drain(self) -> list[int]:
        received: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 512)
            except BlockingIOError:
                break
            if not data:
                break
            received.extend(data)
        return received

    def close(self) -> None:
        if self._installed:
            signal.set_wakeup_fd(self._old_wakeup)
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]
            self._installed = False
        os.close(self.read_fd)
        os.close(self.write_fd)


class Daemon:
    """Owns the loop and the components. `start()` opens everything (store, reconciliation,
    sources, metrics) before READY; `shutdown()` closes it all after the last step."""

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
        self.selector = selectors.DefaultSelector()
        self.timers = Timers()
        self.signals = SignalPipe()
        self.install_signals = install_signals
        #: Seconds of `wall_clock` per real second (a simulation runs faster than real time).
        self.time_scale = time_scale
        self._stop = False
        self.wakeups = 0
        self.tally = Tally(start_time_seconds=wall_clock())
        # Two seconds absorb btime's one-second resolution between trace and journal times.
        self.deduper = Deduper(window_seconds=2.0)
        self.store: Store | None = None
        self.exporter: Exporter | None = None
        self.params: PolicyParams = config_mod.policy_params(cfg, None)
        self.policy: PolicyState = new_state()
        self.offliner = Offliner(kfs, _executor_mode(cfg))
        self.triggers = _trigger_runner(cfg)
        self.boot_id: str | None = None
        self.event_sources: list[EventSource] = []
        self.edac_source: EdacSource | None = None
        self.edac: EdacSnapshot | None = None
        self.memstate: MemoryState | None = None
        self._registered: dict[int, object] = {}
        self._retired_pfns: set[int] = set()
        self._last_event_id = 0
        self._checkpointed_event_id = 0
        self._last_checkpoint = 0.0
        self._dirty = False
        self._commit_seconds = 0.0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        # Signals first: a SIGTERM during start-up is then handled at the first loop turn
        # instead of killing the process half-way through reconciliation.
        if self.install_signals:
            self.signals.install()
        self.selector.register(self.signals.read_fd, selectors.EVENT_READ, self._on_signal)
        _ensure_state_dir(self.state_dir)
        self._open_store()
        self._sample_counters()
        total_ram = self.memstate.mem_total_bytes if self.memstate else None
        self.params = config_mod.policy_params(self.cfg, total_ram)
        self._restore_policy()
        self._reconcile()
        self._open_sources()
        self._start_metrics()
        self.timers.every("poll", self.cfg.daemon.poll_interval, self._poll)
        self.timers.every("housekeeping", self.cfg.daemon.housekeeping_interval, self._housekeeping)
        if self.notifier.watchdog_interval_seconds:
            self.timers.every("watchdog", self.notifier.watchdog_interval_seconds, self._watchdog)
        self._write_status_meta()
        self._publish()
        self._arm_expire()

    def status_line(self) -> str:
        sources = [s.status() for s in self.event_sources]
        up = [s.name for s in sources if s.available]
        budget = core_state.budget_status(self.policy, self.params)
        retired = len(core_state.retired_pages(self.policy))
        listening = f", metrics {self.exporter.url}" if self.exporter and self.exporter.url else ""
        return (
            f"sources up: {', '.join(up) or 'none'}; {retired} pages retired; "
            f"budget {budget.retired_bytes // 1024} KiB used{listening}"
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
            while not self._stop:
                self._run_once()
        finally:
            self.notifier.stopping()
            self.shutdown()
        log.info("hwpoisond stopped")
        return 0

    def _run_once(self) -> None:
        timeout = self.timers.timeout()
        trig = self.triggers.timeout()
        if trig is not None:
            timeout = trig if timeout is None else min(timeout, trig)
        ready = self.selector.select(timeout)
        self.wakeups += 1
        for key, _mask in ready:
            callback: Callable[[], None] = key.data
            callback()
            if self._stop:
                return
        self.timers.run_due()
        if self.triggers.running() or trig is not None:
            self._reap_triggers()

    def shutdown(self) -> None:
        for source in self.event_sources:
            source.close()
        if self.edac_source is not None:
            self.edac_source.close()
        for outcome in self.triggers.close():
            log.warning("trigger %s killed at shutdown: %s", outcome.event, outcome.path)
        if self.store is not None:
            if not self.store.readonly:
                self._checkpoint(force=True)
            self.store.close()
            self.store = None
        if self.exporter is not None:
            self.exporter.stop()
            self.exporter = None
        self.selector.close()
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
        self._retired_pfns = {p.pfn for p in self.store.retired_pages()}

    def _restore_policy(self) -> None:
        """The policy state of the last checkpoint, then the events recorded after it fed again
        (decide() is deterministic): a crash between checkpoints loses no count."""
        assert self.store is not None
        plain = self.store.checkpoint()
        if plain is not None:
            try:
                self.policy = from_plain(plain["policy"])
                self._checkpointed_event_id = int(plain.get("last_event_id", 0))
            except (KeyError, TypeError, ValueError, PlainStateError) as e:
                log.error("policy checkpoint unreadable (%s): starting from empty counts", e)
                self.policy = new_state()
        self._last_event_id = self._checkpointed_event_id
        refed = 0
        for row in self.store.rows(
            "SELECT id, data FROM events WHERE id > ? ORDER BY id", (self._checkpointed_event_id,)
        ):
            event = event_from_plain(json.loads(row["data"]))
            self._last_event_id = int(row["id"])
            if event is None:
                continue
            self.policy, decisions = decide(self.policy, event, self.params)
            refed += 1
            for d in decisions:
                if d.kind == "offline" and d.pfn in self._retired_pfns:
                    self._learn_retired(d)
        if refed:
            log.info("fed %d events recorded after the last checkpoint back to the policy", refed)
        self._sync_pending_with_store()

    def _sync_pending_with_store(self) -> None:
        """Checkpoints are periodic, results are recorded at once: an offline the policy still
        sees as pending may already have its result in the store. Feed it back; intents with no
        result are left to reconciliation."""
        assert self.store is not None
        for rec in core_state.pages_over_threshold(self.policy):
            if rec.status != "pending":
                continue
            rows = self.store.rows(
                "SELECT action, attempt, result, errno, verified, result_at FROM actions"
                " WHERE kind = 'offline' AND pfn = ? AND action = ? AND attempt = ?"
                " AND result IS NOT NULL AND result != 'interrupted' ORDER BY id DESC LIMIT 1",
                (rec.pfn, rec.action, rec.attempt),
            )
            if not rows or rows[0]["result"] not in _RESULT_KINDS:
                continue
            row = rows[0]
            result = ActionResult(
                pfn=rec.pfn,
                action=row["action"],
                result=row["result"],
                at=float(row["result_at"]),
                errno=row["errno"],
                verified=None if row["verified"] is None else bool(row["verified"]),
                attempt=int(row["attempt"]),
            )
            self.policy, _ = on_result(self.policy, result, self.params)

    def _reconcile(self) -> None:
        assert self.store is not None
        now = self.wall_clock()
        pending = {p.action_id: p.decision for p in self.store.pending_intents()}
        report = reconcile_at_start(
            self.store, self.offliner, now, reoffline_enabled=self.cfg.reboot.reoffline
        )
        self.boot_id = report.boot_id
        for action_id in report.resolved:
            d = pending.get(action_id)
            if d is not None and d.pfn is not None:
                self._retired_pfns.add(d.pfn)
                self._learn_retired(d)
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
            self._retired_pfns = set()
        if report.unverifiable:
            log.warning(
                "kpageflags unreadable for %d retired pages: not offlined again",
                len(report.unverifiable),
            )
        if report.rebooted or report.reoffline:
            log.info(
                "boot %s: %d retired pages are back in use, offlining them again",
                report.boot_id,
                len(report.reoffline),
            )
        self._carry_out(list(report.retry), now, origin="retry")
        self._carry_out(list(report.reoffline), now, origin="reboot")

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
        self.timers.every("reopen", max(self.cfg.daemon.poll_interval, 5.0), self._reopen_sources)
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
        if fd is not None and fd not in self._registered:
            self.selector.register(fd, selectors.EVENT_READ, lambda s=source: self._on_readable(s))
            self._registered[fd] = source
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
            # down) are read now rather than at the next wake-up.
            self._on_readable(source)

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

    def _start_metrics(self) -> None:
        if not self.cfg.metrics.enabled and not self.cfg.metrics.textfile_dir:
            return
        self.exporter = Exporter.from_config(self.cfg.metrics)
        self.exporter.start()
        if self.exporter.url:
            log.info("metrics on %s", self.exporter.url)

    # -- the step ---------------------------------------------------------------------------------

    def _on_readable(self, source: EventSource) -> None:
        received_mono = time.monotonic()
        fd_before = source.fileno()
        events = self._read(source)
        if events and fd_before is not None:
            # Group commit: a storm arrives faster than one durable commit per read can keep
            # up with, so keep reading while more is waiting, for at most as long as the last
            # commit took (bounded: latency stays within a few commits).
            deadline = received_mono + min(0.05, max(0.002, self._commit_seconds))
            while time.monotonic() < deadline and source.fileno() == fd_before:
                if not select.select([fd_before], [], [], 0)[0]:
                    break
                events.extend(self._read(source))
        fd_after = source.fileno()
        if fd_before is not None and fd_after != fd_before and fd_before in self._registered:
            self.selector.unregister(fd_before)
            del self._registered[fd_before]
            log.warning("source %s went away: %s", source.name, source.status().reason)
        if events:
            self.step(events, source, received_mono)

    @staticmethod
    def _read(source: EventSource) -> list[Event]:
        try:
            return source.read_events()
        except Exception:  # a source bug must not take the daemon down; it is logged loudly
            log.exception("source %s failed while reading", source.name)
            return []

    def step(
        self, events: list[Event], source: EventSource | None = None, received_mono: float = 0.0
    ) -> None:
        """gather → decide → persist intent → act → persist result → publish metrics."""
        assert self.store is not None
        now = self.wall_clock()
        decisions: list[Decision] = []
        # The same error read through tracefs and the journal is one event (sources/dedupe.py);
        # live sources stamp wall-clock times, and an event without one happened now.
        events = [
            ev if ev.time is not None else dataclasses.replace(ev, time=now)
            for ev in events
            if self.deduper.admit(ev)
        ]
        if not events:
            return
        for ev in events:
            self.policy, ds = decide(self.policy, ev, self.params)
            decisions.extend(ds)
            self.tally.event(ev, now)
            if ev.kind in ("memory_error", "mce") and ev.severity in _UE:
                self._uncorrected(ev)
        intents = self._filter_retired(decisions)
        commit_started = time.monotonic()
        with self.store.transaction():
            self._last_event_id = self.store.record_events(events, now)
            recorded = [
                (d, self.store.record_intent(d, now, boot_id=self.boot_id)) for d in intents
            ]
            cursor = getattr(source, "cursor", None)
            if source is not None and isinstance(cursor, str) and cursor:
                self.store.set(JOURNALD_CURSOR, cursor, now)
        self._commit_seconds = time.monotonic() - commit_started
        if received_mono:
            latency = time.monotonic() - received_mono
            self.tally.latency = self.tally.latency.observe(latency, len(events))
        self._act(recorded, now)
        self._dirty = True
        self._arm_publish()
        self._arm_expire()

    def _filter_retired(self, decisions: list[Decision]) -> list[Decision]:
        """Offline decisions for pages the store already shows retired are answered from the
        store (the policy learns the page is retired), never written twice."""
        out = []
        for d in decisions:
            if d.kind == "offline" and d.pfn in self._retired_pfns:
                self._learn_retired(d)
            else:
                out.append(d)
        return out

    def _learn_retired(self, d: Decision) -> None:
        assert d.pfn is not None and d.action is not None
        result = ActionResult(
            pfn=d.pfn,
            action=d.action,
            result="offlined",
            at=d.at,
            verified=True,
            attempt=d.attempt,
        )
        self.policy, _ = on_result(self.policy, result, self.params)

    def _carry_out(self, decisions: list[Decision], now: float, origin: ActionOrigin) -> None:
        """Decisions that come from outside a step (start-up reconciliation, expire())."""
        assert self.store is not None
        if not decisions:
            return
        with self.store.transaction():
            recorded = [
                (d, self.store.record_intent(d, now, origin=origin, boot_id=self.boot_id))
                for d in decisions
            ]
        self._act(recorded, now)

    def _act(self, recorded: list[tuple[Decision, int]], now: float) -> None:
        """Carry out recorded intents: all writes of a batch, then all their results in one
        durable transaction (a crash in between leaves pending intents, which the next start
        resolves through kpageflags). Results may produce new decisions (a hard-offline
        fallback): they are recorded with the results and go the same way."""
        assert self.store is not None
        queue = list(recorded)
        while queue:
            batch, queue = queue, []
            reports: list[tuple[Decision, int, OfflineReport]] = []
            for decision, action_id in batch:
                if decision.kind == "escalate":
                    self._escalated(decision)
                elif decision.kind == "budget_exhausted":
                    log.warning(
                        "retirement budget exhausted: %s",
                        decision.reason,
                        extra={"message_id": "budget_exhausted"},
                    )
                    self.triggers.fire("budget_exhausted", {"reason": decision.reason})
                else:
                    report = self.offliner.execute(decision, self.wall_clock())
                    reports.append((decision, action_id, report))
            if not reports:
                continue
            follow_ups: list[Decision] = []
            for _decision, _action_id, report in reports:
                self.tally.result(report.result)
                self.policy, more = on_result(self.policy, report.result, self.params)
                follow_ups.extend(self._filter_retired(list(more)))
            with self.store.transaction():
                for _decision, action_id, report in reports:
                    record_report(self.store, action_id, report, self.boot_id)
                queue = [
                    (d, self.store.record_intent(d, now, boot_id=self.boot_id)) for d in follow_ups
                ]
            for decision, _action_id, report in reports:
                self._log_result(decision, report)
        self._sync_trigger_fds()

    def _log_result(self, decision: Decision, report: OfflineReport) -> None:
        r = report.result
        fields = {
            "pfn": f"{r.pfn:#x}",
            "phys_addr": f"{r.pfn << 12:#x}",
            "action": r.action,
            "result": r.result,
            "errno": r.errno,
            "verified": r.verified,
            "attempt": r.attempt,
            "reason": decision.reason,
            "label": decision.label,
        }
        if r.result in ("offlined", "already_poisoned"):
            self._retired_pfns.add(r.pfn)
            log.warning(
                "page %#x retired (%s offline, %s): %s",
                r.pfn,
                r.action,
                "verified" if r.verified else "not verified",
                report.detail,
                extra={"message_id": "page_offlined", "fields": fields},
            )
            self.triggers.fire("page_retired", fields)
        elif r.result == "accounted":
            log.info("%s", report.detail, extra={"fields": fields})
        else:
            log.error(
                "offline of page %#x failed: %s",
                r.pfn,
                report.detail,
                extra={"message_id": "offline_failed", "fields": fields},
            )
            self.triggers.fire("offline_failed", fields)

    def _escalated(self, decision: Decision) -> None:
        self.tally.escalation(decision.mc, decision.label)
        fields = {"label": decision.label, "mc": decision.mc, "reason": decision.reason}
        log.error("%s", decision.reason, extra={"message_id": "dimm_escalation", "fields": fields})
        self.triggers.fire("dimm_escalation", fields)

    def _uncorrected(self, ev: Event) -> None:
        fields = {
            "source": ev.source,
            "severity": ev.severity,
            "phys_addr": None if ev.phys_addr is None else f"{ev.phys_addr:#x}",
            "pfn": None if ev.pfn is None else f"{ev.pfn:#x}",
            "label": ev.label,
            "mc": ev.mc,
        }
        log.error(
            "uncorrected memory error (%s) at %s on %s",
            ev.severity,
            fields["phys_addr"] or "unknown address",
            ev.label or "unknown DIMM",
            extra={"message_id": "uncorrected_error", "fields": fields},
        )
        self.triggers.fire("uncorrected_error", fields)

    # -- timers -----------------------------------------------------------------------------------

    def _expire(self) -> None:
        now = self.wall_clock()
        self.policy, decisions = expire(self.policy, now, self.params)
        self._carry_out(self._filter_retired(list(decisions)), now, origin="retry")
        self._arm_expire()

    def _arm_expire(self) -> None:
        """A one-shot timer for the policy's next retry or deferred offline, if any."""
        due = core_state.next_due(self.policy)
        self.timers.cancel("expire")
        if due is not None:
            delay = max(0.0, due - self.wall_clock()) / self.time_scale
            self.timers.once("expire", delay, self._expire)

    def _housekeeping(self) -> None:
        assert self.store is not None
        now = self.wall_clock()
        self.policy, decisions = expire(self.policy, now, self.params)
        self._carry_out(self._filter_retired(list(decisions)), now, origin="retry")
        self._checkpoint(now=now, force=True)
        pruned = self.store.prune_events(now)
        if pruned:
            log.debug("pruned %d events past retention", pruned)
        self._write_status_meta()
        self._publish()
        self._arm_expire()

    def _poll(self) -> None:
        if self.edac_source is not None and self.edac_source.fileno() is not None:
            self.edac_source.read_changes()
        self._sample_counters()
        self._write_status_meta()
        self._publish()

    def _sample_counters(self) -> None:
        if self.cfg.sources.edac_sysfs:
            if self.edac_source is None:
                self.edac_source = EdacSource(self.kfs)
                self.edac_source.open()
                fd = self.edac_source.fileno()
                if fd is not None:
                    self.selector.register(fd, selectors.EVENT_READ, self._poll)
            self.edac = self.edac_source.poll()
        if self.cfg.sources.memory_state:
            self.memstate = read_memory_state(self.kfs)

    def _watchdog(self) -> None:
        self.notifier.watchdog()

    def _arm_publish(self) -> None:
        # Under a storm, steps come faster than anyone scrapes: publish at most twice a second.
        if "publish" not in self.timers:
            self.timers.once("publish", 0.5, self._publish)

    def _publish(self) -> None:
        snapshot = self.tally.snapshot(
            now=self.wall_clock(),
            policy_state=self.policy,
            params=self.params,
            sources=self._source_statuses(),
            parse_failures={s.name: _parse_failures(s) for s in self.event_sources},
            edac=self.edac,
            memstate=self.memstate,
        )
        if self.exporter is not None:
            try:
                self.exporter.publish(snapshot)  # also writes the textfile when configured
            except OSError as e:
                log.error("cannot write the metrics textfile: %s", e)
        self.notifier.status(self.status_line())
        self._dirty = False

    def _source_statuses(self) -> list[SourceStatus]:
        out = [s.status() for s in self.event_sources]
        if self.edac_source is not None:
            out.append(self.edac_source.status())
        return out

    # -- persistence ------------------------------------------------------------------------------

    def _checkpoint(self, now: float | None = None, force: bool = False) -> None:
        """Save the policy state with the id of the last event it has seen (inside the caller's
        transaction when one is open)."""
        assert self.store is not None
        if not force and self._checkpointed_event_id == self._last_event_id and not self._dirty:
            return
        now = self.wall_clock() if now is None else now
        self.store.set_checkpoint(
            {"policy": to_plain(self.policy), "last_event_id": self._last_event_id}, now
        )
        self._checkpointed_event_id = self._last_event_id
        self._last_checkpoint = now

    def _write_status_meta(self) -> None:
        """What `hwpoisond status` shows without touching the kernel."""
        assert self.store is not None
        now = self.wall_clock()
        budget = core_state.budget_status(self.policy, self.params)
        sources = {
            s.name: {"state": "up" if s.available else "unavailable", "detail": s.reason}
            for s in self._source_statuses()
        }
        kernel: dict[str, object] = {}
        if self.memstate is not None:
            m = self.memstate
            kernel = {
                "hardware_corrupted_kb": None
                if m.hardware_corrupted_bytes is None
                else m.hardware_corrupted_bytes // 1024,
                "mem_total_bytes": m.mem_total_bytes,
                "sysctls": {
                    "vm.memory_failure_early_kill": m.memory_failure_early_kill,
                    "vm.memory_failure_recovery": m.memory_failure_recovery,
                    "vm.enable_soft_offline": m.enable_soft_offline,
                },
                "cec": {"present": m.cec.present, "threshold": m.cec.action_threshold},
                "soft_offline_supported": self.offliner.supported("soft"),
            }
        dimms = []
        if self.edac is not None:
            for c in self.edac.controllers:
                for d in c.dimms:
                    dimms.append(
                        {
                            "mc": c.mc,
                            "label": d.label,
                            "location": d.location,
                            "size_mb": d.size_mb,
                            "ce_count": d.ce_count,
                            "ue_count": d.ue_count,
                        }
                    )
                for row in c.csrows:
                    for ch in row.channels:
                        dimms.append(
                            {
                                "mc": c.mc,
                                "label": ch.dimm_label,
                                "location": f"csrow {row.csrow} channel {ch.channel}",
                                "size_mb": None,
                                "ce_count": ch.ce_count,
                                "ue_count": None,
                            }
                        )
        with self.store.transaction():
            self.store.set_meta(META_SOURCES, sources, now)
            self.store.set_meta(META_KERNEL, kernel, now)
            self.store.set_meta(
                META_BUDGET,
                {
                    "retired_bytes": budget.retired_bytes,
                    "max_retired_bytes": budget.max_retired_bytes,
                    "remaining_bytes": budget.remaining_bytes,
                    "offlines_last_hour": budget.offlines_last_hour,
                    "max_offlines_per_hour": budget.max_offlines_per_hour,
                    "exhausted": budget.exhausted,
                },
                now,
            )
            self.store.set_meta(META_DIMMS, dimms, now)
            self.store.set_meta(
                META_POLICY,
                {
                    "preset": self.cfg.policy.preset,
                    "action": self.params.action,
                    "ce_threshold": self.params.ce_threshold,
                    "window_seconds": self.params.window_seconds,
                },
                now,
            )
            self.store.set_meta(
                META_DAEMON,
                {
                    "pid": os.getpid(),
                    "version": __version__,
                    "started_at": self.tally.start_time_seconds,
                    "updated_at": now,
                },
                now,
            )

    # -- triggers ---------------------------------------------------------------------------------

    def _sync_trigger_fds(self) -> None:
        for fd in self.triggers.fds():
            if fd not in self._registered:
                self.selector.register(fd, selectors.EVENT_READ, self._reap_triggers)
                self._registered[fd] = "trigger"

    def _reap_triggers(self) -> None:
        # poll() closes the pidfds of finished scripts and may open new ones under the same
        # numbers: take every trigger fd out of the selector first, register the live ones after.
        for fd in [fd for fd, owner in self._registered.items() if owner == "trigger"]:
            self.selector.unregister(fd)
            del self._registered[fd]
        for outcome in self.triggers.poll():
            if outcome.refused:
                log.error("trigger %s not run: %s", outcome.path, outcome.refused)
            elif outcome.timed_out:
                log.error("trigger %s killed after %.0fs", outcome.path, outcome.duration_seconds)
            elif outcome.returncode:
                log.warning("trigger %s exited %s", outcome.path, outcome.returncode)
        self._sync_trigger_fds()

    # -- signals ----------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop after the current step, from any thread (as SIGTERM would)."""
        os.write(self.signals.write_fd, bytes([signal.SIGTERM]))

    def _on_signal(self) -> None:
        for signum in self.signals.drain():
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s, stopping", signal.Signals(signum).name)
                self._stop = True
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
        old = self.cfg
        self.cfg = new_cfg
        logging.getLogger("hwpoisond").setLevel(new_cfg.daemon.log_level.upper())
        total_ram = self.memstate.mem_total_bytes if self.memstate else None
        self.params = config_mod.policy_params(new_cfg, total_ram)
        self.offliner = Offliner(self.kfs, _executor_mode(new_cfg))
        self.triggers.close()
        self.triggers = _trigger_runner(new_cfg)
        for part in ("sources", "metrics", "store"):
            if getattr(old, part) != getattr(new_cfg, part):
                log.warning("config [%s] changed: takes effect at the next restart", part)
        self._write_status_meta()
        self._publish()


JOURNALD_CURSOR = "journald"
_RESULT_KINDS = frozenset({"offlined", "already_poisoned", "failed", "unsupported", "accounted"})
_UE = frozenset({"uncorrected", "fatal", "deferred"})


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
    stats = getattr(source, "parse_stats", None)
    if stats is None:
        return 0
    return sum(stats.malformed.values())


def _ensure_state_dir(state_dir: Path) -> None:
    """The state directory is 0700 (DESIGN.md): it holds what the daemon knows about the machine."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(e.errno or errno.EIO, f"cannot create state directory {state_dir}") from e
    os.chmod(state_dir, 0o700)
