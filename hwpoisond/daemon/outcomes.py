"""What the daemon tells people: log records with MESSAGE_IDs, trigger scripts, tallies.

Rule: reports outcomes that already happened (an offline result, an escalation, an uncorrected
error); decides nothing and writes no state.
"""

from __future__ import annotations

import logging

from hwpoisond.actions.offliner import OfflineReport
from hwpoisond.actions.triggers import TriggerRunner
from hwpoisond.core.model import Decision, Event
from hwpoisond.tally import Tally

log = logging.getLogger("hwpoisond")


class Outcomes:
    def __init__(self, tally: Tally, triggers: TriggerRunner) -> None:
        self.tally = tally
        self.triggers = triggers

    def offline(self, decision: Decision, report: OfflineReport) -> None:
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

    def escalated(self, decision: Decision) -> None:
        self.tally.escalation(decision.mc, decision.label)
        fields = {"label": decision.label, "mc": decision.mc, "reason": decision.reason}
        log.error("%s", decision.reason, extra={"message_id": "dimm_escalation", "fields": fields})
        self.triggers.fire("dimm_escalation", fields)

    def budget_exhausted(self, decision: Decision) -> None:
        log.warning(
            "retirement budget exhausted: %s",
            decision.reason,
            extra={"message_id": "budget_exhausted"},
        )
        self.triggers.fire("budget_exhausted", {"reason": decision.reason})

    def process_killed(self, ev: Event) -> None:
        """The kernel signalled or killed a process that used a poisoned page (mm/memory-failure.c
        kill_proc): the first thing an on-call engineer must learn, logged every time (the
        kernel prints it once per process and page)."""
        extra = dict(ev.extra)
        fields = {
            "comm": extra.get("comm"),
            "pid": extra.get("pid"),
            "action": ev.result,
            "pfn": None if ev.pfn is None else f"{ev.pfn:#x}",
        }
        log.error(
            "the kernel %s %s (pid %s): it used poisoned page %s",
            {"sigbus": "sent SIGBUS to", "force_killed": "forcibly killed"}.get(
                ev.result or "", "killed"
            ),
            fields["comm"],
            fields["pid"],
            fields["pfn"] or "(unknown)",
            extra={"message_id": "process_killed", "fields": fields},
        )

    def uncorrected(self, ev: Event) -> None:
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
