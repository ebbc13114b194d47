"""Scores one policy's replay output against the hidden truth of the same simulated hosts.

Rule: pure arithmetic over two plain inputs (truth, replay JSON); it reads no files and runs
nothing. Definitions (also in BENCHMARKS_POLICY.md):
- a UE is avoided by retirement when its pfn was offlined (successfully) before the UE's time;
  by escalation when a DIMM escalation naming its DIMM label (or, label-less, its memory
  controller) came at least `repair_lead_seconds` before the UE — the DIMM would have been
  replaced; by the kernel when the CEC had offlined the page (CEC hosts; same for all policies);
- a CE is avoided when it falls on a retired page after the retirement;
- an escalation is right when the DIMM (or controller) it names holds a "wide" fault: one that
  spans more than a DRAM row (column, bank, multi-bank, multi-rank, channel/controller);
- time to first action: first offline or escalation minus the host's first error.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.policy.truth import HostTruth

PAGE_BYTES = 4096
_OFFLINE_ACTIONS = ("soft", "hard")


@dataclass(frozen=True, slots=True)
class ReplayAction:
    at: float
    pfn: int
    action: str
    reason: str


@dataclass(frozen=True, slots=True)
class ReplayEscalation:
    at: float
    label: str | None
    mc: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """One host's `hwpoisond replay --json` object (DESIGN.md, "Contracts")."""

    events: int
    pages_offlined: tuple[int, ...]
    actions: tuple[ReplayAction, ...]
    escalations: tuple[ReplayEscalation, ...]
    budget_exhausted: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplayResult:
        return cls(
            events=int(data["events"]),
            pages_offlined=tuple(int(p) for p in data["pages_offlined"]),
            actions=tuple(
                ReplayAction(float(a["at"]), int(a["pfn"]), str(a["action"]), str(a["reason"]))
                for a in data["actions"]
            ),
            escalations=tuple(
                ReplayEscalation(
                    float(e["at"]),
                    None if e.get("label") in (None, "") else str(e["label"]),
                    None if e.get("mc") is None else int(e["mc"]),
                    str(e.get("reason", "")),
                )
                for e in data["escalations"]
            ),
            budget_exhausted=bool(data["budget_exhausted"]),
        )


@dataclass(frozen=True, slots=True)
class HostScore:
    ues: int
    ues_avoided_by_retirement: int
    ues_avoided_by_escalation: int
    ues_avoided_by_kernel: int
    ces: int
    ces_avoided: int
    pages_retired: int
    offline_attempts: int
    offline_failures: int
    escalations: int
    escalations_right: int
    #: Seconds from the host's first error to the policy's first action (None: never acted).
    first_action_delay_seconds: float | None
    budget_exhausted: bool

    @property
    def ues_avoided(self) -> int:
        return (
            self.ues_avoided_by_retirement
            + self.ues_avoided_by_escalation
            + self.ues_avoided_by_kernel
        )


def _retire_times(result: ReplayResult) -> dict[int, float]:
    """When each successfully offlined pfn went offline: its last offline attempt (retries stop
    at the first success, so the last attempt on a retired page is the one that worked)."""
    last_attempt: dict[int, float] = {}
    for a in result.actions:
        if a.action in _OFFLINE_ACTIONS:
            last_attempt[a.pfn] = max(a.at, last_attempt.get(a.pfn, -math.inf))
    return {pfn: last_attempt.get(pfn, math.inf) for pfn in set(result.pages_offlined)}


def score_host(
    truth: HostTruth, result: ReplayResult, repair_lead_seconds: float = 0.0
) -> HostScore:
    retired_at = _retire_times(result)
    by_label: dict[str, float] = {}
    by_mc: dict[int, float] = {}
    for e in result.escalations:
        if e.label is not None:
            by_label[e.label] = min(e.at, by_label.get(e.label, math.inf))
        elif e.mc is not None:
            by_mc[e.mc] = min(e.at, by_mc.get(e.mc, math.inf))

    by_retire = by_escalation = by_kernel = 0
    for ue in truth.ues:
        if ue.cec_offlined:
            by_kernel += 1
        elif retired_at.get(ue.pfn, math.inf) < ue.at:
            by_retire += 1
        elif min(by_label.get(ue.label, math.inf), by_mc.get(ue.mc, math.inf)) <= (
            ue.at - repair_lead_seconds
        ):
            by_escalation += 1

    ces_avoided = sum(1 for c in truth.ces if retired_at.get(c.pfn, math.inf) < c.at)

    wide_labels = {label for f in truth.faults if f.wide for label in f.labels}
    wide_mcs = {mc for f in truth.faults if f.wide for mc in f.mcs}
    targets = {(e.label, e.mc if e.label is None else None) for e in result.escalations}
    right = sum(
        1
        for label, mc in targets
        if (label is not None and label in wide_labels) or (label is None and mc in wide_mcs)
    )

    attempts = sum(1 for a in result.actions if a.action in _OFFLINE_ACTIONS)
    first_error = min([c.at for c in truth.ces] + [u.at for u in truth.ues], default=truth.start_at)
    acted = [a.at for a in result.actions if a.action in _OFFLINE_ACTIONS] + [
        e.at for e in result.escalations
    ]
    return HostScore(
        ues=len(truth.ues),
        ues_avoided_by_retirement=by_retire,
        ues_avoided_by_escalation=by_escalation,
        ues_avoided_by_kernel=by_kernel,
        ces=len(truth.ces),
        ces_avoided=ces_avoided,
        pages_retired=len(retired_at),
        offline_attempts=attempts,
        offline_failures=max(0, attempts - len(retired_at)),
        escalations=len(targets),
        escalations_right=right,
        first_action_delay_seconds=(min(acted) - first_error) if acted else None,
        budget_exhausted=result.budget_exhausted,
    )


