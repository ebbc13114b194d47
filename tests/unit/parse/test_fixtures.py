"""Every fixture line carries its expected event: the parser must produce exactly those.

Fixture format (tests/fixtures/parse/*.txt): comment lines start with "#"; a line
"# expect: {json}" names the event the next input line must start; input lines without one must
produce nothing. Integer fields may be written as "0x…" strings. Fields not named are not checked;
a named field missing from the output counts as null.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hwpoisond.parse import LineParser, event_to_json

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "parse"
FILES = sorted(FIXTURES.glob("*.txt"))
REQUIRED_KEYS = {"kind", "source", "pfn"}


def _unhex(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    if isinstance(value, dict):
        return {k: _unhex(v) for k, v in value.items()}
    return value


def load(path: Path) -> tuple[list[tuple[int, str]], dict[int, dict[str, Any]]]:
    """(input lines with their file line numbers, expectation by line number)."""
    inputs: list[tuple[int, str]] = []
    expected: dict[int, dict[str, Any]] = {}
    pending: dict[str, Any] | None = None
    for lineno, text in enumerate(path.read_text().splitlines(), 1):
        if text.startswith("# expect: "):
            assert pending is None, f"{path.name}:{lineno}: two expectations in a row"
            pending = json.loads(text[len("# expect: ") :])
            assert REQUIRED_KEYS <= pending.keys(), f"{path.name}:{lineno}: too vague"
            continue
        if text.startswith("#"):
            continue
        inputs.append((lineno, text))
        if pending is not None:
            expected[lineno] = {k: _unhex(v) for k, v in pending.items()}
            pending = None
    assert pending is None, f"{path.name}: expectation without a line"
    return inputs, expected


def check(path: Path, got: list[dict[str, Any]], expected: dict[int, dict[str, Any]]) -> None:
    assert [e["line"] for e in got] == sorted(expected), path.name
    for event in got:
        want = expected[event["line"]]
        for key, value in want.items():
            # Registers are "0x…" strings in the output (DESIGN.md), as in the expectations.
            assert _unhex(event.get(key)) == value, f"{path.name}:{event['line']} {key}: {event}"


def test_there_is_a_fixture_per_format_generation() -> None:
    names = {p.name.split("_v")[0] for p in FILES}
    assert names >= {
        "trace_mc_event",
        "trace_mce_record",
        "trace_memory_failure_event",
        "trace_extlog_mem_event",
        "kmsg_edac",
        "kmsg_mce",
        "kmsg_memory_failure",
        "kmsg_soft_offline",
        "kmsg_cec",
        "kmsg_cper",
    }
    assert len([p for p in FILES if p.name.startswith("trace_mce_record")]) == 3


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture_line_by_line(path: Path) -> None:
    inputs, expected = load(path)
    assert expected, f"{path.name} has no expectations"
    parser = LineParser()
    got = [event_to_json(e) for n, text in inputs for e in parser.feed(text, n)]
    got += [event_to_json(e) for e in parser.flush()]
    check(path, got, expected)
    assert parser.stats.malformed == {}, parser.stats
    assert sum(parser.stats.events.values()) == len(expected)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_fixture_through_the_command(path: Path) -> None:
    """The real `hwpoisond parse` on the whole file (comment lines included, they must not
    parse): same events at the same file line numbers."""
    _, expected = load(path)
    proc = subprocess.run(
        [sys.executable, "-m", "hwpoisond", "parse", "--stats", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    check(path, got, expected)
    stats = json.loads(proc.stderr)
    assert stats["malformed"] == {}
    assert stats["lines"] == len(path.read_text().splitlines())
