"""Test helpers: hand-built events and a deterministic driver over the real core."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from typing import Any

from hwpoisond.core import policy
from hwpoisond.core.model import ActionResult, Decision, DramLocation, Event, EventSource
from hwpoisond.core.params import PolicyParams
from hwpoisond.core.state import PolicyState, from_plain, new_state, to_plain

DIMM_A = "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"
DIMM_B = "CPU_SrcID#0_MC#1_Chan#0_DIMM#0"


def ce(
    pfn: int,
    t: float,
    *,
    source: EventSource = "mc_event",
    count: int = 1,
    label: str | None = DIMM_A,
    mc: int | None = 0,
    rank: int | None = None,
    bank: int | None = None,
    row: int | None = None,
    severity: Any = "corrected",
) -> Event:
    dram = None
    if bank is not None:
        dram = DramLocation(mc=mc, rank=rank, bank=bank, row=row)
    return Event(
        "memory_error",
        source,
        severity,
        count,
        pfn << 12,
        pfn,
        t,
        label=label,
        mc=mc,
        dram=dram,
    )


def offlines(decisions: tuple[Decision, ...] | list[Decision]) -> list[tuple[int | None, str]]:
    return [(d.pfn, str(d.action)) for d in decisions if d.kind == "offline"]


def fails(pfn: int, attempt: int, rate: float) -> bool:
    return rate > 0 and ((pfn * 2654435761 + attempt * 40503) % 1000) / 1000 < rate


def drive(
    events: list[Event],
    params: PolicyParams,
    *,
    fail_rate: float = 0.0,
    interrupt_at: int | None = None,
    state: PolicyState | None = None,
    check: Callable[[PolicyState], None] | None = None,
) -> tuple[PolicyState, list[Decision]]:
    """Feed events in order; answer every offline at once (failing deterministically); run
    expire() at each event time. With `interrupt_at`, the state goes through JSON there."""
    s = state if state is not None else new_state()
    log: list[Decision] = []

    def handle(ds: tuple[Decision, ...]) -> None:
        nonlocal s
        queue = list(ds)
        while queue:
            d = queue.pop(0)
            log.append(d)
            if d.kind != "offline":
                continue
            assert d.pfn is not None and d.action is not None
            if d.action == "account":
                r = ActionResult(d.pfn, "account", "accounted", d.at, attempt=d.attempt)
            elif fails(d.pfn, d.attempt, fail_rate):
                r = ActionResult(d.pfn, d.action, "failed", d.at, errno.EBUSY, attempt=d.attempt)
            else:
                r = ActionResult(
                    d.pfn, d.action, "offlined", d.at, verified=True, attempt=d.attempt
                )
            s, more = policy.on_result(s, r, params)
            queue.extend(more)

    for i, ev in enumerate(events):
        if interrupt_at == i:
            s = from_plain(json.loads(json.dumps(to_plain(s))))
        if ev.time is not None:
            s, out = policy.expire(s, ev.time, params)
            handle(out)
        s, out = policy.decide(s, ev, params)
        handle(out)
        if check is not None:
            check(s)
    return s, log