@dataclass(frozen=True, slots=True)
class SuiteScore:
    policy: str
    hosts: int
    ues: int
    ues_avoided: int
    ues_avoided_by_retirement: int
    ues_avoided_by_escalation: int
    ues_avoided_by_kernel: int
    ces: int
    ces_avoided: int
    pages_retired: int
    offline_attempts: int
    offline_failures: int
    escalations: int
    escalations_right: int
    hosts_acted: int
    hosts_budget_exhausted: int
    median_first_action_hours: float | None

    @property
    def mib_retired(self) -> float:
        return self.pages_retired * PAGE_BYTES / 2**20


def aggregate(policy: str, scores: Sequence[HostScore]) -> SuiteScore:
    delays = [
        s.first_action_delay_seconds for s in scores if s.first_action_delay_seconds is not None
    ]
    return SuiteScore(
        policy=policy,
        hosts=len(scores),
        ues=sum(s.ues for s in scores),
        ues_avoided=sum(s.ues_avoided for s in scores),
        ues_avoided_by_retirement=sum(s.ues_avoided_by_retirement for s in scores),
        ues_avoided_by_escalation=sum(s.ues_avoided_by_escalation for s in scores),
        ues_avoided_by_kernel=sum(s.ues_avoided_by_kernel for s in scores),
        ces=sum(s.ces for s in scores),
        ces_avoided=sum(s.ces_avoided for s in scores),
        pages_retired=sum(s.pages_retired for s in scores),
        offline_attempts=sum(s.offline_attempts for s in scores),
        offline_failures=sum(s.offline_failures for s in scores),
        escalations=sum(s.escalations for s in scores),
        escalations_right=sum(s.escalations_right for s in scores),
        hosts_acted=len(delays),
        hosts_budget_exhausted=sum(1 for s in scores if s.budget_exhausted),
        median_first_action_hours=statistics.median(delays) / 3600.0 if delays else None,
    )


def dominates(a: SuiteScore, b: SuiteScore) -> bool:
    """The issue's Pareto test: at least as many UEs avoided with no more memory retired, and
    strictly better on one of the two."""
    return (
        a.ues_avoided >= b.ues_avoided
        and a.pages_retired <= b.pages_retired
        and (a.ues_avoided > b.ues_avoided or a.pages_retired < b.pages_retired)
    )


def markdown_table(scores: Iterable[SuiteScore], reference: str = "default") -> str:
    rows = list(scores)
    ref = next((s for s in rows if s.policy == reference), None)
    head = (
        "| policy | UEs avoided / total (retire + escalate + kernel) | CEs avoided | "
        "MiB retired | offline attempts / failed | escalations (right) | hosts acted | "
        "median h to first action | " + (f"`{reference}` dominates it?" if ref else "") + " |"
    )
    out = [head, "|" + "---|" * 9]
    for s in rows:
        delay = "-" if s.median_first_action_hours is None else f"{s.median_first_action_hours:.1f}"
        verdict = ""
        if ref is not None and s is not ref:
            verdict = "yes" if dominates(ref, s) else "**no**"
        out.append(
            f"| {s.policy} | {s.ues_avoided} / {s.ues} ({s.ues_avoided_by_retirement} + "
            f"{s.ues_avoided_by_escalation} + {s.ues_avoided_by_kernel}) | "
            f"{s.ces_avoided} / {s.ces} | {s.mib_retired:.2f} | "
            f"{s.offline_attempts} / {s.offline_failures} | "
            f"{s.escalations} ({s.escalations_right}) | {s.hosts_acted} / {s.hosts} | "
            f"{delay} | {verdict} |"
        )
    return "\n".join(out)
