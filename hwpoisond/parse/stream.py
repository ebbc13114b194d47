"""The line parser: turns a stream of text lines into Events, never reads files.

`LineParser` is the one entry point for sources, `parse` and `replay`: feed it lines in order, it
works out each line's format (trace_pipe, kernel log with any prefix, or the JSON lines `hwpoisond
parse` prints), assembles multi-line machine-check records, and never raises on bad input: a line
that looks like one of our formats but does not parse is counted in `stats.malformed`.

Time rules (`Event.time`): the best stamp on the line, wall clock over seconds since boot (see
`kmsg.split_prefix`); the trace timestamp; `__REALTIME_TIMESTAMP` of `journalctl -o json`;
`time`/`at` of our own JSON. A yearless stamp (RFC 3164 syslog, `journalctl -o short`) is read as
UTC in a year given by `set_year` (`--year`), else derived from when the log was last written
(`year_from_reference`: a file's mtime), else `assume_year` (2000, a leap year so that 29 Feb
parses), and `stats` says which; the year goes up by one each time the month goes backwards
(Dec → Jan), so a log read in order keeps increasing times.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hwpoisond.core.model import Event
from hwpoisond.parse import cper, kmsg
from hwpoisond.parse.jsonio import event_from_json
from hwpoisond.parse.trace import TRACE_PARSERS, split_trace_line

#: Longest line looked at; kernel lines are at most a few KiB (printk: 1 KiB, trace_seq: a page).
MAX_LINE_CHARS = 8192

#: A pending `[Hardware Error]` record is closed after this many lines without a continuation.
MCE_RECORD_MAX_GAP_LINES = 16

DEFAULT_ASSUME_YEAR = 2000
#: An event time at or past this (1980-01-01, epoch seconds) is wall clock, below it seconds
#: since boot (over ten years of uptime).
WALL_CLOCK_AFTER = 315_532_800.0

# Cheap substring tests, run on every line before any regex. Every format we parse contains one.
_HINTS = (
    "_event: ",  # mc_event, memory_failure_event, extlog_mem_event
    "mce",  # mce_record: and the "mce: " prefix of the x86 machine-check code
    "EDAC",
    "Hardware Error]",
    "Memory failure",
    "MCE",  # "MCE 0x…" memory failure and "MCE: Software-unpoisoned" before v4.16
    "offlin",  # soft offline, Soft offline, soft_offline…, RAS: Soft-offlining
    # No "Unpoison": since v4.16 unpoison lines carry the file's "Memory failure: " pr_fmt
    # (mm/memory-failure.c), before that "MCE: Software-unpoisoned"; each hint is one more pass
    # over every block.
    "Machine ",  # Machine Check, Machine check events
    "RAS:",
)
# Every candidate word (below) contains a hint, so a line no parser accepts is looked at and
# counted; few hints, because feed_block scans a whole block once per hint.

#: A line with one of these in it is about memory errors whatever else it says: when no parser
#: accepts it (no event, notice or malformed count), it is an *unparsed candidate*, counted and
#: kept as an example, so a log in a form we do not know never reads as a clean one.
_CANDIDATE_SEARCH = re.compile(
    r"EDAC|Hardware Error|Machine Check|Memory failure|[Ss]oft[ _-]?offlin|mce:|RAS:"
).search
#: Informational lines with candidate words, recognised as carrying no error (format strings
#: of v6.12): drivers/edac/edac_mc.c "Giving out device to module %s controller %s: DEV %s (%s)"
#: and "Removed device %d for %s %s: DEV %s"; drivers/edac/edac_module.c "Ver: %s";
#: drivers/ras/cec.c "Correctable Errors collector initialized."; therm_throt.c's thermal
#: notices; arch/x86/kernel/cpu/mce/core.c
#: print_mce() HW_ERR "Run the above through 'mcelog --ascii'" (the end of a record).
_INFO_SEARCH = re.compile(
    r"EDAC MC\d*: (?:Giving out device to module |Removed device \d+ for |Ver: )"
    r"|RAS: Correctable Errors collector initialized"
    # arch/x86/kernel/cpu/mce/therm_throt.c: thermal events under the "mce: " pr_fmt.
    r"|mce: CPU\d+: (?:Core|Package) (?:temperature|power limit)"
    r"|\[Hardware Error\]: Run the above through 'mcelog --ascii'"
).search
#: Unparsed candidate lines kept as examples for `parse --stats` and the daemon's log.
UNPARSED_EXAMPLES_KEPT = 5
#: First characters of a JSON line: an object, or json-seq's record separator before one.
_JSON_STARTS = frozenset({"{", "\x1e"})
#: feed_block walks every line of a block when at least 1 line in this many is a trace event.
DENSE_BLOCK_SHARE = 4

#: One search for any hint (cheaper per line than a loop of `in` tests).
_HINT_SEARCH = re.compile("|".join(re.escape(hint) for hint in _HINTS)).search
#: What `feed_block` searches a whole block for: the hints, and "\n{" for JSON lines.
_BLOCK_HINTS = (*_HINTS, "\n{")


@dataclass(slots=True)
class ParseStats:
    """Counts over everything fed so far: lines, events per source, malformed lines per source
    (looked like that format, did not parse), and recognised lines that carry no event."""

    lines: int = 0
    events: dict[str, int] = field(default_factory=dict)
    malformed: dict[str, int] = field(default_factory=dict)
    notices: dict[str, int] = field(default_factory=dict)
    #: Lines with a candidate word (EDAC, Hardware Error, Machine Check, Memory failure, soft
    #: offline, mce:, RAS:) that no parser accepted, and the first few of them.
    unparsed_candidates: int = 0
    unparsed_examples: list[str] = field(default_factory=list)
    #: Timestamps without a year (RFC 3164 syslog, `journalctl -o short`), the year the first
    #: of them was given, and where that year came from.
    yearless_timestamps: int = 0
    first_year: int | None = None
    year_from: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "events": dict(sorted(self.events.items())),
            "malformed": dict(sorted(self.malformed.items())),
            "notices": dict(sorted(self.notices.items())),
            "unparsed_candidates": self.unparsed_candidates,
            "unparsed_examples": list(self.unparsed_examples),
            "yearless_timestamps": self.yearless_timestamps,
            "first_year": self.first_year,
            "year_from": self.year_from,
        }


#: Each integer field's kernel type, as the largest value it can hold. A line carrying a larger
#: value was not printed by the kernel (or was damaged): it is a counted parse failure, never an
#: event whose numbers overflow the store or the policy. include/ras/ras_event.h (v6.12):
#: mc_event error_count u16, mc_index u8, address/syndrome long (printed unsigned);
#: include/trace/events/mce.h: cpu u32, bank u8, status u64; memory_failure_event pfn unsigned
#: long; a pfn is a physical address >> PAGE_SHIFT, so it has 64 - 12 bits.
_U64_MAX = (1 << 64) - 1
_FIELD_MAX = (
    ("count", 0xFFFF),
    ("mc", 0xFF),
    ("phys_addr", _U64_MAX),
    ("pfn", (1 << 52) - 1),
    ("grain", _U64_MAX),
    ("syndrome", _U64_MAX),
    ("bank", 0xFF),
    ("status", _U64_MAX),
    ("cpu", 0xFFFF_FFFF),
)
#: DRAM coordinates are C ints in every driver that reports them (edac_mc.h, ghes_edac.c).
_S32_MIN, _S32_MAX = -(1 << 31), (1 << 31) - 1


def fits_kernel_types(event: Event) -> bool:
    """True when every integer of `event` fits the kernel type it was printed from."""
    for name, most in _FIELD_MAX:
        value = getattr(event, name)
        if value is not None and not 0 <= value <= most:
            return False
    dram = event.dram
    if dram is not None:
        for value in (
            dram.socket, dram.mc, dram.channel, dram.dimm, dram.rank,
            dram.bank_group, dram.bank, dram.row, dram.column,
        ):  # fmt: skip
            if value is not None and not _S32_MIN <= value <= _S32_MAX:
                return False
    return True


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


class LineParser:
    """Stateful line-by-line parser (state: the open mce record and the journal year)."""

    def malformed_lines(self) -> int:
        return sum(self.stats.malformed.values())

    def __init__(self, assume_year: int = DEFAULT_ASSUME_YEAR, *, accept_json: bool = True) -> None:
        #: JSON event lines are for files (`replay` taking back `parse` output). Live sources turn
        #: them off: anything root writes to /dev/kmsg reaches the journal as kernel text, and it
        #: must not be able to forge an event with any field it likes.
        self.accept_json = accept_json
        self.stats = ParseStats()
        self._lineno = 0
        self._year = assume_year
        self._year_from = "assumed (no --year given)"
        #: (year, month) of the moment the log was last written, when the year is to be derived.
        self._year_reference: tuple[int, int] | None = None
        self._last_month: int | None = None
        self._mce: kmsg.MceRecord | None = None
        self._mce_last = 0  # line number of the open record's last line
        self._cper: cper.CperRecord | None = None
        self._cper_last = 0
        self._wall_times = False
        self._boot_times = False

    # -- public ----------------------------------------------------------------------------

    def feed(self, line: str, lineno: int | None = None) -> list[Event]:
        """Parse one line (with or without its newline). `lineno` is the 1-based input line;
        when omitted, lines are numbered by how many were fed."""
        self._lineno = lineno if lineno is not None else self._lineno + 1
        self.stats.lines += 1
        out: list[Event] = []
        self._feed_one(line, out)
        return out

    def feed_block(self, text: str, first_lineno: int | None = None) -> list[Event]:
        """Parse many lines at once, the fast path for files: `text` is lines joined by "\\n"
        (one final "\\n" allowed), `first_lineno` the number of its first line (default: the
        line after the last one fed). Same events, stats and state as feeding each line.

        A block that is mostly trace events (a trace_pipe capture, replay input) is walked line
        by line; in any other block only the lines that contain a hint are looked at, found with
        str.find over the whole block. Lines without a hint do nothing but let a pending
        machine-check record time out, which only moves when that record is emitted, never
        where it lands in the output."""
        if text.endswith("\n"):
            text = text[:-1]
        base = first_lineno if first_lineno is not None else self._lineno + 1
        nlines = text.count("\n") + 1
        out: list[Event] = []
        if (text.count("_event: ") + text.count("_record: ")) * DENSE_BLOCK_SHARE >= nlines:
            feed_one = self._feed_one
            for lineno, line in enumerate(text.split("\n"), base):
                self._lineno = lineno
                feed_one(line, out)
        else:
            self._feed_hinted(text, base, out)
        self._lineno = base + nlines - 1
        self.stats.lines += nlines
        return out

    def _feed_hinted(self, text: str, base: int, out: list[Event]) -> None:
        starts: set[int] = set()
        if text[:1] == "{":
            starts.add(0)
        for hint in _BLOCK_HINTS:
            pos = text.find(hint)
            while pos >= 0:
                starts.add(text.rfind("\n", 0, pos) + 1 if hint != "\n{" else pos + 1)
                end = text.find("\n", pos + 1)
                if end < 0:
                    break
                pos = text.find(hint, end)
        lineno, prev = base, 0
        for start in sorted(starts):
            lineno += text.count("\n", prev, start)
            prev = start
            end = text.find("\n", start)
            self._lineno = lineno
            self._feed_one(text[start:] if end < 0 else text[start:end], out)

    def set_year(self, year: int) -> None:
        """Yearless timestamps start in `year` (`--year`)."""
        self._year, self._year_from, self._year_reference = year, "--year", None

    def year_from_reference(self, epoch_seconds: float, what: str) -> None:
        """Derive the year of yearless timestamps from when the log was last written (a file's
        mtime, or now for a pipe): a log ends before that moment, so its first stamp is in that
        year, or the year before when its month is later than that moment's. Ignored after
        `set_year` and once a yearless stamp has been read."""
        if self._year_from == "--year" or self._last_month is not None:
            return
        moment = datetime.fromtimestamp(epoch_seconds, UTC)
        self._year_reference = (moment.year, moment.month)
        self._year_from = f"{what} ({moment:%Y-%m-%d})"

    def record_open(self) -> bool:
        """True while a multi-line machine-check record is being assembled: stopping to read
        here would split it."""
        return self._mce is not None or self._cper is not None

    def flush(self) -> list[Event]:
        """End of input: emit a machine-check record still being assembled."""
        out: list[Event] = []
        self._close_open(out)
        return out

    # -- dispatch --------------------------------------------------------------------------

    def _feed_one(self, line: str, out: list[Event]) -> None:
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS]
        if self._mce is not None or self._cper is not None:
            self._close_stale(out)
        # A brace-led line that is not JSON is kernel text: the APEI/CPER lines of
        # drivers/firmware/efi/cper.c start with "{N}[Hardware Error]: " in the journal.
        if line[:1] in _JSON_STARTS and self.accept_json:
            if line[0] == "\x1e":  # journalctl -o json-seq: RFC 7464 record separator
                line = line[1:]
            if line[:1] == "{" and self._json(line, out):
                return
        if _HINT_SEARCH(line) is None:
            return
        try:
            taken = self._dispatch(line.rstrip("\r\n"), out)
        except Exception:  # untrusted input must never stop the stream; count it and go on
            _bump(self.stats.malformed, "unknown")
            return
        # The candidate test only for lines nothing took (rare): it costs a scan of the line.
        if not taken and _CANDIDATE_SEARCH(line) is not None:
            self._unparsed(line)

    def _close_stale(self, out: list[Event]) -> None:
        """Close a record that has had no continuation for MCE_RECORD_MAX_GAP_LINES lines."""
        if self._mce is not None and self._lineno - self._mce_last > MCE_RECORD_MAX_GAP_LINES:
            self._close_mce(out)
        if self._cper is not None and self._lineno - self._cper_last > MCE_RECORD_MAX_GAP_LINES:
            self._close_cper(out)

    def _unparsed(self, line: str) -> None:
        text = line.rstrip("\r\n")
        if _INFO_SEARCH(text) is not None:
            _bump(self.stats.notices, "kmsg_info")
            return
        stats = self.stats
        stats.unparsed_candidates += 1
        if len(stats.unparsed_examples) < UNPARSED_EXAMPLES_KEPT:
            stats.unparsed_examples.append(text[:300])

    def unparsed_candidates(self) -> int:
        return self.stats.unparsed_candidates

    def first_unparsed(self) -> str | None:
        examples = self.stats.unparsed_examples
        return examples[0] if examples else None

    @property
    def time_bases(self) -> set[str]:
        """The time bases of the events so far: "wall clock" and/or "seconds since boot"."""
        bases = set()
        if self._wall_times:
            bases.add("wall clock")
        if self._boot_times:
            bases.add("seconds since boot")
        return bases

    def _emit(self, out: list[Event], event: Event) -> None:
        if not fits_kernel_types(event):
            _bump(self.stats.malformed, event.source)
            return
        t = event.time
        if t is not None:
            # Ten years of uptime is more than any machine has; a wall clock is past 1980.
            if t >= WALL_CLOCK_AFTER:
                self._wall_times = True
            else:
                self._boot_times = True
        events = self.stats.events
        events[event.source] = events.get(event.source, 0) + 1
        out.append(event)

    def _close_open(self, out: list[Event]) -> None:
        """Close the records being assembled, before an event that follows them."""
        if self._mce is not None:
            self._close_mce(out)
        if self._cper is not None:
            self._close_cper(out)

    def _close_cper(self, out: list[Event]) -> None:
        record, self._cper = self._cper, None
        if record is None:
            return
        events, bad = record.events()
        for event in events:
            self._emit(out, event)
        if bad:
            self.stats.malformed["kmsg_cper"] = self.stats.malformed.get("kmsg_cper", 0) + bad
        if not events and not bad:
            _bump(self.stats.notices, "kmsg_cper")  # a block of another section type

    def _cper_line(self, seq: int, body: str, time: float | None, out: list[Event]) -> bool:
        record = self._cper
        if record is not None and (record.seq != seq or cper.is_record_start(body)):
            self._close_cper(out)
            record = None
        if self._mce is not None:
            self._close_mce(out)
        if record is None:
            self._cper = cper.start_record(seq, body, self._lineno, time)
        else:
            record.add(body, self._lineno, time)
        self._cper_last = self._lineno
        return True

    def _close_mce(self, out: list[Event]) -> None:
        record, self._mce = self._mce, None
        if record is not None:
            self._emit(out, record.to_event())

    def _dispatch(self, line: str, out: list[Event]) -> bool:
        """Parse one hinted line; True when some parser took it (an event, a notice, a
        malformed count, or a line of a machine-check record)."""
        if (
            ": mc_event: " in line
            or "_record: " in line
            or "_mem_event: " in line
            or ("failure_event: " in line)
        ):
            split = split_trace_line(line)
            if split is not None:
                name, ts, _cpu, body = split
                parser = TRACE_PARSERS.get(name)
                if parser is not None:
                    event = parser(body, ts, self._lineno)
                    if self._mce is not None or self._cper is not None:
                        self._close_open(out)
                    if event is None or not fits_kernel_types(event):
                        _bump(self.stats.malformed, name)
                    else:
                        events = self.stats.events
                        events[name] = events.get(name, 0) + 1  # the event name is its source
                        self._boot_times = True  # trace_clock "local": seconds since boot
                        out.append(event)
                    return True
        parsed: kmsg.KmsgLine | None = kmsg.split_prefix(line)
        while parsed is not None:
            time = parsed.time
            if parsed.short is not None:
                time = self._short_time(parsed.short)
            if self._message(parsed.message, time, out):
                return True
            # Not a message we read: maybe the prefix only looked like one (a host named
            # "mce:"); try the next start in the line.
            parsed = kmsg.next_message(line, parsed.start + 1)
        return False

    def _message(self, message: str, time: float | None, out: list[Event]) -> bool:
        """Parse one bare kernel message; True when some parser took it."""
        if message[:1] == "{":
            split = cper.split_cper_line(message)
            if split is not None:
                return self._cper_line(split[0], split[1], time, out)
        hw_body = kmsg.hardware_error_body(message)
        if hw_body is not None:
            return self._mce_line(hw_body, message, time, out)
        if kmsg.is_mce_notice(message):
            _bump(self.stats.notices, "kmsg_mce")
            return True
        lineno = self._lineno
        outcome = None
        if message.startswith("EDAC MC"):
            outcome = kmsg.parse_edac(message, time, lineno)
        if outcome is None:
            outcome = kmsg.parse_page_message(message, time, lineno)
        if outcome is None:
            return False
        if self._mce is not None or self._cper is not None:
            self._close_open(out)
        if outcome.notice:
            _bump(self.stats.notices, outcome.source)
        elif outcome.event is None:
            _bump(self.stats.malformed, outcome.source)
        else:
            self._emit(out, outcome.event)
        return True

    def _mce_line(self, body: str, message: str, time: float | None, out: list[Event]) -> bool:
        if body.startswith("CPU "):
            record = kmsg.start_mce_record(body, self._lineno, time)
            if self._mce is not None:
                self._close_mce(out)
            if record is None:
                if "Machine Check" in body:
                    _bump(self.stats.malformed, "kmsg_mce")
                    return True
                return False
            self._mce = record
            self._mce_last = self._lineno
            return True
        if kmsg.is_mce_notice(message):
            _bump(self.stats.notices, "kmsg_mce")
            return True
        if self._mce is not None and kmsg.continue_mce_record(self._mce, body):
            self._mce_last = self._lineno
            if self._mce.complete:
                self._close_mce(out)
            return True
        return False

    def _short_time(self, stamp: kmsg.ShortStamp) -> float | None:
        stats = self.stats
        if self._last_month is None:
            if self._year_reference is not None:
                year, month = self._year_reference
                self._year = year - 1 if stamp.month > month else year
            stats.first_year, stats.year_from = self._year, self._year_from
        elif stamp.month < self._last_month:
            self._year += 1
        self._last_month = stamp.month
        stats.yearless_timestamps += 1
        return stamp.epoch_seconds(self._year)

    def _json(self, line: str, out: list[Event]) -> bool:
        """Parse a JSON line: an event `hwpoisond parse` printed, or a journal entry of
        `journalctl -o json|json-seq`; False when the line is not JSON at all."""
        try:
            obj = json.loads(line)
        except ValueError:
            return False
        if isinstance(obj, dict) and "MESSAGE" in obj:
            return self._journal_entry(obj, out)
        event = event_from_json(obj, line=self._lineno) if isinstance(obj, dict) else None
        if event is None:
            _bump(self.stats.malformed, "json")
            return True
        if self._mce is not None or self._cper is not None:
            self._close_open(out)
        self._emit(out, event)
        return True

    def _journal_entry(self, entry: dict[str, object], out: list[Event]) -> bool:
        """A `journalctl -o json` entry: its MESSAGE is kernel text, its time the entry's wall
        clock (__REALTIME_TIMESTAMP, microseconds), else the kernel's monotonic stamp
        (_SOURCE_MONOTONIC_TIMESTAMP). A message that is not valid UTF-8 is an array of byte
        values (systemd's JSON output, docs/JOURNAL_EXPORT_FORMATS)."""
        message = journal_message(entry.get("MESSAGE"))
        if message is None:
            _bump(self.stats.malformed, "json")
            return True
        time: float | None = None
        for key in ("__REALTIME_TIMESTAMP", "_SOURCE_MONOTONIC_TIMESTAMP"):  # microseconds
            value = entry.get(key)
            if isinstance(value, str) and value.isdigit():
                time = int(value) / 1e6
                break
        if _HINT_SEARCH(message) is None:
            return True
        taken = self._message(message.rstrip(), time, out)
        if not taken and _CANDIDATE_SEARCH(message) is not None:
            self._unparsed(message)
        return True


def journal_message(value: object) -> str | None:
    """A journal MESSAGE field as JSON gives it: a string, or a list of byte values."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b <= 255 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return None


def live_parser() -> LineParser:
    """The parser for live kernel interfaces (tracefs, the journal): kernel text only."""
    return LineParser(accept_json=False)
