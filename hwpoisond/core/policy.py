"""The policy: events and action results in, decisions out; pure and deterministic.

Rule: no I/O, no clock, no logging. Time arrives on the event (`Event.time`), on the result
(`ActionResult.at`) or as `now` for expire(). decide()/on_result()/expire() consume the state they
are given and return the one to use next (see hwpoisond.core.state for the linear-use rule);
decide() is O(1) amortised per event.

Rules, in the order they apply to a corrected error on a page:
1. only sources in `params.sources` count; a second report of the same error from another source
   within `dedupe_seconds` counts once;
2. storms: a controller (or DIMM) with >= storm_ce_per_hour CEs over >= storm_distinct_pages
   distinct pages in one clock hour has no page locality (channel/controller fault): escalate;
3. units already escalated are futile: their pages are no longer tracked or retired;
4. per-page recurrence (params.counter) decides when a page crosses the threshold;
5. futility: a bank with more than bank_rows_limit distinct erroring rows, or a DIMM with more
   than dimm_pages_limit distinct erroring pages, is escalated ("replace DIMM ...");
6. rows: row_pages_threshold distinct erroring pages in one DRAM row make the row the unit: its
   known pages are retired now, the others on their first CE;
7. every offline passes the budget (retired bytes, offlines per rolling hour); when exhausted one
   `budget_exhausted` decision is emitted per episode and pages keep being counted;
8. failed attempts are retried by expire() with back-off `retry_backoff_seconds x 2^(k-1)`, then
   soft-then-hard falls back to hard; pages the kernel poisoned are never acted on.
"""

from __future__ import annotations

import errno as errno_mod
import heapq

from hwpoisond.core.model import (
    PAGE_SHIFT,
    PAGE_SIZE_BYTES,
    ActionResult,
    Decision,
    Event,
    OfflineAction,
)
from hwpoisond.core.params import CEC_COUNT_MASK, CEC_MAX_ELEMS, PolicyParams
from hwpoisond.core.state import (
    FINAL_STATUSES,
    ROW_PAGES_KEPT,
    Hot,
    PageRecord,
    PageStatus,
    PolicyState,
    UncorrectedError,
    Unit,
)

Decisions = tuple[Decision, ...]
NONE: Decisions = ()
HOUR_SECONDS = 3600.0
_UE_SEVERITIES = frozenset({"uncorrected", "fatal", "deferred"})
_KERNEL_OFFLINE_KINDS = frozenset({"memory_failure", "soft_offline", "cec_offline"})
#: cec.c: DECAY_BITS = 2, CLEAN_ELEMS = MAX_ELEMS >> DECAY_BITS, COUNT_BITS = 10.
_CEC_GEN_SHIFT = 10
_CEC_GEN_MAX = 3
_CEC_CLEAN_ELEMS = CEC_MAX_ELEMS >> 2


def decide(state: PolicyState, event: Event, params: PolicyParams) -> tuple[PolicyState, Decisions]:
    """Account one event; return the state to use next and what to do now."""
    t = event.time
    if t is None:
        t = state.now if state.now is not None else 0.0
    elif state.now is None or t > state.now:
        state.now = t
    kind = event.kind
    if kind == "memory_error":
        severity = event.severity
        if severity == "corrected":
            return state, _on_ce(state, event, t, params)
        if severity in _UE_SEVERITIES:
            _on_ue(state, event, t)
        return state, NONE
    if kind in _KERNEL_OFFLINE_KINDS:
        _on_kernel_offline(state, event, t)
    return state, NONE


