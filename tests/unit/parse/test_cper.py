"""CPER block assembly beyond the fixture captures: split blocks, other section types, damage.

Lines are those of tests/fixtures/parse/kmsg_cper_v4.12-v6.x.txt (the Shuai Xue capture, v5.16-rc)
cut and altered the way readers and logs cut them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hwpoisond.parse import LineParser

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures/parse/kmsg_cper_v4.12-v6.x.txt"

BLOCK = [
    "{2}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 2",
    "{2}[Hardware Error]: It has been corrected by h/w and requires no further action",
    "{2}[Hardware Error]: event severity: corrected",
    "{2}[Hardware Error]:  Error 0, type: corrected",
    "{2}[Hardware Error]:   section_type: memory error",
    "{2}[Hardware Error]:   error_status: 0x0000000000000000",
    "{2}[Hardware Error]:   physical_address: 0x0000000898b86020",
    "{2}[Hardware Error]:   physical_address_mask: 0x0000000000000000",
    "{2}[Hardware Error]:   error_type: 4, single-symbol chipkill ECC",
]


def _feed(lines: list[str]) -> tuple[list[tuple[str, int | None, str | None]], LineParser]:
    parser = LineParser()
    events = [e for line in lines for e in parser.feed(line)] + parser.flush()
    return [(e.source, e.pfn, e.severity) for e in events], parser


def test_a_block_is_one_event_and_two_sections_are_two() -> None:
    events, parser = _feed(BLOCK)
    assert events == [("kmsg_cper", 0x898B86, "corrected")]
    second = [
        "{2}[Hardware Error]:  Error 1, type: recoverable",
        "{2}[Hardware Error]:   section_type: memory error",
        "{2}[Hardware Error]:   physical_address: 0x0000000000040000",
    ]
    events, _ = _feed(BLOCK + second)
    assert events == [("kmsg_cper", 0x898B86, "corrected"), ("kmsg_cper", 0x40, "uncorrected")]
    assert parser.stats.unparsed_candidates == 0


def test_a_block_split_by_the_reader_keeps_its_address() -> None:
    parser = LineParser()
    first = [e for line in BLOCK[:5] for e in parser.feed(line)] + parser.flush()
    second = [e for line in BLOCK[5:] for e in parser.feed(line)] + parser.flush()
    assert [(e.source, e.pfn) for e in first] == [("kmsg_cper", None)]
    assert [(e.source, e.pfn, e.msg) for e in second] == [
        ("kmsg_cper", 0x898B86, "single-symbol chipkill ECC")
    ]


def test_other_section_types_are_notices_and_damage_is_counted() -> None:
    pcie = [
        "{3}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 3",
        "{3}[Hardware Error]: event severity: corrected",
        "{3}[Hardware Error]:  Error 0, type: corrected",
        "{3}[Hardware Error]:   section_type: PCIe error",
        "{3}[Hardware Error]:   port_type: 4, root port",
    ]
    events, parser = _feed(pcie)
    assert events == []
    assert parser.stats.notices == {"kmsg_cper": 1}
    damaged = [*BLOCK[:6], "{2}[Hardware Error]:   physical_address: 0x00000008zz"]
    events, parser = _feed(damaged)
    assert events == []
    assert parser.stats.malformed == {"kmsg_cper": 1}


def test_a_new_sequence_number_closes_the_block_before_it() -> None:
    other = [line.replace("{2}", "{3}") for line in BLOCK]
    events, _ = _feed(BLOCK + other)
    assert events == [("kmsg_cper", 0x898B86, "corrected")] * 2


def test_the_policy_counts_a_cper_block_and_its_edac_line_once(tmp_path: Path) -> None:
    capture = (FIXTURE.read_text().split("# 2. ")[1]).split("# 3. ")[0]
    lines = [line for line in capture.splitlines() if line.startswith("> [")]
    edac, block = lines[0], lines[1:]
    assert "EDAC MC0: 1 CE" in edac and len(block) == 11
    once = tmp_path / "once.log"
    once.write_text("\n".join([edac, *block]) + "\n")
    # The same block again one second later: a second error on the page.
    later = [line.replace("[  375.", "[  376.") for line in block]
    twice = tmp_path / "twice.log"
    twice.write_text("\n".join([edac, *block, *later]) + "\n")
    results = {}
    for log in (once, twice):
        proc = subprocess.run(
            [sys.executable, "-m", "hwpoisond", "replay", "--json", str(log)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[log.name] = json.loads(proc.stdout)["pages_offlined"]
    assert results == {"once.log": [], "twice.log": [0x898B86]}
