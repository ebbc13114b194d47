"""Property tests: no parser raises on any input, and lines generated from the kernel's own
format strings (printf'd here exactly as the kernel does) parse back to the generated fields.

Example counts are modest by default; HWPOISOND_HYPOTHESIS_MAX=100000 sets max_examples for the
big run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hwpoisond.core.model import DramLocation, Event
from hwpoisond.parse import LineParser, event_from_json, event_to_json, kmsg, trace
from hwpoisond.parse.mce import decode_mca
from tests.parsehelp import without_time

MAX_EXAMPLES = int(os.environ.get("HWPOISOND_HYPOTHESIS_MAX", "300"))
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def kfmt(fmt: str, *args: object) -> str:
    """printf as the kernel does it: Python's % ignores one length modifier, not two."""
    return re.sub(r"%([#0-9]*)ll", r"%\1l", fmt) % args


TRACE_PREFIX = "          <idle>-0       [%03d] d.h1. %12.6f: %s: "
u64 = st.integers(0, (1 << 64) - 1)
words = st.from_regex(r"[A-Za-z][A-Za-z0-9_#-]{0,20}( [A-Za-z0-9_-]{1,10}){0,3}", fullmatch=True)
labels = st.from_regex(r"[A-Za-z][A-Za-z0-9_#]{0,30}", fullmatch=True)
# Garbage that looks like our formats: fragments of the real anchors glued to random text.
ANCHORS = [
    ": mc_event: ",
    ": mce_record: ",
    ": memory_failure_event: ",
    ": extlog_mem_event: ",
    "EDAC MC0: 1 CE ",
    "mce: [Hardware Error]: CPU 1: Machine Check: ",
    "mce: [Hardware Error]: TSC ",
    "Memory failure: 0x1: ",
    "Soft offline: ",
    "RAS: Soft-offlining pfn: ",
    "[ 1.0] ",
    "Jan 01 00:00:00 h kernel: ",
    "2024-01-01T00:00:00+0000 h kernel: ",
    "{",
]
hostile = st.one_of(
    st.text(max_size=300),
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=40), st.sampled_from(ANCHORS), st.text()),
)


# --- never raise ------------------------------------------------------------------------------


@SETTINGS
@given(st.lists(hostile, max_size=8))
def test_line_parser_never_raises(lines: list[str]) -> None:
    parser = LineParser()
    for line in lines:
        for event in parser.feed(line):
            assert isinstance(event, Event)
    parser.flush()
    assert parser.stats.malformed.get("unknown", 0) == 0  # no exception was swallowed


@SETTINGS
@given(st.lists(hostile, max_size=8))
def test_feed_block_never_raises(lines: list[str]) -> None:
    parser = LineParser()
    parser.feed_block("\n".join(lines))
    parser.flush()
    assert parser.stats.malformed.get("unknown", 0) == 0


PARSERS: list[Callable[[str], object]] = [
    trace.parse_mc_event,
    trace.parse_mce_record,
    trace.parse_memory_failure_event,
    trace.parse_extlog_mem_event,
    trace.parse_dram_location,
    trace.print_symbolic_tables,
    trace.split_trace_line,
    kmsg.split_prefix,
    kmsg.parse_edac,
    kmsg.parse_page_message,
    kmsg.hardware_error_body,
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda f: f.__name__)
@SETTINGS
@given(text=hostile)
def test_each_parser_never_raises(parser: Callable[[str], object], text: str) -> None:
    parser(text)


# --- round trips ------------------------------------------------------------------------------

MC_EVENT_FMT = (
    "%d %s error%s:%s%s on %s (mc:%d location:%d:%d:%d address:0x%08lx grain:%d "
    "syndrome:0x%08lx%s%s)"
)
SKX_DETAIL_FMT = "err_code:0x%04x:0x%04x socket:%d imc:%d rank:%d bg:%d ba:%d row:0x%x col:0x%x"


