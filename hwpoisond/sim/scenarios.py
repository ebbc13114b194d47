"""Scenarios for `hwpoisond simulate`: named fault modes played on a `SimMachine`.

Rule: a scenario is data — a seeded list of timed kernel happenings (corrected errors,
uncorrected errors, reboots) in simulated seconds; it runs nothing itself. The fault shapes
follow the field studies issue 8 cites: a single cell recurs on one page; a row fault spreads over
the ~16 pages of a row; column and bank faults touch many rows of one bank (retiring pages is
futile there); a channel/controller fault storms without page locality.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from hwpoisond.sim.kernel import BANKS, COLUMNS, DramAddress, SimMachine

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Happening:
    """Something the simulated hardware does at `at` simulated seconds after the start."""

    at: float
    kind: str  # "ce", "ue" or "reboot"
    address: DramAddress | None = None
    count: int = 1


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    #: What an operator should see at the end (printed with the outcome).
    expectation: str
    build: Callable[[SimMachine, random.Random], list[Happening]]
    #: Pages whose soft offline the simulated kernel refuses with EBUSY.
    busy_cells: Callable[[SimMachine], list[DramAddress]] = lambda m: []


def _cell(m: SimMachine, dimm: int, bank: int, row: int, column: int) -> DramAddress:
    return DramAddress(m.dimms[dimm], bank=bank, row=row, column=column)


def _healthy(m: SimMachine, rng: random.Random) -> list[Happening]:
    return []


def _single_cell(m: SimMachine, rng: random.Random) -> list[Happening]:
    cell = _cell(m, 2, 3, 4242, 100)
    return [Happening(h * HOUR, "ce", cell) for h in (0.5, 4.0, 9.0, 9.5)]


def _row_fault(m: SimMachine, rng: random.Random) -> list[Happening]:
    row = 6000
    return [
        Happening(0.25 * HOUR + i * 0.5 * HOUR, "ce", _cell(m, 5, 7, row, rng.randrange(COLUMNS)))
        for i in range(20)
    ]


def _column_fault(m: SimMachine, rng: random.Random) -> list[Happening]:
    column = 333
    rows = rng.sample(range(m.rows_per_bank), 40)
    return [
        Happening(0.2 * HOUR + i * 0.25 * HOUR, "ce", _cell(m, 1, 2, r, column))
        for i, r in enumerate(rows)
    ]


def _bank_fault(m: SimMachine, rng: random.Random) -> list[Happening]:
    return [
        Happening(
            0.1 * HOUR + i * 0.1 * HOUR,
            "ce",
            _cell(m, 6, 11, rng.randrange(m.rows_per_bank), rng.randrange(COLUMNS)),
        )
        for i in range(100)
    ]


def _controller_storm(m: SimMachine, rng: random.Random) -> list[Happening]:
    dimms = [d.index for d in m.dimms if d.mc == 1]
    return [
        Happening(
            0.5 * HOUR + i * (HOUR / 6000),
            "ce",
            _cell(
                m,
                rng.choice(dimms),
                rng.randrange(BANKS),
                rng.randrange(m.rows_per_bank),
                rng.randrange(COLUMNS),
            ),
        )
        for i in range(6000)
    ]


def _ce_then_ue(m: SimMachine, rng: random.Random) -> list[Happening]:
    weak = _cell(m, 0, 1, 777, 10)  # one CE only: below the threshold, then it fails hard
    recurring = _cell(m, 4, 9, 3133, 512)  # CEs that recur: retired before it can fail
    return [
        Happening(0.5 * HOUR, "ce", weak),
        Happening(1.0 * HOUR, "ce", recurring),
        Happening(2.0 * HOUR, "ce", recurring),
        Happening(5.0 * HOUR, "ue", weak),
    ]


def _reboot(m: SimMachine, rng: random.Random) -> list[Happening]:
    a = _cell(m, 3, 4, 1111, 40)
    b = _cell(m, 7, 12, 2222, 900)
    return [
        Happening(0.5 * HOUR, "ce", a),
        Happening(1.0 * HOUR, "ce", a),
        Happening(1.5 * HOUR, "ce", b),
        Happening(2.0 * HOUR, "ce", b),
        Happening(4.0 * HOUR, "reboot"),
        Happening(6.0 * HOUR, "ce", _cell(m, 0, 0, 5, 5)),  # life goes on after the reboot
    ]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "healthy",
            "no memory errors for 6 hours",
            "nothing retired, nothing escalated",
            lambda m, r: [Happening(6 * HOUR, "idle")],
        ),
        Scenario(
            "single-cell",
            "one weak cell reports a corrected error 4 times in 9 hours",
            "its page is soft-offlined after the 2nd error and verified; later errors change "
            "nothing",
            _single_cell,
        ),
        Scenario(
            "row-fault",
            "a failing DRAM row: 20 corrected errors spread over the row's pages in 10 hours",
            "each page of the row is retired once its errors recur (2 in 24 h); with "
            "[policy] row_pages_threshold set, the row becomes the unit and its known pages go "
            "at once (off by default: see BENCHMARKS_POLICY.md)",
            _row_fault,
        ),
        Scenario(
            "column-fault",
            "a failing column: 40 corrected errors, each in a different row of one bank",
            "at the third distinct row the bank is escalated (replace the DIMM) instead of "
            "retiring a page per row",
            _column_fault,
        ),
        Scenario(
            "bank-fault",
            "a failing bank: 100 corrected errors at random rows and columns of one bank",
            "escalation to replace the DIMM after a few rows; retiring thousands of pages "
            "would be futile and is not attempted",
            _bank_fault,
        ),
        Scenario(
            "controller-storm",
            "a channel/controller fault: 6000 corrected errors in one hour across memory "
            "controller 1 with no page locality",
            "escalations for memory controller 1's DIMMs (or the controller itself) and no "
            "retired pages: retiring is futile without page locality",
            _controller_storm,
        ),
        Scenario(
            "ce-then-ue",
            "a cell with one corrected error later fails uncorrectably; another cell's "
            "corrected errors recur",
            "the recurring cell's page is retired in time; the uncorrected error is recorded "
            "and the kernel-poisoned page is never acted on again",
            _ce_then_ue,
        ),
        Scenario(
            "reboot",
            "two pages are retired, then the machine reboots (the kernel forgets poison)",
            "after the reboot hwpoisond offlines exactly those two pages again at start",
            _reboot,
        ),
        Scenario(
            "busy-page",
            "a recurring cell whose page the kernel refuses to migrate (EBUSY)",
            "the failed offline is recorded with errno EBUSY and retried with back-off until "
            "the retry limit; nothing loops or crashes",
            _single_cell,
            busy_cells=lambda m: [_cell(m, 2, 3, 4242, 100)],
        ),
    )
}
