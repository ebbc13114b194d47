"""Every prefix style real tools put before a kernel message gives the bare message's events.

The messages are the real Debian 12 6.1 guest capture (tests/e2e/captures/6.1.0-56-amd64/
dmesg.txt: 396 lines of boot chatter, a memory_failure and a machine-check record) plus the bare
EDAC, soft-offline and CEC lines of tests/fixtures/parse (kernel format strings cited there).
They are rendered with their real timestamps by the real tools of this machine wherever a tool
exists: util-linux `dmesg -F` (2.38.1 on Debian 12) in every time format, and `journalctl
--file` (systemd 252) in every output mode, over a journal written by systemd-journal-remote.
Where the producer is not on the machine the prefix is built from its published format:
rsyslog's RSYSLOG_TraditionalFileFormat ("%TIMESTAMP% %HOSTNAME% %syslogtag%%msg%") and
RSYSLOG_FileFormat (RFC 3339 timestamp), RFC 5424 ("<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD
MSG"), /dev/kmsg records ("PRI,SEQ,USEC,FLAGS;MSG", Documentation/ABI/testing/dev-kmsg), the
printk caller id ("[%5lu.%06lu][%6s]", kernel/printk/printk.c print_time/print_caller, v5.1+),
mail quoting, CRLF and vendor "[date time][uptime]" double prefixes.

Each rendering must give exactly the events of the bare messages (every field but `time` and
`line`), the same malformed and unparsed counts, and times that keep the capture's spacing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hwpoisond.core.model import Event
from hwpoisond.parse import LineParser
from tests.parsehelp import without_time

ROOT = Path(__file__).resolve().parents[3]
CAPTURE = ROOT / "tests/e2e/captures/6.1.0-56-amd64/dmesg.txt"
FIXTURES = ROOT / "tests/fixtures/parse"
JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
#: The wall clock of boot for the journal and the composed syslog styles (2025-12-04 14:28:00).
BOOT_EPOCH = 1_764_858_480
DMESG_LINE = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)$")


def _messages() -> list[tuple[float, str]]:
    """(seconds since boot, bare message) in log order: the capture, then every dmesg-stamped
    line of the kernel-text fixtures with its stamp taken off."""
    out: list[tuple[float, str]] = []
    for line in CAPTURE.read_text().splitlines():
        m = DMESG_LINE.match(line)
        if m is not None:
            out.append((float(m[1]), m[2]))
    t = out[-1][0]
    for path in sorted(FIXTURES.glob("kmsg_*.txt")):
        for line in path.read_text().splitlines():
            m = DMESG_LINE.match(line)
            if m is not None:
                t += 1.5
                out.append((round(t, 6), m[2]))
    return out


MESSAGES = _messages()


def _parse(lines: list[str], *, block: bool) -> tuple[list[Event], LineParser]:
    parser = LineParser()
    parser.set_year(2025)
    if block:
        events = parser.feed_block("\n".join(lines) + "\n", 1)
    else:
        events = [e for n, s in enumerate(lines, 1) for e in parser.feed(s, n)]
    return events + parser.flush(), parser


def _iso(t: float, sep: str = "T", fraction: bool = True) -> str:
    moment = datetime.fromtimestamp(BOOT_EPOCH + t, UTC)
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S")
    return text + (f".{moment.microsecond:06d}" if fraction else "")


def _rfc3164(t: float) -> str:
    moment = datetime.fromtimestamp(BOOT_EPOCH + t, UTC)
    return f"{moment:%b} {moment.day:2d} {moment:%H:%M:%S}"


#: Composed styles: name → (render(t, message), time kind). Time kinds: "boot" (seconds since
#: boot, exact), "wall" (wall clock to the microsecond), "wall_s" (wall clock to the second).
COMPOSED: dict[str, tuple[Any, str]] = {
    "rsyslog-traditional": (lambda t, m: f"{_rfc3164(t)} node17 kernel: {m}", "wall_s"),
    "rsyslog-traditional+uptime": (
        lambda t, m: f"{_rfc3164(t)} node17 kernel: [{t:12.6f}] {m}",
        "wall_s",
    ),
    "rfc3164-no-host": (lambda t, m: f"{_rfc3164(t)} kernel: {m}", "wall_s"),
    "rsyslog-file-format": (
        lambda t, m: f"{_iso(t)}+00:00 node17 kernel: {m}",
        "wall",
    ),
    "rfc5424": (lambda t, m: f"<4>1 {_iso(t)}Z node17 kernel - - - {m}", "wall"),
    "rfc5424-sd": (
        lambda t, m: f'<4>1 {_iso(t)}+00:00 node17 kernel - - [meta sequenceId="1"] {m}',
        "wall",
    ),
    "dev-kmsg": (lambda t, m: f"4,{int(t * 7)},{round(t * 1e6)},-;{m}", "boot"),
    "dev-kmsg-caller": (lambda t, m: f"4,{int(t * 7)},{round(t * 1e6)},-,caller=T1;{m}", "boot"),
    "printk-caller-task": (lambda t, m: f"[{t:12.6f}][  T1234] {m}", "boot"),
    "printk-caller-cpu": (lambda t, m: f"<4>[{t:12.6f}][    C3] {m}", "boot"),
    "leading-space": (lambda t, m: f"   [{t:12.6f}] {m}", "boot"),
    "tab": (lambda t, m: f"\t[{t:12.6f}] {m}", "boot"),
    "crlf": (lambda t, m: f"[{t:12.6f}] {m}\r", "boot"),
    "mail-quote": (lambda t, m: f"> [{t:12.6f}] {m}", "boot"),
    "mail-quote-twice": (lambda t, m: f">> [{t:12.6f}] {m}", "boot"),
    "mail-quote-spaced": (lambda t, m: f"> > {_iso(t)}+0000 node17 kernel: {m}", "wall"),
    "vendor-double": (lambda t, m: f"[{_iso(t, ' ', False)}][{t:12.6f}] {m}", "wall_s"),
}


def _dmesg(flags: list[str], raw: Path) -> list[str]:
    proc = subprocess.run(
        ["dmesg", "-F", str(raw), *flags], capture_output=True, text=True, check=True
    )
    return proc.stdout.splitlines()


#: util-linux dmesg time formats: flags → time kind ("none" when the format has no usable time:
#: reltime prints minutes only after the first line, delta only differences).
DMESG_STYLES: dict[str, tuple[list[str], str]] = {
    "dmesg": ([], "boot"),
    "dmesg-T": (["-T"], "wall_s"),
    "dmesg-iso": (["--time-format", "iso"], "wall"),
    "dmesg-reltime": (["--time-format", "reltime"], "none"),
    "dmesg-delta": (["--time-format", "delta"], "none"),
    "dmesg-notime": (["--time-format", "notime"], "none"),
    "dmesg-x": (["-x"], "boot"),
    "dmesg-r": (["-r"], "boot"),
    "dmesg-d": (["-d"], "boot"),
    "dmesg-x-T": (["-x", "-T"], "wall_s"),
}

#: journalctl output modes → time kind.
JOURNAL_STYLES: dict[str, str] = {
    "short": "wall_s",
    "short-precise": "wall",
    "short-iso": "wall_s",
    "short-iso-precise": "wall",
    "short-monotonic": "boot",
    "short-full": "wall_s",
    "short-unix": "wall",
    "with-unit": "wall_s",
    "cat": "none",
    "json": "wall",
    "json-seq": "wall",
}


Reference = tuple[list[dict[str, Any]], list[Event], LineParser]


@pytest.fixture(scope="module")
def reference() -> Reference:
    events, parser = _parse([m for _, m in MESSAGES], block=False)
    kinds = {e.source for e in events}
    # The matrix is only worth something if the messages carry events of every kernel-text kind.
    assert {"kmsg_edac", "kmsg_mce", "kmsg_memory_failure", "kmsg_soft_offline"} <= kinds
    return without_time(events), events, parser


@pytest.fixture(scope="module")
def raw_dmesg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("dmesg") is None:
        pytest.fail("dmesg (util-linux) is not installed")
    path = tmp_path_factory.mktemp("dmesg") / "raw"
    path.write_text("".join(f"<4>[{t:12.6f}] {m}\n" for t, m in MESSAGES))
    return path


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not JOURNAL_REMOTE.exists():
        pytest.fail("systemd-journal-remote is not installed (scripts/bootstrap.sh installs it)")
    path = tmp_path_factory.mktemp("journal") / "kernel.journal"
    records = []
    for i, (t, message) in enumerate(MESSAGES):
        usec = round(t * 1e6)
        fields = {
            "__CURSOR": f"s=0;i={i + 1}",
            "__REALTIME_TIMESTAMP": str(BOOT_EPOCH * 1_000_000 + usec),
            "__MONOTONIC_TIMESTAMP": str(usec),
            "_BOOT_ID": "5d0c3f9a6b1e4c2f8a7d9e0b1c2d3e4f",
            "_TRANSPORT": "kernel",
            "_HOSTNAME": "node17",
            "SYSLOG_IDENTIFIER": "kernel",
            "PRIORITY": "4",
            "_SOURCE_MONOTONIC_TIMESTAMP": str(usec),
            "MESSAGE": message,
        }
        records.append("".join(f"{k}={v}\n" for k, v in fields.items()) + "\n")
    subprocess.run(
        [str(JOURNAL_REMOTE), "-o", str(path), "--split-mode=none", "-"],
        input="".join(records).encode(),
        capture_output=True,
        check=True,
    )
    return path


def _check(
    name: str,
    lines: list[str],
    time_kind: str,
    reference: Reference,
) -> None:
    want, want_events, want_parser = reference
    for block in (False, True):
        got, parser = _parse(lines, block=block)
        assert without_time(got) == want, f"{name} (block={block})"
        assert parser.stats.malformed == want_parser.stats.malformed, name
        assert parser.stats.unparsed_candidates == want_parser.stats.unparsed_candidates, (
            name,
            parser.stats.unparsed_examples,
        )
    assert all(e.time is None for e in want_events)  # bare messages carry no time
    # An event's time is that of the message on its line (the first line of a record).
    expected = [MESSAGES[e.line - 1][0] for e in want_events if e.line is not None]
    times = [e.time for e in got]
    if time_kind == "none":
        return
    assert None not in times, f"{name}: an event without a time"
    if time_kind == "boot":
        assert times == pytest.approx(expected, abs=1e-6), name
        return
    walls = [BOOT_EPOCH + t for t in expected]
    tolerance = 1e-6 if time_kind == "wall" else 1.0
    if name.startswith("dmesg-"):
        # dmesg -T/iso adds this machine's boot time; compare the spacing, not the origin.
        origin = times[0]
        assert origin is not None
        walls = [w - walls[0] + origin for w in walls]
    assert times == pytest.approx(walls, abs=tolerance), name


@pytest.mark.parametrize("name", sorted(COMPOSED))
def test_composed_prefixes(name: str, reference: Reference) -> None:
    render, time_kind = COMPOSED[name]
    _check(name, [render(t, m) for t, m in MESSAGES], time_kind, reference)


@pytest.mark.parametrize("name", sorted(DMESG_STYLES))
def test_real_dmesg_output(name: str, raw_dmesg: Path, reference: Reference) -> None:
    flags, time_kind = DMESG_STYLES[name]
    lines = _dmesg(flags, raw_dmesg)
    assert len(lines) == len(MESSAGES)
    _check(name, lines, time_kind, reference)


@pytest.mark.parametrize("mode", sorted(JOURNAL_STYLES))
def test_real_journalctl_output(mode: str, journal: Path, reference: Reference) -> None:
    proc = subprocess.run(
        ["journalctl", "--file", str(journal), "-o", mode, "--no-pager", "--utc"],
        capture_output=True,
        text=True,
        check=True,
    )
    # Split on newlines only: json-seq starts each record with RS (0x1e), which
    # str.splitlines() would also take for a line end.
    lines = [line for line in proc.stdout.split("\n") if line and not line.startswith("-- ")]
    assert len(lines) == len(MESSAGES), proc.stdout[:500]
    _check(f"journalctl-{mode}", lines, JOURNAL_STYLES[mode], reference)


def test_journal_json_takes_message_and_realtime() -> None:
    entry = {
        "__REALTIME_TIMESTAMP": "1764860000123456",
        "_SOURCE_MONOTONIC_TIMESTAMP": "1523456789",
        "MESSAGE": "Memory failure: 0x3ff1f: recovery action for free buddy page: Recovered",
    }
    parser = LineParser()
    (event,) = parser.feed(json.dumps(entry))
    assert (event.source, event.pfn, event.time) == (
        "kmsg_memory_failure",
        0x3FF1F,
        1764860000.123456,
    )
    # A MESSAGE that is not UTF-8 comes as a byte array.
    entry["MESSAGE"] = list(entry["MESSAGE"].encode())  # type: ignore[assignment]
    assert [e.pfn for e in parser.feed(json.dumps(entry))] == [0x3FF1F]
