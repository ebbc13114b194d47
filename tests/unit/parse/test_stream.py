"""LineParser behaviour beyond single fixtures: malformed counting, record assembly, time rules,
the block fast path, JSON round trip, and the `hwpoisond parse` command on hostile input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hwpoisond.commands.parse import MAX_LINE_BYTES, READ_BLOCK_BYTES, iter_text_blocks
from hwpoisond.core.model import Event
from hwpoisond.parse import LineParser, event_from_json, event_to_json
from hwpoisond.parse.stream import MCE_RECORD_MAX_GAP_LINES
from hwpoisond.parse.trace import print_symbolic_tables

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "parse"
MCE_START = "[ 1.0] mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: 9c0000000008009f"
MCE_REGS = "[ 1.0] mce: [Hardware Error]: TSC 0 ADDR 7654000 MISC 86"
MCE_END = "[ 1.0] mce: [Hardware Error]: PROCESSOR 0:806f8 TIME 1 SOCKET 0 APIC 0 microcode 1"


def run(lines: list[str]) -> tuple[list[Event], LineParser]:
    parser = LineParser()
    events = [e for line in lines for e in parser.feed(line)]
    return events + parser.flush(), parser


def test_malformed_lines_are_counted_not_raised() -> None:
    events, parser = run(
        [
            "  x-1 [000] d.h1. 1.0: mce_record: CPU: zero, MC7: nothex",
            "  x-1 [000] d.h1. 1.0: mc_event: 1 Corrected error: on X (mc:0 location:bad)",
            "  x-1 [000] d.h1. 1.0: memory_failure_event: pfn zz: recovery action for x: y",
            'EDAC MC0: CE page 0xzz, offset 0x0, grain 8, row 0, labels "": x',
            "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank x: zz",
            "Memory failure: 0x12: recovery action for a page: ",
            "RAS: Soft-offlining pfn: 0xnothex",
        ]
    )
    assert events == []
    assert parser.stats.malformed == {
        "mce_record": 1,
        "mc_event": 1,
        "memory_failure_event": 1,
        "kmsg_edac": 1,
        "kmsg_mce": 1,
        "kmsg_memory_failure": 1,
        "kmsg_cec": 1,
    }
    assert parser.stats.lines == 7


def test_edac_reports_without_a_usable_detail_are_events_without_an_address() -> None:
    # The first as quoted from a real 2015 report (serverdevworker.com/6966c0587); then the
    # v5.7+ format (kmsg_edac_v5.7+.txt) cut short, and with its page redacted.
    events, parser = run(
        [
            "EDAC MC0: 1 CE memory read error",
            "EDAC MC0: 2 CE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (channel:0 "
            "slot:0 page:0x12",
            "EDAC MC1: 1 UE memory read error on DIMM_A1 (channel:0 slot:0 page:0xXXXXX "
            "offset:0x0 grain:32)",
        ]
    )
    assert [(e.mc, e.severity, e.count, e.label, e.msg, e.pfn) for e in events] == [
        (0, "corrected", 1, None, "memory read error", None),
        (0, "corrected", 2, "CPU_SrcID#0_MC#0_Chan#0_DIMM#0", "memory read error", None),
        (1, "uncorrected", 1, "DIMM_A1", "memory read error", None),
    ]
    assert dict(events[1].extra) == {"detail_unparsed": "channel:0 slot:0 page:0x12"}
    assert parser.stats.malformed == {}


def test_mce_record_line_is_its_first_line_and_it_closes_at_processor() -> None:
    parser = LineParser()
    assert parser.feed(MCE_START, 10) == []
    assert parser.feed("[ 1.0] unrelated line", 11) == []
    assert parser.feed(MCE_REGS, 12) == []
    (event,) = parser.feed(MCE_END, 13)
    assert (event.line, event.phys_addr, event.source) == (10, 0x7654000, "kmsg_mce")
    assert parser.flush() == []


def test_incomplete_mce_record_is_emitted_at_flush_or_before_the_next_event() -> None:
    events, _ = run([MCE_START, MCE_REGS])
    assert [(e.line, e.phys_addr, ("incomplete", "1") in e.extra) for e in events] == [
        (1, 0x7654000, True)
    ]
    # A following event closes it first, so output stays in input order.
    events, _ = run([MCE_START, "[ 2.0] RAS: Soft-offlining pfn: 0x10"])
    assert [(e.line, e.kind) for e in events] == [(1, "memory_error"), (2, "cec_offline")]


def test_mce_record_is_closed_after_a_gap_of_unrelated_lines() -> None:
    parser = LineParser()
    parser.feed(MCE_START)
    out: list[Event] = []
    for _ in range(MCE_RECORD_MAX_GAP_LINES + 1):
        out += parser.feed("[ 1.5] noise")
    assert [e.line for e in out] == [1]
    # The late TSC line no longer belongs to anything.
    assert parser.feed(MCE_REGS) == [] and parser.flush() == []


def test_journal_short_time_rolls_the_year_over() -> None:
    line = "{} host kernel: RAS: Soft-offlining pfn: 0x10"
    events, _ = run([line.format("Dec 31 23:59:59"), line.format("Jan 01 00:00:01")])
    assert [e.time for e in events] == [978307199.0, 978307201.0]  # 2000-12-31, 2001-01-01 UTC


def test_time_sources() -> None:
    events, _ = run(
        [
            "[ 5.250000] RAS: Soft-offlining pfn: 0x10",
            "2024-01-02T03:04:05.5+0100 h kernel: RAS: Soft-offlining pfn: 0x10",
            "2024-01-02T03:04:05Z h kernel: [ 9.0] RAS: Soft-offlining pfn: 0x10",
            "RAS: Soft-offlining pfn: 0x10",
        ]
    )
    assert [e.time for e in events] == [5.25, 1704161045.5, 1704164645.0, None]


def test_feed_block_equals_feed_line_by_line() -> None:
    text = "\n".join(p.read_text() for p in sorted(FIXTURES.glob("*.txt"))).rstrip("\n")
    by_line, p1 = run(text.split("\n"))
    p2 = LineParser()
    half = len(text) // 2
    cut = text.index("\n", half)
    by_block = p2.feed_block(text[:cut]) + p2.feed_block(text[cut + 1 :]) + p2.flush()
    assert len(by_line) > 40
    assert by_block == by_line
    assert p2.stats == p1.stats


def test_json_output_reads_back_as_the_same_events() -> None:
    text = "\n".join(p.read_text() for p in sorted(FIXTURES.glob("*.txt")))
    events, _ = run(text.split("\n"))
    replayed, parser = run([json.dumps(event_to_json(e)) for e in events])
    assert replayed == [
        Event(**{**{f: getattr(e, f) for f in e.__slots__}, "line": i})
        for i, e in enumerate(events, 1)
    ]
    assert parser.stats.malformed == {}


def test_event_from_json_accepts_at_and_rejects_non_events() -> None:
    event = event_from_json(
        {
            "kind": "memory_error",
            "source": "kmsg_edac",
            "severity": None,
            "at": 7,
            "phys_addr": 8192,
        }
    )
    assert event is not None and (event.time, event.pfn) == (7.0, 2)
    bad: dict[str, Any]
    for bad in (
        {"kind": "nope", "source": "kmsg_edac"},
        {"kind": "mce", "source": "mce_record", "severity": "bad"},
        {"kind": "mce", "source": "mce_record", "severity": None, "pfn": "12"},
        {"kind": "mce", "source": "mce_record", "severity": None, "dram": []},
        {"kind": "mce", "source": "mce_record", "severity": None, "extra": {"a": 1}},
        {"kind": "mce", "source": "mce_record", "severity": None, "count": True},
    ):
        assert event_from_json(bad) is None, bad


def test_brace_lines_that_are_not_events() -> None:
    events, parser = run(['{"kind": "nope"}', "{1}[Hardware Error]: event severity: corrected"])
    assert events == [] and parser.stats.malformed == {"json": 1}


def test_iter_text_blocks_keeps_line_count_and_decodes_with_replacement() -> None:
    data = b"a\n" + b"x" * (MAX_LINE_BYTES * 3) + b"\nb\xff\xfe\nlast"
    lines = "\n".join(iter_text_blocks(io.BytesIO(data))).split("\n")
    assert len(lines) == 4  # inside a block a long line is the parser's to cut (MAX_LINE_CHARS)
    assert lines[0] == "a" and lines[2] == "b\ufffd\ufffd" and lines[3] == "last"


def test_iter_text_blocks_bounds_a_line_without_newline() -> None:
    data = b"y" * (READ_BLOCK_BYTES * 2 + 5) + b"\nz"
    blocks = list(iter_text_blocks(io.BytesIO(data)))
    assert [len(b) for b in blocks] == [MAX_LINE_BYTES, 1] and blocks[1] == "z"


def _parse(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hwpoisond", "parse", *args],
        input=stdin,
        capture_output=True,
        check=False,
    )


def test_command_survives_binary_garbage_and_long_lines(tmp_path: Path) -> None:
    junk = bytes(b for b in range(256) if b != 0x0A) * 4000 + b"\n" + b"EDAC MC0: " * 100_000
    junk += b"\n[ 1.0] RAS: Soft-offlining pfn: 0x42\n\x00\xff"
    proc = _parse("--stats", stdin=junk)
    assert proc.returncode == 0, proc.stderr
    (event,) = [json.loads(x) for x in proc.stdout.splitlines()]
    assert (event["line"], event["pfn"], event["kind"]) == (3, 0x42, "cec_offline")
    assert json.loads(proc.stderr)["lines"] == 4


def test_command_missing_file_is_exit_66(tmp_path: Path) -> None:
    proc = _parse(str(tmp_path / "absent.log"))
    assert proc.returncode == 66
    assert b"absent.log" in proc.stderr


def test_command_numbers_lines_across_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x\n[ 1.0] RAS: Soft-offlining pfn: 0x1\n")
    b.write_text("[ 2.0] RAS: Soft-offlining pfn: 0x2\n")
    proc = _parse(str(a), str(b))
    assert [json.loads(x)["line"] for x in proc.stdout.splitlines()] == [2, 3]


def test_hostile_long_lines_parse_in_linear_time() -> None:
    """Free-text fields (DIMM labels are writable in sysfs) must not make a regex backtrack
    quadratically: each of these took seconds with single-regex parsers."""
    hostile = [
        "EDAC MC0: 1 CE " + "on " * 2700,
        "EDAC MC0: 1 CE " + "x on y (" * 1000,
        "EDAC MC0: 1 CE a on b (" + "page:0x1 offset:0x1 grain:1 " * 290,
        "  a-1 [000] d.h1. 1.0: mc_event: 1 Corrected error: " + "x on y " * 1150,
        "  a-1 [000] d.h1. 1.0: mc_event: 1 Corrected error: " + "x on y (mc:" * 800,
        "Memory failure: 0x1: recovery action for " + ": recovery action for " * 350,
    ]
    for line in hostile:
        parser = LineParser()
        start = time.perf_counter()
        parser.feed(line[:8192])
        assert time.perf_counter() - start < 0.25, line[:60]


def test_print_symbolic_tables_from_a_real_format_file() -> None:
    """memory_failure_event's format file of Debian 12's 6.1 kernel (captured in a qemu guest)."""
    tables = print_symbolic_tables((FIXTURES / "memory_failure_event_v6.1.format").read_text())
    assert tables["result"] == {0: "Ignored", 1: "Failed", 2: "Delayed", 3: "Recovered"}
    assert len(tables["type"]) == 20
    assert (tables["type"][0], tables["type"][16], tables["type"][19]) == (
        "reserved kernel page",
        "free buddy page",
        "unknown page",
    )


# A real mc_event line (skx_edac, tests/fixtures/parse/trace_mc_event_v3.5-v6.x.txt) with its
# count, mc and address replaced.
MC_EVENT = (
    "  kworker/0:1-12    [002] d.h1   7.250000: mc_event: {count} Corrected error: memory read "
    "error on CPU_SrcID#0_MC#0_Chan#1_DIMM#0 (mc:{mc} location:1:0:-1 address:{addr} grain:32 "
    "syndrome:0x00000000 err_code:0x0000:0x009f socket:0 imc:0 rank:0 bg:1 ba:2 row:0x1f col:0x8)"
)
EDAC_KMSG = (
    "[ 1234.567800] EDAC MC{mc}: {count} CE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 "
    "(channel:0 slot:0 page:{page} offset:0x567 grain:32 syndrome:0x0 - err_code:0000:009f "
    "socket:0 imc:0 rank:0 bg:1 ba:2 row:0x10 col:0x8)"
)
MCE_RECORD = (
    "     kworker/0:2-48      [000] .....    36.460121: mce_record: CPU: {cpu}, MCGc/s: 0/0, "
    "MC7: 9c0000000008009f, IPID: 0000000000000000, ADDR/MISC/SYND: {addr}/0000000000000086/"
    "0000000000000000, RIP: 00:<0000000000000000>, TSC: 1bb1a5cb53, PROCESSOR: 0:60fb1, "
    "TIME: 1795736603, SOCKET: 0, APIC: 0"
)
MF_TRACE = (
    "              sh-115     [000] .....    29.905845: memory_failure_event: pfn {pfn}: "
    "recovery action for free buddy page: Recovered"
)


def test_integers_beyond_their_kernel_type_are_parse_failures_not_events() -> None:
    big = 1 << 64
    lines = {
        "mc_event": [
            MC_EVENT.format(count=big, mc=0, addr="0x1000"),
            MC_EVENT.format(count=0x10000, mc=0, addr="0x1000"),  # error_count is u16
            MC_EVENT.format(count=1, mc=1 << 63, addr="0x1000"),
            MC_EVENT.format(count=1, mc=256, addr="0x1000"),  # mc_index is u8
            MC_EVENT.format(count=1, mc=0, addr=hex(big)),
        ],
        "kmsg_edac": [
            EDAC_KMSG.format(mc=0, count=big, page="0x1234"),
            EDAC_KMSG.format(mc=big, count=1, page="0x1234"),
            EDAC_KMSG.format(mc=0, count=1, page=hex(1 << 60)),
        ],
        "mce_record": [
            MCE_RECORD.format(cpu=big, addr="0000000007654000"),
            MCE_RECORD.format(cpu=0, addr="1" + "0" * 16),
        ],
        "memory_failure_event": [MF_TRACE.format(pfn=hex(1 << 60))],
        "kmsg_memory_failure": [
            f"Memory failure: {hex(1 << 60)}: recovery action for free buddy page: Recovered"
        ],
    }
    for source, source_lines in lines.items():
        for line in source_lines:
            events, parser = run([line])
            assert events == [], line
            assert parser.stats.malformed == {source: 1}, line


def test_the_largest_value_of_each_kernel_type_still_parses() -> None:
    events, parser = run(
        [
            MC_EVENT.format(count=0xFFFF, mc=255, addr="0xfffffffffffff000"),
            MCE_RECORD.format(cpu=0xFFFFFFFF, addr="fffffffffffff000"),
            MF_TRACE.format(pfn=hex((1 << 52) - 1)),
        ]
    )
    assert parser.stats.malformed == {}
    assert [(e.count, e.mc, e.pfn) for e in events] == [
        (0xFFFF, 255, (1 << 52) - 1),
        (1, None, (1 << 52) - 1),
        (1, None, (1 << 52) - 1),
    ]
    assert events[1].cpu == 0xFFFFFFFF


def test_candidate_lines_no_parser_accepts_are_counted_with_examples() -> None:
    # Real formats not parsed yet: the AMD decoder's lines (drivers/edac/mce_amd.c, a real
    # capture quoted at serverdevworker.com/926365abc) and a 2.6-era console machine check
    # without "[Hardware Error]" (serverdevworker.com/6966c0587), bare and with prefixes.
    unknown = [
        "[Hardware Error]: Northbridge Error (node 0): DRAM ECC error detected on the NB.",
        "kernel:[  723.595062] [Hardware Error]: cache level: L3/GEN, mem/io: MEM, mem-tx: RD, "
        "part-proc: SRC (no timeout)",
        "CPU 0: Machine Check Exception: 0 Bank 5: 8c00004000010090",
        "[    2.000000] RAS: CEC: Invalid pfn: 0x0",
    ]
    known = [EDAC_KMSG.format(mc=0, count=1, page="0x1234")]
    info = [
        "EDAC MC0: Giving out device to module skx_edac controller Skylake Socket#0 IMC#0: "
        "DEV 0000:2e:0a.0 (INTERRUPT)",
        "RAS: Correctable Errors collector initialized.",
        # Thermal notices under "mce: ", as published in real dmesg outputs (a 2019 benchmark
        # report and a 2019 forum post with dmesg -T).
        "[70524.549039] mce: CPU4: Core temperature above threshold, cpu clock throttled "
        "(total events = 3058)",
        "[Thu Oct 10 09:36:06 2019] mce: CPU2: Package temperature above threshold, cpu clock "
        "throttled (total events = 252658)",
    ]
    other = ["usb 1-1: new high-speed USB device number 2 using xhci_hcd", "CPU 3 is now offline"]
    for accept_json in (True, False):
        parser = LineParser(accept_json=accept_json)
        events = [e for line in unknown + known + info + other for e in parser.feed(line)]
        assert [e.source for e in events] == ["kmsg_edac"]
        assert parser.stats.unparsed_candidates == len(unknown)
        assert parser.stats.unparsed_examples == [line for line in unknown]
        assert parser.stats.notices == {"kmsg_info": 4}
    # The same through the block fast path, and only the first five are kept as examples.
    parser = LineParser()
    parser.feed_block("\n".join(other + unknown * 3) + "\n")
    assert parser.stats.unparsed_candidates == 12
    assert len(parser.stats.unparsed_examples) == 5


def _hwpoisond(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hwpoisond", *argv], capture_output=True, text=True, check=False
    )


def test_replay_warns_about_lines_it_did_not_understand(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_text(
        "[  723.595042] [Hardware Error]: Northbridge Error (node 0): DRAM ECC error detected "
        "on the NB.\n" + EDAC_KMSG.format(mc=0, count=1, page="0x1234") + "\n"
    )
    proc = _hwpoisond("replay", "--json", str(log))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["unparsed_candidate_lines"] == 1
    assert "1 line(s) about memory errors were not understood" in proc.stderr
    stats = _hwpoisond("parse", "--stats", str(log))
    counts = json.loads(stats.stderr.strip().splitlines()[-1])
    assert counts["unparsed_candidates"] == 1
    assert counts["unparsed_examples"] == [
        "[  723.595042] [Hardware Error]: Northbridge Error (node 0): DRAM ECC error detected "
        "on the NB."
    ]


MF_SHORT = (
    "{stamp} node17 kernel: Memory failure: 0x1a2b3: recovery action for dirty LRU page: Failed"
)


def test_yearless_stamps_take_the_year_of_the_files_mtime(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    # A log that crosses New Year and was last written on 2 Jan 2026: it began in 2025.
    log.write_text(
        MF_SHORT.format(stamp="Dec 31 23:59:58")
        + "\n"
        + MF_SHORT.format(stamp="Jan  1 00:00:02")
        + "\n"
    )
    mtime = datetime(2026, 1, 2, 8, 0, tzinfo=UTC).timestamp()
    os.utime(log, (mtime, mtime))
    proc = _hwpoisond("parse", "--stats", str(log))
    assert proc.returncode == 0, proc.stderr
    times = [json.loads(line)["time"] for line in proc.stdout.splitlines()]
    assert times == [
        datetime(2025, 12, 31, 23, 59, 58, tzinfo=UTC).timestamp(),
        datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC).timestamp(),
    ]
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert stats["yearless_timestamps"] == 2
    assert stats["first_year"] == 2025
    assert stats["year_from"] == "file modification time (2026-01-02)"
    proc = _hwpoisond("parse", "--stats", "--year", "2019", str(log))
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert (stats["first_year"], stats["year_from"]) == (2019, "--year")
    assert json.loads(proc.stdout.splitlines()[1])["time"] == (
        datetime(2020, 1, 1, 0, 0, 2, tzinfo=UTC).timestamp()
    )
    bad = _hwpoisond("parse", "--year", "20250", str(log))
    assert bad.returncode == 2
    assert "--year 20250: expected 1970 to 9999" in bad.stderr


def test_replay_reads_stdin_and_warns_when_time_bases_are_mixed(tmp_path: Path) -> None:
    boot = tmp_path / "dmesg.txt"
    boot.write_text(EDAC_KMSG.format(mc=0, count=1, page="0x1234") + "\n")
    wall = (
        "2025-12-04T14:53:20+0000 node17 kernel: "
        + EDAC_KMSG.format(mc=0, count=1, page="0x1234").partition("] ")[2]
    )
    proc = subprocess.run(
        [sys.executable, "-m", "hwpoisond", "replay", "--json", str(boot), "-"],
        input=wall + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["events"] == 2
    assert "mixes wall-clock times with seconds since boot" in proc.stderr
    alone = subprocess.run(
        [sys.executable, "-m", "hwpoisond", "replay", "--json", "-"],
        input=wall + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(alone.stdout)["events"] == 1
    assert alone.stderr == ""


def test_64_bit_registers_are_hex_strings_in_json_and_read_back() -> None:
    # The qemu-guest capture of kmsg_mce_v4.x-v6.x.txt (Debian 12, 6.1): MCi_STATUS is above
    # 2^53, where a JSON number would be rounded by jq.
    record = [
        "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: 9c0000000008009f",
        "mce: [Hardware Error]: TSC 0 ADDR 7654000 MISC 86 ",
        "mce: [Hardware Error]: PROCESSOR 0:806f8 TIME 1714979290 SOCKET 0 APIC 0 microcode 1",
    ]
    parser = LineParser()
    (event,) = [e for line in record for e in parser.feed(line)] + parser.flush()
    obj = event_to_json(event)
    assert obj["status"] == "0x9c0000000008009f"
    text = json.dumps(obj)
    assert "11240984669917282463" not in text
    assert event_from_json(json.loads(text)) == event


def test_parse_into_a_closed_pipe_exits_0_quietly(tmp_path: Path) -> None:
    # `hwpoisond parse big.log | head -1`: the reader takes one line and closes the pipe.
    log = tmp_path / "big.log"
    log.write_text((EDAC_KMSG.format(mc=0, count=1, page="0x1234") + "\n") * 200_000)
    with subprocess.Popen(
        [sys.executable, "-m", "hwpoisond", "parse", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=60)
    assert json.loads(first)["pfn"] == 0x1234
    assert (code, err) == (0, "")


def test_parse_stats_break_the_counts_down_per_file(tmp_path: Path) -> None:
    good = tmp_path / "good.log"
    good.write_text(EDAC_KMSG.format(mc=0, count=1, page="0x1234") + "\nusb 1-1: new device\n")
    odd = tmp_path / "odd.log"
    odd.write_text(
        "[Hardware Error]: Northbridge Error (node 0): DRAM ECC error detected on the NB.\n"
    )
    proc = _hwpoisond("parse", "--stats", str(good), str(odd))
    stats = json.loads(proc.stderr.strip().splitlines()[-1])
    assert stats["files"] == [
        {"file": str(good), "lines": 2, "events": 1, "malformed": 0, "unparsed_candidates": 0},
        {"file": str(odd), "lines": 1, "events": 0, "malformed": 0, "unparsed_candidates": 1},
    ]