@SETTINGS
@given(
    count=st.integers(1, 0xFFFF),
    etype=st.sampled_from(list(trace.MC_EVENT_SEVERITY)),
    msg=words.filter(lambda m: " on " not in m) | st.just(""),
    label=labels,
    mc=st.integers(0, 255),
    layers=st.tuples(*[st.integers(-1, 127)] * 3),
    address=st.integers(0, (1 << 52) - 1),
    grain_bits=st.integers(0, 30),
    syndrome=st.integers(0, (1 << 32) - 1),
    dram=st.none() | st.tuples(*[st.integers(0, 0xFFFF)] * 7),
    ts=st.floats(0, 1e7, allow_nan=False),
)
def test_mc_event_round_trip(
    count: int,
    etype: str,
    msg: str,
    label: str,
    mc: int,
    layers: tuple[int, int, int],
    address: int,
    grain_bits: int,
    syndrome: int,
    dram: tuple[int, ...] | None,
    ts: float,
) -> None:
    detail = kfmt(SKX_DETAIL_FMT, 0, 0x9F, *dram) if dram else ""
    body = kfmt(
        MC_EVENT_FMT,
        count,
        etype,
        "s" if count > 1 else "",
        " " if msg else "",
        msg,
        label,
        mc,
        *layers,
        address,
        1 << grain_bits,
        syndrome,
        " " if detail else "",
        detail,
    )
    line = TRACE_PREFIX % (1, ts, "mc_event") + body
    (event,) = LineParser().feed(line)
    assert (event.count, event.severity, event.msg, event.label, event.mc) == (
        count,
        trace.MC_EVENT_SEVERITY[etype],
        msg or None,
        label,
        mc,
    )
    assert event.location == ":".join(str(n) for n in layers)
    assert event.phys_addr == (address or None)
    assert event.pfn == (address >> 12 if address else None)
    assert (event.grain, event.syndrome) == (1 << grain_bits, syndrome)
    assert event.time == float(f"{ts:.6f}")
    if dram:
        socket, imc, rank, bg, ba, row, col = dram
        assert event.dram == DramLocation(
            socket=socket, mc=imc, rank=rank, bank_group=bg, bank=ba, row=row, column=col
        )
    else:
        assert event.dram is None


MCE_RECORD_FMTS = {
    1: "CPU: %d, MCGc/s: %llx/%llx, MC%d: %016Lx, ADDR/MISC: %016Lx/%016Lx, RIP: %02x:<%016Lx>, "
    "TSC: %llx, PROCESSOR: %u:%x, TIME: %llu, SOCKET: %u, APIC: %x",
    2: "CPU: %d, MCGc/s: %llx/%llx, MC%d: %016Lx, IPID: %016Lx, ADDR/MISC/SYND: "
    "%016Lx/%016Lx/%016Lx, RIP: %02x:<%016Lx>, TSC: %llx, PROCESSOR: %u:%x, TIME: %llu, "
    "SOCKET: %u, APIC: %x",
    3: "CPU: %d, MCGc/s: %llx/%llx, MC%d: %016llx, IPID: %016llx, ADDR: %016llx, MISC: %016llx, "
    "SYND: %016llx, RIP: %02x:<%016llx>, TSC: %llx, PPIN: %llx, vendor: %u, CPUID: %x, "
    "time: %llu, socket: %u, APIC: %x, microcode: %x",
}


@SETTINGS
@given(
    gen=st.sampled_from([1, 2, 3]),
    cpu=st.integers(0, 8191),
    bank=st.integers(0, 63),
    status=u64,
    addr=u64,
    misc=u64,
    ipid=u64,
    vendor=st.sampled_from([0, 2, 9]),
    regs=st.tuples(u64, u64, u64, u64, u64),
)
def test_mce_record_round_trip(
    gen: int,
    cpu: int,
    bank: int,
    status: int,
    addr: int,
    misc: int,
    ipid: int,
    vendor: int,
    regs: tuple[int, int, int, int, int],
) -> None:
    mcgcap, mcgstatus, synd, ip, tsc = regs
    if gen == 1:
        ipid = 0
        args: tuple[object, ...] = (cpu, mcgcap, mcgstatus, bank, status, addr, misc, 0x10, ip)
        args += (tsc, vendor, 0x806F8, 1700000000, 0, 0)
    elif gen == 2:
        args = (cpu, mcgcap, mcgstatus, bank, status, ipid, addr, misc, synd, 0x10, ip, tsc)
        args += (vendor, 0x806F8, 1700000000, 0, 0)
    else:
        args = (cpu, mcgcap, mcgstatus, bank, status, ipid, addr, misc, synd, 0x10, ip, tsc)
        args += (0x1234, vendor, 0x806F8, 1700000000, 0, 0, 0xB1)
    body = kfmt(MCE_RECORD_FMTS[gen], *args)
    event = trace.parse_mce_record(body)
    assert event is not None
    assert (event.cpu, event.bank, event.status) == (cpu, bank, status)
    decoded = decode_mca(status, addr, misc, ipid, vendor)
    assert event.kind == ("memory_error" if decoded.memory_error else "mce")
    assert (event.severity, event.phys_addr) == (decoded.severity, decoded.phys_addr)
    # The same record through the kernel log's print_mce lines decodes the same way.
    parser = LineParser()
    lines = [
        kfmt(
            "mce: [Hardware Error]: CPU %d: Machine Check: %Lx Bank %d: %016Lx",
            cpu,
            0,
            bank,
            status,
        ),
        kfmt(
            "mce: [Hardware Error]: TSC %llx ADDR %llx MISC %llx IPID %llx ", tsc, addr, misc, ipid
        ),
        kfmt(
            "mce: [Hardware Error]: PROCESSOR %u:%x TIME %llu SOCKET %u APIC %x microcode %x",
            vendor,
            0x806F8,
            1,
            0,
            0,
            1,
        ),
    ]
    (from_kmsg,) = [e for line in lines for e in parser.feed(line)]
    assert (from_kmsg.kind, from_kmsg.severity, from_kmsg.phys_addr, from_kmsg.status) == (
        event.kind,
        event.severity,
        event.phys_addr,
        status,
    )


