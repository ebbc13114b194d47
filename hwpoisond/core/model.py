"""The values that flow through hwpoisond: plain, frozen, and free of I/O.

Rule: this module defines data only. Parsers produce `Event`s, the policy turns them into
`Decision`s, the executor answers with `ActionResult`s. Nothing here reads a file or a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: 4 KiB: the unit the kernel's pfn, kpageflags and soft_offline_page work in on x86-64.
PAGE_SIZE_BYTES = 4096
PAGE_SHIFT = 12

EventKind = Literal[
    "memory_error", "mce", "memory_failure", "soft_offline", "cec_offline", "process_killed"
]
EventSource = Literal[
    "mc_event",
    "mce_record",
    "memory_failure_event",
    "extlog_mem_event",
    "kmsg_edac",
    "kmsg_mce",
    "kmsg_memory_failure",
    "kmsg_soft_offline",
    "kmsg_cec",
    "kmsg_cper",
]
Severity = Literal["corrected", "uncorrected", "deferred", "fatal", "info"]
OfflineAction = Literal["soft", "hard", "account"]


def pfn_of(phys_addr: int) -> int:
    """The 4 KiB page frame number holding `phys_addr`."""
    return phys_addr >> PAGE_SHIFT


@dataclass(frozen=True, slots=True)
class DramLocation:
    """Where in DRAM an error sits, as far as the reporting driver knows (-1/None = unknown).

    EDAC drivers report these in the `mc_event` driver detail (APEI GHES: node/card/module/rank/
    bank/row/column; Intel skx/i10nm: SocketId/MemCtrl/Channel/DIMM/Rank/Row/Column/Bank).
    """

    socket: int | None = None
    mc: int | None = None
    channel: int | None = None
    dimm: int | None = None
    rank: int | None = None
    bank_group: int | None = None
    bank: int | None = None
    row: int | None = None
    column: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One memory-error report, normalised from whichever kernel interface carried it.

    `time` is seconds in the input's clock: trace timestamp (seconds since boot), dmesg/journal
    time, or wall-clock seconds when the daemon receives it live. The core only compares times.
    Field names follow the `hwpoisond parse` JSON contract in DESIGN.md; `bank` is the MCA bank,
    `dram.bank` the DRAM bank.
    """

    kind: EventKind
    source: EventSource
    severity: Severity | None
    count: int = 1
    phys_addr: int | None = None
    pfn: int | None = None
    time: float | None = None
    line: int | None = None
    mc: int | None = None
    label: str | None = None
    location: str | None = None
    grain: int | None = None
    syndrome: int | None = None
    msg: str | None = None
    page_type: str | None = None
    result: str | None = None
    bank: int | None = None
    status: int | None = None
    cpu: int | None = None
    dram: DramLocation | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())


DecisionKind = Literal["offline", "escalate", "budget_exhausted"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the policy wants done. `offline` decisions are carried out by the executor; the others
    are recorded, exported and may run an operator trigger."""

    kind: DecisionKind
    at: float
    reason: str
    pfn: int | None = None
    action: OfflineAction | None = None
    attempt: int = 1
    label: str | None = None
    mc: int | None = None


ResultKind = Literal["offlined", "already_poisoned", "failed", "unsupported", "accounted"]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What the executor observed after carrying out an `offline` decision.

    `errno` is the kernel's answer to the sysfs write (None on success); `verified` says whether
    /proc/kpageflags showed HWPOISON afterwards (None when it could not be read).
    """

    pfn: int
    action: OfflineAction
    result: ResultKind
    at: float
    errno: int | None = None
    verified: bool | None = None
    attempt: int = 1