def on_result(
    state: PolicyState, result: ActionResult, params: PolicyParams
) -> tuple[PolicyState, Decisions]:
    """Learn what the executor observed after an `offline` decision."""
    t = result.at
    if state.now is None or t > state.now:
        state.now = t
    pfn = result.pfn
    rec = state.pages.get(pfn)
    outcome = result.result
    if (
        rec is None
        or rec.status != "pending"
        or rec.action != result.action
        or rec.attempt != result.attempt
    ):
        # A stale or repeated result; the kernel's poisoning is still a fact worth keeping.
        if outcome == "already_poisoned" and (rec is None or rec.status not in FINAL_STATUSES):
            _mark_kernel_poisoned(state, pfn, t, "kernel reports the page already poisoned")
        return state, NONE
    if outcome == "offlined" and result.verified is not False:
        _set(state, rec, "retired", t, rec.reason)
        return state, NONE
    if outcome == "accounted":
        _set(state, rec, "accounted", t, rec.reason)
        return state, NONE
    if outcome == "already_poisoned":
        _mark_kernel_poisoned(state, pfn, t, "kernel reports the page already poisoned")
        return state, NONE
    # failed, unsupported, or a write that succeeded while kpageflags shows no HWPOISON.
    why = _errno_name(result.errno) if outcome != "offlined" else "not poisoned afterwards"
    attempts = 1 + params.retry_max
    out: list[Decision] = []
    if outcome != "unsupported" and rec.attempt < attempts:
        due = t + params.retry_backoff_seconds * (2 ** (rec.attempt - 1))
        _set(state, rec, "retry", t, f"{rec.action} offline attempt {rec.attempt} failed: {why}")
        heapq.heappush(state.retries, (due, pfn))
    elif rec.action == "soft" and params.action == "soft-then-hard":
        reason = f"soft offline failed ({why}) after {rec.attempt} attempt(s): hard offline"
        _issue(state, params, rec, "hard", 1, reason, t, out)
    else:
        _give_up(state, params, rec, t, f"{rec.action} offline failed: {why}")
    return state, tuple(out)


def expire(state: PolicyState, now: float, params: PolicyParams) -> tuple[PolicyState, Decisions]:
    """Let time pass: due retries and rate-deferred offlines go out, stale counts are forgotten."""
    if state.now is None or now > state.now:
        state.now = now
    out: list[Decision] = []
    if params.counter == "cec":
        _cec_timer(state, now, params)
    esc = state.escalations
    while state.retries and state.retries[0][0] <= now:
        due, pfn = heapq.heappop(state.retries)
        rec = state.pages.get(pfn)
        if rec is None or rec.status != "retry":
            continue
        if esc and _blocked(esc, rec.units):
            _release(state, rec)
            _set(state, state.pages[pfn], "over", due, "futile: unit escalated")
            continue
        attempts = 1 + params.retry_max
        attempt = rec.attempt + 1
        reason = f"{rec.action} offline retry {attempt}/{attempts} ({rec.reason})"
        assert rec.action is not None
        _issue(state, params, rec, rec.action, attempt, reason, due, out)
    _drain_deferred(state, params, now, out)
    if params.counter != "cec":
        _forget_idle(state, now - params.window_seconds)
    return state, tuple(out)


# ---- corrected errors ---------------------------------------------------------------------------