EDAC_CE_FMT = "%d CE %s%son %s (%s page:0x%lx offset:0x%lx grain:%ld syndrome:0x%lx%s%s)"
EDAC_UE_FMT = "%d UE %s%son %s (%s page:0x%lx offset:0x%lx grain:%ld%s%s)"


@SETTINGS
@given(
    ce=st.booleans(),
    mc=st.integers(0, 255),
    count=st.integers(1, 0xFFFF),
    msg=words.filter(lambda m: " on " not in m) | st.just(""),
    label=labels,
    location=st.from_regex(
        r"(csrow|channel|slot|memory):\d{1,3}( (channel|slot):\d{1,3})?", fullmatch=True
    ),
    page=st.integers(0, (1 << 40) - 1),
    offset=st.integers(0, 4095),
    grain=st.integers(1, 1 << 20),
    syndrome=st.integers(0, (1 << 32) - 1),
    detail=st.sampled_from(["", "err_code:0x0000:0x009f", "APEI location: rank:1 row:7"]),
)
def test_edac_kmsg_round_trip(
    ce: bool,
    mc: int,
    count: int,
    msg: str,
    label: str,
    location: str,
    page: int,
    offset: int,
    grain: int,
    syndrome: int,
    detail: str,
) -> None:
    sep = " - " if detail else ""
    if ce:
        text = kfmt(
            EDAC_CE_FMT,
            count,
            msg,
            " " if msg else "",
            label,
            location,
            page,
            offset,
            grain,
            syndrome,
            sep,
            detail,
        )
    else:
        text = kfmt(
            EDAC_UE_FMT,
            count,
            msg,
            " " if msg else "",
            label,
            location,
            page,
            offset,
            grain,
            sep,
            detail,
        )
    (event,) = LineParser().feed(f"[ 1.5] EDAC MC{mc}: {text}")
    phys_addr = (page << 12) | offset
    assert (event.mc, event.count, event.label, event.location, event.msg) == (
        mc,
        count,
        label,
        location,
        msg or None,
    )
    assert event.severity == ("corrected" if ce else "uncorrected")
    assert (event.phys_addr, event.grain) == (phys_addr or None, grain)
    assert event.syndrome == (syndrome if ce else None)
    assert event.time == 1.5


@SETTINGS
@given(
    pfn=st.integers(0, (1 << 40) - 1),
    page_type=words,
    result=st.sampled_from(["Ignored", "Failed", "Delayed", "Recovered"]),
    form=st.sampled_from(["trace", "kmsg", "kmsg_v4.2", "cec", "soft"]),
)
def test_page_messages_round_trip(pfn: int, page_type: str, result: str, form: str) -> None:
    if form == "trace":
        line = TRACE_PREFIX % (0, 1.0, "memory_failure_event") + kfmt(
            "pfn %#lx: recovery action for %s: %s", pfn, page_type, result
        )
    elif form == "kmsg":
        line = kfmt("Memory failure: %#lx: recovery action for %s: %s", pfn, page_type, result)
    elif form == "kmsg_v4.2":
        line = kfmt("MCE %#lx: recovery action for %s: %s", pfn, page_type, result)
    elif form == "cec":
        line = kfmt("RAS: Soft-offlining pfn: 0x%llx", pfn)
    else:
        line = kfmt("Soft offline: %#lx: page already poisoned", pfn)
    (event,) = LineParser().feed(line)
    assert (event.pfn, event.phys_addr) == (pfn, pfn << 12)
    if form in ("trace", "kmsg", "kmsg_v4.2"):
        assert (event.kind, event.page_type, event.result) == (
            "memory_failure",
            page_type,
            result.lower(),
        )
    elif form == "cec":
        assert event.kind == "cec_offline"
    else:
        assert (event.kind, event.result) == ("soft_offline", "already_poisoned")


