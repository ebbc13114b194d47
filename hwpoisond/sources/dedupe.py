"""Cross-source dedupe: one kernel error seen through two interfaces becomes one event.

Rule: pure and bounded (no I/O, no clock; times come from the events), and it only ever merges an
event with its *counterpart* from the other interface, never two events of the same source: two
identical `mc_event`s a second apart are two errors, not one.

The kernel reports the same error twice when both tracefs and the kernel log are read:
- `ras:mc_event` and the `EDAC MCn: ...` line, both from edac_raw_mc_handle_error()
  (drivers/edac/edac_mc.c): same mc, severity, error count and address (the trace prints
  page << PAGE_SHIFT | offset, the log page and offset separately). The location text differs
  (`0:0:-1` vs `channel:0 slot:0`), so it is not compared.
- `mce:mce_record` and the `mce: [Hardware Error]` record, both from one struct mce
  (arch/x86/kernel/cpu/mce/core.c): same cpu, bank and MCi_STATUS.
- `ras:memory_failure_event` and `Memory failure: 0x<pfn>: recovery action for ...: <result>`,
  both from action_result() (mm/memory-failure.c): same pfn and result.

Times: live sources give wall-clock seconds (tracefs: trace clock + boot time; journald: the
entry's time less journald's ingestion lag), so both copies of an error land within a fraction
of a second; `window_seconds` absorbs the rest (btime's one-second resolution, a clock step). An
event without a time matches a counterpart by key alone.
Counts: an EDAC report with error_count N is one report in both places, with the same N; the key
includes the count, and the admitted event keeps its count.
The first copy to arrive is admitted and the second dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from hwpoisond.core.model import Event

_FAMILY = {
    "mc_event": "edac",
    "kmsg_edac": "edac",
    "mce_record": "mce",
    "kmsg_mce": "mce",
    "memory_failure_event": "memory_failure",
    "kmsg_memory_failure": "memory_failure",
}
_COUNTERPART = {
    "mc_event": "kmsg_edac",
    "kmsg_edac": "mc_event",
    "mce_record": "kmsg_mce",
    "kmsg_mce": "mce_record",
    "memory_failure_event": "kmsg_memory_failure",
    "kmsg_memory_failure": "memory_failure_event",
}

DedupeKey = tuple[object, ...]


def has_counterpart(event: Event) -> bool:
    # A process the kernel killed over a poisoned page is only ever in the log.
    return event.source in _COUNTERPART and event.kind != "process_killed"


def dedupe_key(event: Event) -> DedupeKey | None:
    """What two copies of one error share; None for sources with no counterpart."""
    family = _FAMILY.get(event.source)
    if event.kind == "process_killed":
        return None
    if family == "edac":
        where: object = event.phys_addr if event.phys_addr is not None else event.label
        return (family, event.mc, event.severity, event.count, where)
    if family == "mce":
        return (family, event.cpu, event.bank, event.status)
    if family == "memory_failure":
        return (family, event.pfn, event.result)
    return None


@dataclass(slots=True)
class _Seen:
    source: str
    key: DedupeKey
    time: float | None
    matched: bool = False


class Deduper:
    """`admit(event)` is False for the second copy of an error already admitted within
    `window_seconds`.

    Memory is bounded. An entry is forgotten once its counterpart source has delivered an event
    more than a window later: sources deliver in time order, so nothing matching can follow. This
    is per source on purpose: the journal can lag tracefs by many seconds in a storm, and the
    newest time overall says nothing about what the lagging source has still to deliver. At most
    `max_entries` are kept in any case (oldest first out), which also bounds a source whose
    counterpart is not running."""

    def __init__(self, window_seconds: float, max_entries: int = 4096) -> None:
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._by_key: dict[tuple[str, DedupeKey], deque[_Seen]] = {}
        self._order: deque[_Seen] = deque()
        self._latest: dict[str, float] = {}  # newest event time per source
        #: Dropped copies per family, for metrics.
        self.duplicates: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._order)

    def admit(self, event: Event) -> bool:
        key = dedupe_key(event)
        if key is None:
            return True
        self._note_time(event)
        self._expire()
        if self._take(_COUNTERPART[event.source], key, event.time) is not None:
            family = _FAMILY[event.source]
            self.duplicates[family] = self.duplicates.get(family, 0) + 1
            return False
        self._add(event, key)
        return True

    def remember(self, event: Event) -> None:
        """Take `event` as admitted without matching it (an event recorded before a restart):
        its counterpart, when it comes, is dropped."""
        key = dedupe_key(event)
        if key is not None:
            self._note_time(event)
            self._add(event, key)

    def _note_time(self, event: Event) -> None:
        if event.time is not None:
            self._latest[event.source] = max(self._latest.get(event.source, event.time), event.time)

    def _add(self, event: Event, key: DedupeKey) -> None:
        entry = _Seen(event.source, key, event.time)
        self._by_key.setdefault((event.source, key), deque()).append(entry)
        self._order.append(entry)
        self._expire()

    def _take(self, source: str, key: DedupeKey, time: float | None) -> _Seen | None:
        """Consume the oldest unmatched copy from `source` within the window."""
        queue = self._by_key.get((source, key))
        if not queue:
            return None
        for seen in queue:
            if time is None or seen.time is None or abs(seen.time - time) <= self.window_seconds:
                seen.matched = True
                queue.remove(seen)
                if not queue:
                    del self._by_key[(source, key)]
                return seen
        return None

    def _expire(self) -> None:
        while self._order:
            oldest = self._order[0]
            too_many = len(self._order) > self.max_entries
            counterpart_at = self._latest.get(_COUNTERPART[oldest.source])
            too_old = (
                counterpart_at is not None
                and oldest.time is not None
                and oldest.time < counterpart_at - self.window_seconds
            )
            if not (oldest.matched or too_many or too_old):
                return
            self._order.popleft()
            if not oldest.matched:
                queue = self._by_key.get((oldest.source, oldest.key))
                if queue is not None:
                    queue.remove(oldest)
                    if not queue:
                        del self._by_key[(oldest.source, oldest.key)]
