"""The parsers' fast paths give exactly the answers of the careful ones.

Each fast path (one regex per current `mce_record` generation, token-wise DRAM detail, the
one-regex `mc_event`, the frozen-value builder) is checked against a reference on kernel-printed
text and on hostile text: the item-by-item `mce_record` reader and the `_KV` scan are the
careful paths still in the module; the two-half `mc_event` reader and the named-group trace
prefix are the previous implementations, kept here as references.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hwpoisond.core.model import DramLocation, Event, pfn_of
from hwpoisond.parse import LineParser, stream, trace
from hwpoisond.parse.build import fast_builder
from hwpoisond.parse.mce import McaDecode

from .test_properties import ANCHORS, MCE_RECORD_FMTS, SETTINGS, hostile, kfmt, u64

# --- frozen-value builder -----------------------------------------------------------------


@pytest.mark.parametrize("cls", [Event, DramLocation, McaDecode])
def test_builder_builds_an_equal_frozen_instance(cls: type[object]) -> None:
    build = fast_builder(cls)
    assert build is not cls
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    values = {f.name: (f"v{i}" if f.type == "str" else i) for i, f in enumerate(fields)}
    built, real = build(**values), cls(**values)
    assert type(built) is cls
    assert built == real and hash(built) == hash(real) and repr(built) == repr(real)
    positional = build(*values.values())
    assert positional == real
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, fields[0].name, "changed")


def test_builder_keeps_defaults_and_required_arguments() -> None:
    build = fast_builder(Event)
    event = build(kind="memory_error", source="mc_event", severity="corrected", pfn=7)
    assert event == Event(kind="memory_error", source="mc_event", severity="corrected", pfn=7)
    assert event.extra == () and event.count == 1 and event.time is None
    with pytest.raises(TypeError):
        build(kind="memory_error")


def test_builder_is_the_class_itself_when_not_a_plain_frozen_slots_dataclass() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("negative")

    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        x: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        x: list[int] = dataclasses.field(default_factory=list)

    for cls in (Checked, Mutable, NoSlots, Factory):
        assert fast_builder(cls) is cls


# --- trace prefix ---------------------------------------------------------------------------

_NAMED_PREFIX = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:[^\s:]{1,8}\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>[a-z_]+):\s?(?P<body>.*)$"
)


def reference_split_trace_line(line: str) -> tuple[str, float, int, str] | None:
    m = _NAMED_PREFIX.match(line)
    if m is None:
        return None
    return m["event"], float(m["ts"]), int(m["cpu"]), m["body"]


trace_lines = st.builds(
    lambda comm, pid, cpu, flags, ts, event, body: (
        f"{comm:>16}-{pid:<7} [{cpu:03d}] {flags} {ts:12.6f}: {event}: {body}"
    ),
    st.text(max_size=20),
    st.integers(0, 1 << 22),
    st.integers(0, 4095),
    st.sampled_from(["d.h1.", "....", "dNs2.", ""]),
    st.floats(0, 1e7, allow_nan=False),
    st.sampled_from(["mc_event", "mce_record", "sched_switch", "x"]),
    st.text(max_size=60),
)


@SETTINGS
@given(line=hostile | trace_lines)
def test_split_trace_line_equals_reference(line: str) -> None:
    assert trace.split_trace_line(line) == reference_split_trace_line(line)


# --- mc_event -------------------------------------------------------------------------------

_HEAD = re.compile(
    r"^(?P<count>\d+) (?P<type>Corrected|Uncorrected|Deferred|Fatal|Info) errors?:(?P<rest>.*)$"
)
_TAIL = re.compile(
    r"^\(mc:(?P<mc>\d+) location:(?P<loc>-?\d+:-?\d+:-?\d+)(?: address:0x(?P<addr>[0-9a-fA-F]+))?"
    r" grain:(?P<grain>\d+)(?: syndrome:0x(?P<synd>[0-9a-fA-F]+))?(?: (?P<detail>.*))?\)\s*$"
)


def reference_parse_mc_event(body: str) -> Event | None:
    """The two-half reader the one-regex version replaced."""
    paren = body.find(" (mc:")
    head = _HEAD.match(body[:paren]) if paren > 0 else None
    m = _TAIL.match(body[paren + 1 :]) if head is not None else None
    parts = trace.split_msg_label(head["rest"]) if head is not None else None
    if head is None or m is None or parts is None:
        return None
    msg, label = parts
    addr = int(m["addr"], 16) if m["addr"] else 0
    phys_addr = addr or None
    detail = m["detail"] or ""
    return Event(
        kind="memory_error",
        source="mc_event",
        severity=trace.MC_EVENT_SEVERITY[head["type"]],
        count=int(head["count"]),
        phys_addr=phys_addr,
        pfn=pfn_of(phys_addr) if phys_addr is not None else None,
        mc=int(m["mc"]),
        label=label,
        location=m["loc"],
        grain=int(m["grain"]),
        syndrome=int(m["synd"], 16) if m["synd"] else None,
        msg=msg or None,
        dram=trace.parse_dram_location(detail) if detail else None,
        extra=(("driver_detail", detail),) if detail else (),
    )


_MC_PIECES = [
    "1 Corrected error",
    "2 Uncorrected errors",
    ":",
    " memory read error",
    " on ",
    "DIMM_A1",
    " (mc:",
    "0 location:",
    "1:0:-1",
    " address:0x",
    "1234",
    " grain:",
    "32",
    " syndrome:0x",
    "0",
    " socket:0 imc:1 row:0x2",
    ")",
    "\n",
    " ",
    "(",
    "x",
]
mc_bodies = st.one_of(
    hostile,
    st.lists(st.sampled_from(_MC_PIECES), max_size=30).map("".join),
    st.builds(
        lambda a, b, c, d: (
            f"{a} Corrected error:{b} on {c} (mc:0 location:1:2:3 address:0x1000 grain:8 "
            f"syndrome:0x0{d})"
        ),
        st.integers(0, 9),
        st.text(max_size=20),
        st.text(max_size=20),
        st.text(max_size=40),
    ),
)


@SETTINGS
@given(body=mc_bodies)
def test_mc_event_equals_two_half_reference(body: str) -> None:
    assert trace.parse_mc_event(body) == reference_parse_mc_event(body)


# --- DRAM detail ----------------------------------------------------------------------------

_KEYS = [*trace._DRAM_KEYS, "err_code", "Row", "BankGroup", "x", "ROW", "a_b"]
_VALUES = st.one_of(
    st.integers(-5, 1 << 20).map(str),
    st.integers(0, 1 << 20).map(lambda n: f"{n:#x}"),
    st.sampled_from(["0x", "0X1F", "08", "-", "1a", "0x1g", "\u0663"]),
)
tokens = st.builds(
    lambda key, seps, values: key + "".join(s + v for s, v in zip(seps, values, strict=False)),
    st.sampled_from(_KEYS),
    st.lists(st.sampled_from([":", "=", ": ", " :"]), min_size=1, max_size=3),
    st.lists(_VALUES, min_size=1, max_size=3),
)
simple_tokens = st.builds(
    lambda key, values: key + "".join(":" + v for v in values),
    st.sampled_from(_KEYS),
    st.lists(_VALUES, min_size=1, max_size=3),
)
details = st.one_of(
    hostile,
    st.lists(simple_tokens, max_size=10).map(" ".join),
    st.lists(tokens, max_size=10).map(" ".join),
    st.lists(st.one_of(tokens, st.sampled_from(["  ", "\t", "(", "#", "é"])), max_size=10).map(
        "".join
    ),
)


@SETTINGS
@given(text=details)
@example("row:08 col:-0 bank:0x1F")
def test_dram_tokens_equal_regex_scan(text: str) -> None:
    if trace._SIMPLE_DETAIL.fullmatch(text) is not None:
        assert trace._dram_fields_by_tokens(text) == trace._dram_fields_by_regex(text)


def test_dram_fast_path_is_taken_for_the_drivers_formats() -> None:
    skx = "err_code:0x0000:0x009f socket:0 imc:1 rank:0 bg:1 ba:13 row:0x2359 col:0x8"
    ghes = "node:1 card:2 module:3 rank:0 bank:5 device:0 row:17 column:8 bit_position:3"
    for text in (skx, ghes):
        assert trace._SIMPLE_DETAIL.fullmatch(text) is not None
        assert trace._dram_fields_by_tokens(text) == trace._dram_fields_by_regex(text)
    assert trace.parse_dram_location(skx) == DramLocation(
        socket=0, mc=1, rank=0, bank_group=1, bank=13, row=0x2359, column=8
    )


# --- mce_record -----------------------------------------------------------------------------


def careful_mce_record(body: str) -> Event | None:
    return trace._parse_mce_items(trace._mce_items(body), None, None)


@SETTINGS
@given(
    gen=st.sampled_from([2, 3]),
    values=st.tuples(
        st.integers(0, 8191), u64, u64, st.integers(0, 63), u64, u64, u64, u64, u64, u64, u64
    ),
    vendor=st.sampled_from([0, 2, 9]),
    mutate=st.one_of(
        st.none(), st.tuples(st.integers(0, 400), st.sampled_from([*ANCHORS, " ", ",", "-", "\t"]))
    ),
)
def test_mce_record_fast_path_equals_item_reader(
    gen: int,
    values: tuple[int, ...],
    vendor: int,
    mutate: tuple[int, str] | None,
) -> None:
    cpu, mcgcap, mcgstatus, bank, status, ipid, addr, misc, synd, ip, tsc = values
    if gen == 2:
        args: tuple[object, ...] = (cpu, mcgcap, mcgstatus, bank, status, ipid, addr, misc, synd)
        args += (0x10, ip, tsc, vendor, 0x806F8, 1700000000, 1, 2)
    else:
        args = (cpu, mcgcap, mcgstatus, bank, status, ipid, addr, misc, synd, 0x10, ip, tsc)
        args += (0x1234, vendor, 0x806F8, 1700000000, 1, 2, 0xB1)
    body = kfmt(MCE_RECORD_FMTS[gen], *args)
    if mutate is not None:
        at, text = mutate
        body = body[:at] + text + body[at:]
    else:
        regex = trace._MCE_RECORD_V4_9 if gen == 2 else trace._MCE_RECORD_V6_10
        assert regex.fullmatch(body) is not None  # the fast path is the one taken
    assert trace.parse_mce_record(body) == careful_mce_record(body)


@SETTINGS
@given(body=hostile)
def test_mce_record_equals_item_reader_on_any_text(body: str) -> None:
    assert trace.parse_mce_record(body) == careful_mce_record(body)


# --- feed_block: the line-by-line walk of dense blocks and the hinted scan agree ------------

FIXTURE_LINES = [
    line
    for path in sorted((Path(__file__).parents[2] / "fixtures" / "parse").glob("*.txt"))
    for line in path.read_text().splitlines()
    if line and not line.startswith("#")
]


def feed_block_with_share(text: str, share: int) -> tuple[list[Event], dict[str, object]]:
    saved = stream.DENSE_BLOCK_SHARE
    stream.DENSE_BLOCK_SHARE = share
    try:
        parser = LineParser()
        events = parser.feed_block(text) + parser.flush()
    finally:
        stream.DENSE_BLOCK_SHARE = saved
    return events, parser.stats.as_dict()


@SETTINGS
@given(lines=st.lists(st.sampled_from(FIXTURE_LINES) | hostile | st.just(""), max_size=60))
def test_dense_and_hinted_block_walks_equal_line_by_line_feed(lines: list[str]) -> None:
    text = "\n".join(line.replace("\n", " ") for line in lines)
    fed = text.removesuffix("\n").split("\n")  # feed_block allows one final newline
    parser = LineParser()
    by_line = [e for line in fed for e in parser.feed(line)] + parser.flush()
    expected = (by_line, parser.stats.as_dict())
    assert feed_block_with_share(text, 1 << 30) == expected  # always walk every line
    assert feed_block_with_share(text, 0) == expected  # never: hinted lines only