def _on_ce(state: PolicyState, ev: Event, t: float, p: PolicyParams) -> Decisions:
    if ev.source not in p.sources:
        return NONE
    pfn = ev.pfn
    if pfn is None and ev.phys_addr is not None:
        pfn = ev.phys_addr >> PAGE_SHIFT
    if pfn == 0:
        # EDAC drivers print page 0 (with or without an offset) when they do not know the
        # address; page 0 is firmware's on every platform we run on, never a page to retire. The
        # error still counts for its DIMM and controller.
        pfn = None
        state.not_offlinable_events += 1
    count = ev.count
    state.ce_total += count
    dimm_key = _dimm_key(ev)
    mc_key = f"mc{ev.mc}" if ev.mc is not None else dimm_key
    hot = state.hot.get(pfn) if pfn is not None else None
    esc = state.escalations
    out: list[Decision] = []

    if p.storm_ce_per_hour and mc_key is not None:
        u = _unit(state.mcs, mc_key, p, rows=False)
        hour = int(t // HOUR_SECONDS)
        if u.hour != hour:
            u.hour, u.ces, u.pages = hour, 0, 0
        u.ces += count
        if pfn is not None:
            if hot is not None:
                if int(hot[2] // HOUR_SECONDS) != hour:
                    u.pages += 1  # first CE on this page in this hour
            elif pfn not in state.pages and pfn not in state.cec:
                u.pages += 1  # a page never seen (or forgotten)
        if not u.bad and u.ces >= p.storm_ce_per_hour and u.pages >= p.storm_distinct_pages:
            u.bad = True
            reason = (
                f"corrected-error storm on {mc_key}: {u.ces} CEs over {u.pages} distinct pages "
                "in one hour without page locality (channel/controller fault); replace DIMM "
                f"{ev.label or dimm_key or mc_key} or service the memory controller"
            )
            _escalate(state, "mc:" + mc_key, ev, t, reason, out)

    if pfn is None:
        return tuple(out) if out else NONE

    dram = ev.dram
    bank_key = row_key = None
    if dimm_key is not None and dram is not None and dram.bank is not None:
        bank_key = f"{dimm_key}/rank{dram.rank}/bg{dram.bank_group}/bank{dram.bank}"
        if dram.row is not None:
            row_key = f"{bank_key}/row{dram.row}"
    units = _units(dimm_key, bank_key, mc_key)
    if esc and _blocked(esc, units):
        # Futile: forget the page's count too. The mce_record twin of this error carries only
        # an address (no DIMM), so it would otherwise keep counting here and retire the page.
        state.hot.pop(pfn, None)
        return tuple(out) if out else NONE

    crossed = ""
    counter = p.counter
    if pfn in state.pages:
        pass  # already over threshold (pending, retired, poisoned ...): units still learn of it
    elif len(state.pages) >= p.max_page_records and not _make_room(state):
        state.untracked_events += 1  # no record could be kept for it: counted, not decided
    elif counter == "window":
        crossed = _count_window(state, pfn, hot, ev, t, count, p)
    elif counter == "cec":
        crossed = _count_cec(state, pfn, t, p)
    else:
        crossed = _count_bucket(state, pfn, hot, ev, t, count, p)

    if dimm_key is not None and p.dimm_pages_limit:
        u = _unit(state.dimms, dimm_key, p, rows=False)
        members = u.members
        assert isinstance(members, set)
        if len(members) <= p.dimm_pages_limit:
            members.add(pfn)
            if not u.bad and len(members) > p.dimm_pages_limit:
                u.bad = True
                reason = f"replace DIMM {ev.label or dimm_key}: {len(members)} distinct bad pages"
                _escalate(state, "dimm:" + dimm_key, ev, t, reason, out)
                for member in members:
                    state.hot.pop(member, None)  # futile now (see the blocked case above)
    if bank_key is not None and p.bank_rows_limit:
        assert dram is not None
        u = _unit(state.banks, bank_key, p, rows=False)
        members = u.members
        assert isinstance(members, set)
        if len(members) <= p.bank_rows_limit:
            members.add(dram.row if dram.row is not None else pfn)
            if not u.bad and len(members) > p.bank_rows_limit:
                u.bad = True
                what = "rows" if dram.row is not None else "pages"
                reason = (
                    f"replace DIMM {ev.label or dimm_key}: {len(members)} distinct bad {what} "
                    f"in rank {dram.rank} bank {dram.bank} (bank or column fault)"
                )
                _escalate(state, "bank:" + bank_key, ev, t, reason, out)
    if row_key is not None and p.row_pages_threshold:
        u = _unit(state.rows, row_key, p, rows=True)
        row_pages = u.members
        assert isinstance(row_pages, list)
        if pfn not in row_pages and len(row_pages) < ROW_PAGES_KEPT:
            row_pages.append(pfn)
        if u.bad:
            _want(state, p, pfn, t, f"row {row_key} is bad: retire its pages", units, out)
        elif len(row_pages) >= p.row_pages_threshold:
            u.bad = True
            reason = f"row {row_key}: {len(row_pages)} distinct bad pages"
            for member in tuple(row_pages):
                _want(state, p, member, t, reason, units, out)
    if crossed:
        _want(state, p, pfn, t, crossed, units, out)
    return tuple(out) if out else NONE


def _count_window(
    state: PolicyState, pfn: int, hot: Hot | None, ev: Event, t: float, count: int, p: PolicyParams
) -> str:
    """Exact sliding window: N CEs within T seconds, whatever order they arrive in."""
    n, window = p.ce_threshold, p.window_seconds
    times: tuple[float, ...] = ()
    if hot is None:
        ce_count, first = 0, t
    else:
        ce_count, first, last_seen, last_source, times, _, _ = hot
        if last_source != ev.source and p.dedupe_seconds and abs(t - last_seen) <= p.dedupe_seconds:
            state.hot.move_to_end(pfn)
            return ""
    added = count if count < n else n
    added = max(added, 1)  # some firmware reports error_count 0 for a real error
    if not times or t >= times[-1]:
        new_times = (*times, *(t,) * added)
    else:
        new_times = tuple(sorted((*times, *(t,) * added)))
    # Forget CEs that left the window of the newest one.
    cutoff = new_times[-1] - window
    if new_times[0] < cutoff:
        new_times = tuple(x for x in new_times if x >= cutoff)
    first = min(first, t)
    last = t if hot is None else max(hot[2], t)
    if len(new_times) >= n:
        for i in range(len(new_times) - n + 1):
            if new_times[i + n - 1] - new_times[i] <= window:
                state.hot.pop(pfn, None)
                state.pages[pfn] = PageRecord(
                    pfn, "over", ce_count + count, first, last, t, units=(), hot=None
                )
                return f"{n} corrected errors within {window:g}s (threshold {n}/{window:g}s)"
    _put_hot(state, pfn, (ce_count + count, first, last, ev.source, new_times, 0, 0.0), p)
    return ""


def _count_bucket(
    state: PolicyState, pfn: int, hot: Hot | None, ev: Event, t: float, count: int, p: PolicyParams
) -> str:
    """rasdaemon's page_record() or mcelog's __bucket_account(), in whole seconds (time_t)."""
    n, cycle = p.ce_threshold, int(p.window_seconds)
    now = int(t)
    if hot is None:
        ce_count, first, last, level, start = 0, t, t, 0, now
    else:
        ce_count, first, last, _, _, level, start_f = hot
        start = int(start_f)
        last = max(last, t)
    if p.counter == "rasdaemon":
        if start == 0:
            start = now  # ras_record_page_error(): "if (!pr->start) pr->start = time"
        period = now - start
        if period < 0 or period >= cycle:
            # `unsigned long period`: an earlier time wraps to a huge period and drains all.
            tolerate = level if period < 0 else int((period / cycle) * n)
            level -= min(tolerate, level)
            start = now
        level += count
    else:
        diff = now - start  # mcelog bucket_age(): `long diff`, no ageing backwards
        if diff >= cycle:
            age = int((diff / cycle) * n)
            level = 0 if age > level else level - age
            start = now
        level += 1  # account_page_error(): __bucket_account(..., 1, t)
    crossed = level >= n
    if crossed:
        level = 0  # both: "excess += count; count = 0"
    entry: Hot = (ce_count + count, min(first, t), last, ev.source, (), level, float(start))
    if crossed:
        state.hot.pop(pfn, None)
        state.pages[pfn] = PageRecord(pfn, "over", entry[0], entry[1], last, t, hot=entry)
        return f"corrected errors reached {n} per {cycle}s ({p.preset} leaky bucket)"
    _put_hot(state, pfn, entry, p)
    return ""


def _count_cec(state: PolicyState, pfn: int, t: float, p: PolicyParams) -> str:
    """drivers/ras/cec.c cec_add_elem(): array entries are gen<<10 | count, sorted by pfn."""
    _cec_timer(state, t, p)
    arr = state.cec
    if len(arr) == CEC_MAX_ELEMS:
        # del_lru_elem_unlocked(): the smallest FULL_COUNT, the lowest pfn on ties; done before
        # the lookup, so it runs even when pfn is already in the array.
        least = min(arr.values())
        del arr[min([k for k, v in arr.items() if v == least])]
    full = (arr.get(pfn, 0) | (_CEC_GEN_MAX << _CEC_GEN_SHIFT)) + 1
    threshold = min(p.ce_threshold, CEC_COUNT_MASK)  # action_threshold_set() caps it
    if full & CEC_COUNT_MASK >= threshold:
        arr.pop(pfn, None)
        state.pages[pfn] = PageRecord(pfn, "over", threshold, t, t, t)
        return f"kernel CEC count reached action_threshold {threshold}"
    arr[pfn] = full
    state.cec_decay_count += 1
    if state.cec_decay_count >= _CEC_CLEAN_ELEMS:
        _cec_spring_clean(state)
    return ""


def _cec_spring_clean(state: PolicyState) -> None:
    arr = state.cec
    for pfn, full in arr.items():
        gen = full >> _CEC_GEN_SHIFT
        if gen:
            arr[pfn] = ((gen - 1) << _CEC_GEN_SHIFT) | (full & CEC_COUNT_MASK)
    state.cec_decay_count = 0


def _cec_timer(state: PolicyState, t: float, p: PolicyParams) -> None:
    """The decay work runs every decay_interval (24 h) from boot; trace time is time since boot."""
    index = int(t // p.cec_decay_interval_seconds)
    if state.cec_clean_index is None:
        state.cec_clean_index = index
        return
    runs = index - state.cec_clean_index
    if runs > 0:
        state.cec_clean_index = index
        for _ in range(min(runs, _CEC_GEN_MAX)):
            _cec_spring_clean(state)


def _put_hot(state: PolicyState, pfn: int, entry: Hot, p: PolicyParams) -> None:
    hot = state.hot
    if pfn in hot:
        hot[pfn] = entry
        hot.move_to_end(pfn)
        return
    if len(hot) >= p.max_tracked_pages:
        # Only sub-threshold pages live here: eviction never drops an over-threshold page.
        hot.popitem(last=False)
    hot[pfn] = entry


def _make_room(state: PolicyState) -> bool:
    """Drop the oldest page held back (no work owed or done for it) to make room for a new
    record; False when every kept page has work owed or done (never dropped)."""
    held, pages = state.held, state.pages
    while held:
        pfn, _ = held.popitem(last=False)
        rec = pages.get(pfn)
        if rec is not None and rec.status == "over" and not rec.reserved:
            del pages[pfn]
            return True
    return False


def _forget_idle(state: PolicyState, cutoff: float) -> None:
    """Sub-threshold pages idle for a whole window count nothing any more (for the bucket
    counters too: their next event would drain the bucket to zero and restart it)."""
    hot = state.hot
    stale = []
    for pfn, entry in hot.items():
        if entry[2] >= cutoff:
            break
        stale.append(pfn)
    for pfn in stale:
        del hot[pfn]


# ---- units and escalation -----------------------------------------------------------------------


def _dimm_key(ev: Event) -> str | None:
    if ev.label:
        return ev.label
    d = ev.dram
    if d is not None and (d.channel is not None or d.dimm is not None):
        return (
            f"socket{d.socket}/mc{d.mc if d.mc is not None else ev.mc}/ch{d.channel}/dimm{d.dimm}"
        )
    if ev.mc is not None:
        return f"mc{ev.mc}"
    return None


def _units(dimm_key: str | None, bank_key: str | None, mc_key: str | None) -> tuple[str, ...]:
    units = []
    if dimm_key is not None:
        units.append("dimm:" + dimm_key)
    if bank_key is not None:
        units.append("bank:" + bank_key)
    if mc_key is not None:
        units.append("mc:" + mc_key)
    return tuple(units)


def _blocked(esc: dict[str, Decision], units: tuple[str, ...]) -> bool:
    return not esc.keys().isdisjoint(units)  # any(u in esc for u in units), without a generator


def _unit(table: dict[str, Unit], key: str, p: PolicyParams, *, rows: bool) -> Unit:
    u = table.get(key)
    if u is None:
        if len(table) >= p.max_tracked_units:
            for old_key, old in table.items():
                if not old.bad:
                    del table[old_key]
                    break
        u = Unit()
        if rows:
            u.members = []
        table[key] = u
    return u


def _escalate(
    state: PolicyState, key: str, ev: Event, t: float, reason: str, out: list[Decision]
) -> None:
    if key in state.escalations:
        return
    d = Decision("escalate", t, reason, label=ev.label or key.split(":", 1)[1], mc=ev.mc)
    state.escalations[key] = d
    out.append(d)


# ---- offline pipeline ---------------------------------------------------------------------------


def _want(
    state: PolicyState,
    p: PolicyParams,
    pfn: int,
    t: float,
    reason: str,
    units: tuple[str, ...],
    out: list[Decision],
) -> None:
    """Page `pfn` should be retired (threshold or row rule); act unless something says no."""
    rec = state.pages.get(pfn)
    if rec is not None and (rec.status != "over" or rec.reason):
        return  # already handled, or held back for a reason
    if rec is None and len(state.pages) >= p.max_page_records and not _make_room(state):
        state.untracked_events += 1  # a row member with no room: counted, not decided
        return
    hot = state.hot.pop(pfn, None)
    state.cec.pop(pfn, None)
    if rec is None:
        ce, first, last = (hot[0], hot[1], hot[2]) if hot is not None else (0, t, t)
        rec = PageRecord(pfn, "over", ce, first, last, t, hot=hot)
    rec = PageRecord(
        pfn,
        "over",
        rec.ce_count,
        rec.first_seen,
        rec.last_seen,
        t,
        reason,
        units=units,
        hot=rec.hot,
    )
    state.pages[pfn] = rec
    if state.escalations and _blocked(state.escalations, units):
        _set(state, rec, "over", t, "futile: unit escalated; " + reason)
        return
    action = p.action
    if action == "off":
        _set(state, rec, "over", t, "action off; " + reason)
        return
    if action == "account":
        _set(state, rec, "pending", t, reason, action="account", attempt=1)
        out.append(Decision("offline", t, reason, pfn=pfn, action="account", attempt=1))
        return
    _issue(state, p, rec, "hard" if action == "hard" else "soft", 1, reason, t, out)


def _issue(
    state: PolicyState,
    p: PolicyParams,
    rec: PageRecord,
    action: OfflineAction,
    attempt: int,
    reason: str,
    t: float,
    out: list[Decision],
) -> None:
    """Emit a soft/hard offline if the budget allows; otherwise hold the page and say why once."""
    budget = p.budget
    pfn = rec.pfn
    act = action
    reserved = rec.reserved
    if (
        not reserved
        and budget.max_retired_bytes is not None
        and state.retired_bytes + PAGE_SIZE_BYTES > budget.max_retired_bytes
    ):
        _set(state, rec, "over", t, "retired-memory budget exhausted; " + reason, act, attempt)
        if not state.budget_bytes_flagged:
            state.budget_bytes_flagged = True
            out.append(
                Decision(
                    "budget_exhausted",
                    t,
                    f"retired-memory budget exhausted: {state.retired_bytes} of "
                    f"{budget.max_retired_bytes} bytes retired",
                    pfn=pfn,
                )
            )
        return
    times = state.action_times
    cutoff = t - HOUR_SECONDS
    while times and times[0] <= cutoff:
        times.popleft()
    limit = budget.max_offlines_per_hour
    if limit is not None and len(times) >= limit:
        _set(state, rec, "deferred", t, reason, act, attempt)
        state.deferred[pfn] = None
        if not state.budget_rate_flagged:
            state.budget_rate_flagged = True
            out.append(
                Decision(
                    "budget_exhausted",
                    t,
                    f"offline rate budget exhausted: {len(times)} offlines in the last hour "
                    f"(max {limit})",
                    pfn=pfn,
                )
            )
        return
    state.budget_rate_flagged = False
    times.append(t)
    if not reserved:
        state.retired_bytes += PAGE_SIZE_BYTES
    _set(state, rec, "pending", t, reason, act, attempt, reserved=True)
    out.append(Decision("offline", t, reason, pfn=pfn, action=act, attempt=attempt))


def _drain_deferred(state: PolicyState, p: PolicyParams, now: float, out: list[Decision]) -> None:
    limit = p.budget.max_offlines_per_hour
    times = state.action_times
    while state.deferred:
        while times and times[0] <= now - HOUR_SECONDS:
            times.popleft()
        if limit is not None and len(times) >= limit:
            return
        pfn = next(iter(state.deferred))
        del state.deferred[pfn]
        rec = state.pages.get(pfn)
        if rec is None or rec.status != "deferred" or rec.action is None:
            continue
        if state.escalations and _blocked(state.escalations, rec.units):
            _set(state, rec, "over", now, "futile: unit escalated; " + rec.reason)
            continue
        _issue(state, p, rec, rec.action, rec.attempt, rec.reason, now, out)


def _set(
    state: PolicyState,
    rec: PageRecord,
    status: PageStatus,
    t: float,
    reason: str,
    action: OfflineAction | None = None,
    attempt: int | None = None,
    *,
    reserved: bool | None = None,
) -> None:
    act = rec.action if action is None else action
    keep = rec.reserved if reserved is None else reserved
    if status == "over" and not keep:
        state.held[rec.pfn] = None
        state.held.move_to_end(rec.pfn)
    else:
        state.held.pop(rec.pfn, None)
    state.pages[rec.pfn] = PageRecord(
        rec.pfn,
        status,
        rec.ce_count,
        rec.first_seen,
        rec.last_seen,
        t,
        reason,
        act,
        rec.attempt if attempt is None else attempt,
        keep,
        rec.units,
        rec.hot,
    )


def _release(state: PolicyState, rec: PageRecord) -> None:
    if rec.reserved:
        state.retired_bytes -= PAGE_SIZE_BYTES
        state.pages[rec.pfn] = PageRecord(
            rec.pfn,
            rec.status,
            rec.ce_count,
            rec.first_seen,
            rec.last_seen,
            rec.at,
            rec.reason,
            rec.action,
            rec.attempt,
            False,
            rec.units,
            rec.hot,
        )


def _give_up(state: PolicyState, p: PolicyParams, rec: PageRecord, t: float, reason: str) -> None:
    _release(state, rec)
    rec = state.pages[rec.pfn]
    if p.retry_on_recross:
        # rasdaemon/CEC: the page goes back to counting and may cross (and be tried) again.
        del state.pages[rec.pfn]
        state.held.pop(rec.pfn, None)
        if rec.hot is not None and p.counter != "cec":
            _put_hot(state, rec.pfn, rec.hot, p)
        return
    _set(state, rec, "failed", t, reason)


def _mark_kernel_poisoned(state: PolicyState, pfn: int, t: float, reason: str) -> None:
    rec = state.pages.get(pfn)
    hot = state.hot.pop(pfn, None)
    state.cec.pop(pfn, None)
    if rec is None:
        ce, first, last = (hot[0], hot[1], hot[2]) if hot is not None else (0, t, t)
        rec = PageRecord(pfn, "kernel_poisoned", ce, first, last, t, reason)
    else:
        _release(state, rec)
        rec = state.pages[pfn]
    _set(state, rec, "kernel_poisoned", t, reason)


def _on_kernel_offline(state: PolicyState, ev: Event, t: float) -> None:
    pfn = ev.pfn
    if pfn is None and ev.phys_addr is not None:
        pfn = ev.phys_addr >> PAGE_SHIFT
    if pfn is None:
        return
    result = (ev.result or "").lower()
    if ev.kind == "soft_offline" and ("fail" in result or "busy" in result):
        return  # the kernel tried and failed: the page is still in use
    rec = state.pages.get(pfn)
    if rec is not None and rec.status in FINAL_STATUSES:
        return
    what = {
        "memory_failure": "memory_failure",
        "soft_offline": "soft offline",
        "cec_offline": "kernel CEC soft offline",
    }[ev.kind]
    _mark_kernel_poisoned(state, pfn, t, f"kernel {what}" + (f": {ev.result}" if ev.result else ""))


def _on_ue(state: PolicyState, ev: Event, t: float) -> None:
    state.ue_total += 1
    key = _dimm_key(ev) or "unattributed"
    state.ue_by_unit[key] = state.ue_by_unit.get(key, 0) + 1
    pfn = ev.pfn
    if pfn is None and ev.phys_addr is not None:
        pfn = ev.phys_addr >> PAGE_SHIFT
    assert ev.severity is not None
    state.ue_recent.append(UncorrectedError(t, pfn, ev.severity, ev.label or key))


def _errno_name(err: int | None) -> str:
    if err is None:
        return "error"
    return errno_mod.errorcode.get(err, f"errno {err}")