optional_int = st.none() | st.integers(-(1 << 63), (1 << 64) - 1)
optional_str = st.none() | st.text(max_size=30)
events = st.builds(
    Event,
    kind=st.sampled_from(["memory_error", "mce", "memory_failure", "soft_offline", "cec_offline"]),
    source=st.sampled_from(["mc_event", "mce_record", "kmsg_edac", "kmsg_cec"]),
    severity=st.sampled_from([None, "corrected", "uncorrected", "deferred", "fatal", "info"]),
    count=st.integers(0, 1 << 20),
    phys_addr=optional_int,
    pfn=optional_int,
    time=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    line=st.none() | st.integers(1, 1 << 40),
    mc=optional_int,
    label=optional_str,
    location=optional_str,
    grain=optional_int,
    syndrome=optional_int,
    msg=optional_str,
    page_type=optional_str,
    result=optional_str,
    bank=optional_int,
    status=optional_int,
    cpu=optional_int,
    dram=st.none()
    | st.builds(DramLocation, row=optional_int, bank=optional_int, rank=optional_int),
    extra=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4).map(
        lambda d: tuple(d.items())
    ),
)


@SETTINGS
@given(events)
def test_event_json_round_trip(event: Event) -> None:
    obj = event_to_json(event)
    back = event_from_json(obj)
    expected = event
    if event.pfn is None and event.phys_addr is not None:
        expected = Event(
            **{**{f: getattr(event, f) for f in event.__slots__}, "pfn": event.phys_addr >> 12}
        )
    if event.dram is not None and event.dram == DramLocation():
        expected = Event(
            **{**{f: getattr(expected, f) for f in expected.__slots__}, "dram": DramLocation()}
        )
    assert back == expected


# Bare kernel messages of real captures (tests/fixtures/parse; the 6.1 guest capture for the
# memory failure and the machine-check notice).
BARE_MESSAGES = (
    "EDAC MC0: 1 CE memory read error on CPU_SrcID#0_MC#0_Chan#0_DIMM#0 (channel:0 slot:0 "
    "page:0x12345 offset:0x678 grain:32 syndrome:0x0 - err_code:0x0000:0x009f "
    "ProcessorSocketId:0x0 MemoryControllerId:0x0 PhysicalRankId:0x1 Row:0x2a Column:0x10 "
    "Bank:0x3 BankGroup:0x1)",
    "Memory failure: 0x3ff1f: recovery action for free buddy page: Recovered",
    "RAS: Soft-offlining pfn: 0x2abcdef",
    "Memory failure: 0x40fa6: Killing mca-recover:1296 due to hardware memory corruption",
)
# Text any prefix may hold: everything printable but line ends (and the record separator
# json-seq uses), so host names, tags, stamps and quoting of every shape are drawn.
PREFIX_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\x1e"),
    max_size=60,
)


def _events_without_time(line: str) -> list[dict[str, object]]:
    parser = LineParser()
    return without_time(parser.feed(line) + parser.flush())


@SETTINGS
@given(prefix=PREFIX_TEXT, which=st.sampled_from(range(len(BARE_MESSAGES))))
# A prefix holding a message start of its own (a host named after a kernel prefix).
@example(prefix="Dec  4 14:53:20 mce: kernel: [ 12.5]", which=0)
@example(prefix="> RAS: EDAC ", which=1)
def test_a_random_prefix_never_loses_a_message_nor_invents_one(prefix: str, which: int) -> None:
    message = BARE_MESSAGES[which]
    want = _events_without_time(message)
    assert len(want) == 1
    assert _events_without_time(f"{prefix} {message}") == want
    # The prefix alone is not an error report (it is drawn from no message's words).
    assert _events_without_time(prefix) == []
