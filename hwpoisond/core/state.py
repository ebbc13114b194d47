"""The policy state: what the core remembers between events, its plain-data form and read views.

Rule: this module stores and exports; the decisions are made in policy.py.

Ownership (linear use). A `PolicyState` is an owned, mutable container, so that decide() costs
O(1) per event instead of copying the page table: decide()/on_result()/expire() CONSUME the state
they are given and return the state to use next (today the same object, updated in place). A
caller must therefore use only the returned state and never keep an old reference as a snapshot:
to keep one, take `to_plain(state)` (plain JSON-safe data) or `copy_state(state)`. Everything that
leaves the core is frozen: `Decision`s, `PageRecord`s, `RetiredPage`s and the other views.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Literal

from hwpoisond.core.model import PAGE_SIZE_BYTES, Decision, OfflineAction
from hwpoisond.core.params import PolicyParams

PageStatus = Literal[
    "over",  # over threshold, no action taken (action off, futile unit, retired-bytes budget)
    "deferred",  # over threshold, waiting for the offline-rate budget
    "pending",  # an offline decision is out, no result yet
    "retry",  # a soft/hard attempt failed, the next one waits for its back-off
    "retired",  # offlined by us
    "accounted",  # action "account": recorded, nothing written to the kernel
    "kernel_poisoned",  # the kernel poisoned or offlined it (memory_failure, CEC, already poisoned)
    "failed",  # every attempt failed; left alone
]

#: Statuses of a page that must never be offlined again.
FINAL_STATUSES = frozenset({"retired", "accounted", "kernel_poisoned", "failed"})

#: Sub-threshold counting entry: (ce_count, first_seen, last_seen, last_source, window_times,
#: bucket_count, bucket_start). A tuple because it is replaced on every event (cheapest frozen
#: value in CPython); exported as a `PageRecord` by `page()`.
Hot = tuple[int, float, float, str, tuple[float, ...], int, float]

#: How many recent uncorrected errors are kept for `status` (the counters keep everything).
RECENT_UE_KEPT = 256
#: Row page lists stop growing here: a row fault is a handful of pages; more is a bigger fault.
ROW_PAGES_KEPT = 64


@dataclass(frozen=True, slots=True)
class PageRecord:
    """One page the policy knows about. `units` are the DIMM/bank/controller keys it belongs to."""

    pfn: int
    status: PageStatus | Literal["tracking"]
    ce_count: int
    first_seen: float
    last_seen: float
    at: float
    reason: str = ""
    action: OfflineAction | None = None
    attempt: int = 0
    reserved: bool = False
    units: tuple[str, ...] = ()
    hot: Hot | None = None


@dataclass(frozen=True, slots=True)
class RetiredPage:
    pfn: int
    at: float
    action: OfflineAction
    reason: str


@dataclass(frozen=True, slots=True)
class UncorrectedError:
    at: float
    pfn: int | None
    severity: str
    label: str | None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    retired_bytes: int
    max_retired_bytes: int | None
    remaining_bytes: int | None
    offlines_last_hour: int
    max_offlines_per_hour: int | None
    exhausted: bool


class Unit:
    """Per DIMM / bank / row / controller aggregate. `members` are distinct erroring pfns (DIMM,
    row) or rows (bank), capped just past the limit that matters; `hour`/`ces`/`pages` count the
    current clock hour for storm detection."""

    __slots__ = ("bad", "ces", "hour", "members", "pages", "ue_count")

    def __init__(self) -> None:
        self.members: list[int] | set[int] = set()
        self.bad = False
        self.hour = -1
        self.ces = 0
        self.pages = 0
        self.ue_count = 0


class PolicyState:
    """See the module docstring: owned and mutated by the policy functions, linear use only."""

    __slots__ = (
        "action_times",
        "banks",
        "budget_bytes_flagged",
        "budget_rate_flagged",
        "ce_total",
        "cec",
        "cec_clean_index",
        "cec_decay_count",
        "deferred",
        "dimms",
        "escalations",
        "held",
        "hot",
        "mcs",
        "not_offlinable_events",
        "now",
        "pages",
        "retired_bytes",
        "retries",
        "rows",
        "ue_by_unit",
        "ue_recent",
        "ue_total",
        "untracked_events",
    )

    def __init__(self) -> None:
        self.now: float | None = None
        # OrderedDicts: LRU order with O(1) move_to_end/popitem (a plain dict degrades to O(n)
        # per pop-front when used as a queue).
        self.hot: OrderedDict[int, Hot] = OrderedDict()
        self.pages: dict[int, PageRecord] = {}
        # Pages held back ("over", not reserved), oldest first: the records that may make room
        # when `pages` is at its bound (PolicyParams.max_page_records).
        self.held: OrderedDict[int, None] = OrderedDict()
        # Events on pages that found no room in `pages`: counted, not decided.
        self.untracked_events = 0
        # Corrected errors whose page can never be offlined (page 0: the driver's unknown
        # address): counted for their DIMM and controller, never for a page.
        self.not_offlinable_events = 0
        self.cec: dict[int, int] = {}
        self.cec_decay_count = 0
        self.cec_clean_index: int | None = None
        self.rows: OrderedDict[str, Unit] = OrderedDict()
        self.banks: OrderedDict[str, Unit] = OrderedDict()
        self.dimms: OrderedDict[str, Unit] = OrderedDict()
        self.mcs: OrderedDict[str, Unit] = OrderedDict()
        self.escalations: dict[str, Decision] = {}
        self.retired_bytes = 0
        self.action_times: deque[float] = deque()
        self.budget_bytes_flagged = False
        self.budget_rate_flagged = False
        self.deferred: dict[int, None] = {}
        self.retries: list[tuple[float, int]] = []
        self.ce_total = 0
        self.ue_total = 0
        self.ue_by_unit: dict[str, int] = {}
        self.ue_recent: deque[UncorrectedError] = deque(maxlen=RECENT_UE_KEPT)


def new_state() -> PolicyState:
    return PolicyState()


# ---- read views (cheap: O(1) or O(pages kept), never O(events)) --------------------------------


def tracked_page_count(state: PolicyState) -> int:
    """Pages with live counting state (sub-threshold) plus pages kept for what happened to them."""
    return len(state.hot) + len(state.cec) + len(state.pages)


def page(state: PolicyState, pfn: int) -> PageRecord | None:
    rec = state.pages.get(pfn)
    if rec is not None:
        return rec
    hot = state.hot.get(pfn)
    if hot is not None:
        return PageRecord(pfn, "tracking", hot[0], hot[1], hot[2], hot[2], hot=hot)
    return None


def pages_over_threshold(state: PolicyState) -> list[PageRecord]:
    """Pages over threshold not (yet) retired: over, deferred, pending, retry."""
    return [r for r in state.pages.values() if r.status not in FINAL_STATUSES]


def retired_pages(state: PolicyState) -> list[RetiredPage]:
    return [
        RetiredPage(r.pfn, r.at, r.action or "soft", r.reason)
        for r in state.pages.values()
        if r.status == "retired"
    ]


def kernel_poisoned_pages(state: PolicyState) -> list[int]:
    return [r.pfn for r in state.pages.values() if r.status == "kernel_poisoned"]


def dimm_bad_pages(state: PolicyState) -> dict[str, int]:
    """Distinct erroring pages per DIMM (capped just past dimm_pages_limit)."""
    return {key: len(u.members) for key, u in state.dimms.items()}


def escalations(state: PolicyState) -> list[Decision]:
    return list(state.escalations.values())


def uncorrected_counts(state: PolicyState) -> dict[str, int]:
    """Uncorrected (incl. deferred/fatal) memory errors: "total" and per DIMM/controller key."""
    return {"total": state.ue_total, **state.ue_by_unit}


def recent_uncorrected(state: PolicyState) -> list[UncorrectedError]:
    return list(state.ue_recent)


def budget_status(state: PolicyState, params: PolicyParams) -> BudgetStatus:
    limit = params.budget.max_retired_bytes
    rate = params.budget.max_offlines_per_hour
    now = state.now if state.now is not None else 0.0
    recent = sum(1 for t in state.action_times if t > now - 3600.0)
    remaining = None if limit is None else max(0, limit - state.retired_bytes)
    exhausted = (remaining is not None and remaining < PAGE_SIZE_BYTES) or (
        rate is not None and recent >= rate
    )
    return BudgetStatus(state.retired_bytes, limit, remaining, recent, rate, exhausted)


def next_due(state: PolicyState) -> float | None:
    """The earliest time expire() has something to do (a retry, a deferred offline), or None."""
    due: float | None = state.retries[0][0] if state.retries else None
    if state.deferred and state.action_times:
        free_at = state.action_times[0] + 3600.0
        due = free_at if due is None else min(due, free_at)
    return due


# ---- plain data ---------------------------------------------------------------------------------


def _decision_plain(d: Decision) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "at": d.at,
        "reason": d.reason,
        "pfn": d.pfn,
        "action": d.action,
        "attempt": d.attempt,
        "label": d.label,
        "mc": d.mc,
    }


def _unit_plain(u: Unit) -> list[Any]:
    members = u.members if isinstance(u.members, list) else sorted(u.members)
    return [list(members), isinstance(u.members, list), u.bad, u.hour, u.ces, u.pages, u.ue_count]


def _unit_from(v: list[Any]) -> Unit:
    u = Unit()
    u.members = [int(m) for m in v[0]] if v[1] else {int(m) for m in v[0]}
    u.bad, u.hour, u.ces, u.pages, u.ue_count = bool(v[2]), int(v[3]), int(v[4]), int(v[5]), v[6]
    return u


def _hot_plain(h: Hot) -> list[Any]:
    return [h[0], h[1], h[2], h[3], list(h[4]), h[5], h[6]]


def _hot_from(v: list[Any]) -> Hot:
    return (int(v[0]), v[1], v[2], str(v[3]), tuple(v[4]), int(v[5]), v[6])


def _record_plain(r: PageRecord) -> list[Any]:
    return [
        r.pfn,
        r.status,
        r.ce_count,
        r.first_seen,
        r.last_seen,
        r.at,
        r.reason,
        r.action,
        r.attempt,
        r.reserved,
        list(r.units),
        None if r.hot is None else _hot_plain(r.hot),
    ]


def _record_from(v: list[Any]) -> PageRecord:
    return PageRecord(
        int(v[0]),
        v[1],
        int(v[2]),
        v[3],
        v[4],
        v[5],
        str(v[6]),
        v[7],
        int(v[8]),
        bool(v[9]),
        tuple(v[10]),
        None if v[11] is None else _hot_from(v[11]),
    )


PLAIN_VERSION = 1


def to_plain(state: PolicyState) -> dict[str, Any]:
    """JSON-safe data (dicts, lists, str, int, float, bool, None) that from_plain() restores to a
    state making exactly the same decisions; dict orders (LRU order) are kept as list order."""
    return {
        "version": PLAIN_VERSION,
        "now": state.now,
        "hot": [[pfn, _hot_plain(h)] for pfn, h in state.hot.items()],
        "pages": [_record_plain(r) for r in state.pages.values()],
        "cec": [[pfn, full] for pfn, full in state.cec.items()],
        "cec_decay_count": state.cec_decay_count,
        "cec_clean_index": state.cec_clean_index,
        "rows": [[k, _unit_plain(u)] for k, u in state.rows.items()],
        "banks": [[k, _unit_plain(u)] for k, u in state.banks.items()],
        "dimms": [[k, _unit_plain(u)] for k, u in state.dimms.items()],
        "mcs": [[k, _unit_plain(u)] for k, u in state.mcs.items()],
        "escalations": [[k, _decision_plain(d)] for k, d in state.escalations.items()],
        "retired_bytes": state.retired_bytes,
        "action_times": list(state.action_times),
        "budget_bytes_flagged": state.budget_bytes_flagged,
        "budget_rate_flagged": state.budget_rate_flagged,
        "deferred": list(state.deferred),
        "retries": [[due, pfn] for due, pfn in state.retries],
        "ce_total": state.ce_total,
        "ue_total": state.ue_total,
        "ue_by_unit": dict(state.ue_by_unit),
        "ue_recent": [[e.at, e.pfn, e.severity, e.label] for e in state.ue_recent],
        "untracked_events": state.untracked_events,
        "not_offlinable_events": state.not_offlinable_events,
        "held": list(state.held),
    }


class PlainStateError(ValueError):
    """The plain data is not a state this version can restore."""


def from_plain(d: dict[str, Any]) -> PolicyState:
    if d.get("version") != PLAIN_VERSION:
        raise PlainStateError(f"unsupported policy state version {d.get('version')!r}")
    try:
        s = PolicyState()
        s.now = d["now"]
        s.hot = OrderedDict((int(pfn), _hot_from(h)) for pfn, h in d["hot"])
        s.pages = {int(v[0]): _record_from(v) for v in d["pages"]}
        s.cec = {int(pfn): int(full) for pfn, full in d["cec"]}
        s.cec_decay_count = int(d["cec_decay_count"])
        s.cec_clean_index = d["cec_clean_index"]
        s.rows = OrderedDict((k, _unit_from(u)) for k, u in d["rows"])
        s.banks = OrderedDict((k, _unit_from(u)) for k, u in d["banks"])
        s.dimms = OrderedDict((k, _unit_from(u)) for k, u in d["dimms"])
        s.mcs = OrderedDict((k, _unit_from(u)) for k, u in d["mcs"])
        s.escalations = {k: Decision(**v) for k, v in d["escalations"]}
        s.retired_bytes = int(d["retired_bytes"])
        s.action_times = deque(d["action_times"])
        s.budget_bytes_flagged = bool(d["budget_bytes_flagged"])
        s.budget_rate_flagged = bool(d["budget_rate_flagged"])
        s.deferred = dict.fromkeys(int(p) for p in d["deferred"])
        s.retries = [(due, int(pfn)) for due, pfn in d["retries"]]
        s.ce_total = int(d["ce_total"])
        s.ue_total = int(d["ue_total"])
        s.ue_by_unit = {str(k): int(v) for k, v in d["ue_by_unit"].items()}
        s.ue_recent = deque((UncorrectedError(*e) for e in d["ue_recent"]), maxlen=RECENT_UE_KEPT)
        # Absent from checkpoints written before the bound existed: nothing was untracked then.
        s.untracked_events = int(d.get("untracked_events", 0))
        s.not_offlinable_events = int(d.get("not_offlinable_events", 0))
        if "held" in d:
            s.held = OrderedDict.fromkeys(int(pfn) for pfn in d["held"])
        else:
            s.held = OrderedDict(
                (pfn, None)
                for pfn, rec in sorted(s.pages.items(), key=lambda kv: kv[1].at)
                if rec.status == "over" and not rec.reserved
            )
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise PlainStateError(f"malformed policy state: {e!r}") from None
    return s


def copy_state(state: PolicyState) -> PolicyState:
    """An independent copy (the way to keep a snapshot under the linear-use rule)."""
    return from_plain(to_plain(state))
