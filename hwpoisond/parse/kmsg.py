"""Kernel log text: parses kmsg/dmesg/journal lines about memory errors, never reads files.

Prefixes: the message is found wherever it stands in the line (`split_prefix`), so any prefix,
or several, may precede it: syslog (RFC 3164 with or without a host, RFC 3339 / RFC 5424), every
`dmesg` time format and `-x`/`-r`, the printk caller id, /dev/kmsg record headers, `journalctl`
short/-iso/-precise/-monotonic/-full/-unix/with-unit, mail quoting, leading blanks, CRLF. The
time is taken from the prefix: wall clock first, then a yearless stamp, then seconds since boot.

Messages, with the kernel file that prints them:
- drivers/edac/edac_mc.c: "EDAC MC%d: %d CE %s%son %s (%s page:0x%lx offset:0x%lx grain:%ld
  syndrome:0x%lx%s%s)" (v5.7+; UE without syndrome), "EDAC MC%d: %d CE %s on %s (%s %s - %s)"
  (v3.5–v5.6, detail "page:0x%lx offset:0x%lx grain:%ld syndrome:0x%lx"), and the pre-v3.5
  "EDAC MC%d: CE page 0x%lx, offset 0x%lx, grain %d, syndrome 0x%lx, row %d, channel %d, label
  \"%s\": %s" / "UE page 0x%lx, offset 0x%lx, grain %d, row %d, labels \"%s\": %s".
- arch/x86/kernel/cpu/mce/core.c __print_mce: the multi-line "[Hardware Error]: CPU %d: Machine
  Check%s: %Lx Bank %d: %016Lx" / "TSC %llx ADDR %llx MISC %llx [PPIN] [SYND] [IPID]" /
  "PROCESSOR %u:%x TIME %llu SOCKET %u APIC %x [microcode %x]" record ("Machine Check Exception"
  before v4.x; "mce: " pr_fmt since v4.x), and "Machine check events logged".
- mm/memory-failure.c: "Memory failure: %#lx: recovery action for %s: %s" (v4.16+), "MCE %#lx:
  recovery action for %s: %s" (v4.2–v4.15), "MCE %#lx: %s page recovery: %s" (before v4.2),
  "%#lx: already hardware poisoned"; soft offline "soft offline: %#lx …" (under "Memory failure: "
  from v4.16 until v6.10) and "Soft offline: %#lx…" (v6.11+, commit "mm/memory-failure: refactor
  log format in soft offline code"); "Unpoison: Software-unpoisoned [free ]page %#lx".
- drivers/ras/cec.c: "RAS: Soft-offlining pfn: 0x%llx".

Results are normalised: memory_failure `result` is the kernel's action name lower-cased
(recovered, delayed, failed, ignored), "already_poisoned" or "unpoisoned"; soft_offline `result`
is one of already_poisoned, invalidated, migration_failed, isolation_failed, split_failed, other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from hwpoisond.core.model import Event, EventSource, pfn_of
from hwpoisond.parse.mce import decode_mca
from hwpoisond.parse.trace import parse_dram_location, split_msg_label

# --- prefixes -------------------------------------------------------------------------------

#: Where a kernel message this module reads begins, whatever stands before it: the message is
#: found, not the prefix, so syslog, dmesg, journalctl, /dev/kmsg, mail quoting and vendor
#: prefixes, alone or stacked, all give the bare message. A start must follow the line's start,
#: white space or one of `]:;>|` (the ends of the prefixes those tools write).
_MESSAGE_START = re.compile(
    r"(?:^|(?<=[\s\]:;>|]))"
    r"(?:EDAC |mce: |\[Hardware Error\]: |\{\d+\}\[Hardware Error\]: |Memory failure: |MCE:? "
    r"|[Ss]oft[ _]offline: |Unpoison: |RAS: |Machine check events logged)"
)
#: Wall-clock stamps, read in this order. ISO 8601 / RFC 3339 (rsyslog's file format, RFC 5424,
#: `journalctl -o short-iso[-precise]`, `dmesg --time-format iso` with its decimal comma,
#: `journalctl -o short-full` "Thu 2025-12-04 14:53:20 UTC", vendor "[date time]").
_WALL_ISO = re.compile(
    r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)
#: `dmesg -T`/`--ctime` (util-linux): "[Fri Dec  4 16:29:56 2026]".
_WALL_CTIME = re.compile(
    r"\[[A-Z][a-z]{2} ([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})\]"
)
#: `journalctl -o short-unix`: "1764860000.123456 host kernel: ".
_WALL_UNIX = re.compile(r"^(\d{9,12}\.\d{1,9}) ")
#: RFC 3164 / `journalctl -o short[-precise]`: "Dec 04 14:53:20[.123456]", no year, no zone.
_SHORT = re.compile(
    r"(?<![\w:])([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2}(?:\.\d{1,9})?)(?![\d:])"
)
#: Seconds since boot: the kernel's "[%5lu.%06lu]" (kernel/printk/printk.c print_time), also
#: under `dmesg -d` "[ 1523.456789 <    0.000123>]" and `journalctl -o short-monotonic`.
_MONOTONIC = re.compile(r"\[\s*(\d+\.\d+)(?: <[^>]*>)?\]")
_DMESG_ONLY = re.compile(r"(?:<\d{1,3}>)?\[\s*(\d+\.\d+)\] ").fullmatch
#: A /dev/kmsg record header "PRI,SEQ,USEC,FLAGS[,…];" (Documentation/ABI/testing/dev-kmsg).
_KMSG_RECORD = re.compile(r"^\s*\d{1,3},\d+,(\d+),[^;]*;$")
MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}


@dataclass(frozen=True, slots=True)
class ShortStamp:
    """A yearless timestamp (RFC 3164, `journalctl -o short`): no year and no zone; the caller
    chooses the year."""

    month: int
    day: int
    hour: int
    minute: int
    second: float

    def epoch_seconds(self, year: int) -> float | None:
        """Seconds since the epoch, reading the stamp as UTC in `year`; None if no such date."""
        whole = int(self.second)
        try:
            moment = datetime(year, self.month, self.day, self.hour, self.minute, whole, tzinfo=UTC)
        except ValueError:
            return None
        return moment.timestamp() + (self.second - whole)


@dataclass(frozen=True, slots=True)
class KmsgLine:
    """A log line split into its message and its timestamp (`time` already in seconds, or a
    `short` stamp still waiting for a year)."""

    message: str
    time: float | None = None
    short: ShortStamp | None = None
    start: int = 0  # where the message starts in the line


def _iso_epoch(m: re.Match[str]) -> float | None:
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    offset = timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second),
            tzinfo=timezone(offset),
        )  # fmt: skip
    except ValueError:
        return None
    return moment.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _prefix_time(prefix: str) -> tuple[float | None, ShortStamp | None]:
    """The best timestamp in the text before a message: wall clock (it survives reboots) over a
    yearless stamp over seconds since boot."""
    m = _DMESG_ONLY(prefix)
    if m is not None:  # the common case, plain dmesg: one match instead of five searches
        return float(m[1]), None
    m = _WALL_ISO.search(prefix)
    if m is not None:
        return _iso_epoch(m), None
    m = _WALL_CTIME.search(prefix)
    if m is not None and m[1] in MONTHS:
        try:
            moment = datetime(
                int(m[6]), MONTHS[m[1]], int(m[2]), int(m[3]), int(m[4]), int(m[5]), tzinfo=UTC
            )
        except ValueError:
            return None, None
        return moment.timestamp(), None
    m = _WALL_UNIX.match(prefix.lstrip("> \t"))
    if m is not None:
        return float(m[1]), None
    m = _SHORT.search(prefix)
    if m is not None and m[1] in MONTHS:
        return None, ShortStamp(MONTHS[m[1]], int(m[2]), int(m[3]), int(m[4]), float(m[5]))
    m = _MONOTONIC.search(prefix)
    if m is not None:
        return float(m[1]), None
    m = _KMSG_RECORD.match(prefix)
    if m is not None:
        return int(m[1]) / 1e6, None
    return None, None


def split_prefix(line: str) -> KmsgLine:
    """The message and the time of a log line, whatever prefixes it carries. A line with no
    message start we know is returned whole, without a time: no parser here reads it."""
    return next_message(line, 0) or KmsgLine(line.strip())


def next_message(line: str, pos: int) -> KmsgLine | None:
    """The first message start at or after `pos`, with the time of what precedes it; None when
    there is none. A prefix may itself hold a start ("mce: " as a host or tag name): the caller
    tries the next one when a message does not parse."""
    m = _MESSAGE_START.search(line, pos)
    if m is None:
        return None
    start = m.start()
    message = line[start:].rstrip()
    if start == 0:
        return KmsgLine(message)
    time, short = _prefix_time(line[:start])
    return KmsgLine(message, time, short, start)


# --- outcomes -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """A message recognised as one of ours: the event it carries, or none (`event is None`) when
    it is malformed or (`notice`) a line that carries no event."""

    source: EventSource
    event: Event | None
    notice: bool = False


def _malformed(source: EventSource) -> Outcome:
    return Outcome(source, None)


# --- EDAC -----------------------------------------------------------------------------------

_EDAC_PREFIX = re.compile(r"^EDAC MC(\d+): ")
# Split around the " (" that opens the "(location page:0x…" group rather than with one regex of
# several free-text groups, which backtracks quadratically on hostile lines.
_EDAC_HEAD = re.compile(r"^(?P<count>\d+) (?P<type>CE|UE) (?P<rest>.*)$")
_EDAC_INNER = re.compile(
    r"^(?P<loc>.*?) ?page:0x(?P<page>[0-9a-fA-F]+) offset:0x(?P<off>[0-9a-fA-F]+) "
    r"grain:(?P<grain>\d+)(?: syndrome:0x(?P<synd>[0-9a-fA-F]+))?(?: - (?P<detail>.*))?$"
)
_EDAC_LEGACY = re.compile(
    r"^(?P<type>CE|UE) page 0x(?P<page>[0-9a-fA-F]+), offset 0x(?P<off>[0-9a-fA-F]+), "
    r"grain (?P<grain>\d+), (?:syndrome 0x(?P<synd>[0-9a-fA-F]+), )?row (?P<row>\d+), "
    r"(?:channel (?P<chan>\d+), )?labels? \"(?P<label>[^\"]*)\": ?(?P<msg>.*)$"
)


def _edac_event(
    mc: int,
    ce: bool,
    count: int,
    page: int,
    offset: int,
    grain: int,
    syndrome: int | None,
    label: str | None,
    location: str | None,
    msg: str | None,
    detail: str,
    time: float | None,
    line: int | None,
) -> Event:
    # EDAC passes page 0 / offset 0 when the driver does not know the address.
    phys_addr = (page << 12) | offset
    usable = phys_addr or None
    dram_text = f"{location or ''} {detail}".strip()
    return Event(
        time=time,
        line=line,
        kind="memory_error",
        source="kmsg_edac",
        severity="corrected" if ce else "uncorrected",
        count=count,
        phys_addr=usable,
        pfn=pfn_of(usable) if usable is not None else None,
        mc=mc,
        label=label or None,
        location=location or None,
        grain=grain,
        syndrome=syndrome,
        msg=msg or None,
        dram=parse_dram_location(dram_text) if dram_text else None,
        extra=(("driver_detail", detail),) if detail else (),
    )


def parse_edac(message: str, time: float | None = None, line: int | None = None) -> Outcome | None:
    """An "EDAC MCn: … CE/UE …" line; None when the line is another EDAC message."""
    head = _EDAC_PREFIX.match(message)
    if head is None:
        return None
    mc = int(head[1])
    body = message[head.end() :]
    page_at = body.find("page:0x")
    paren = body.rfind(" (", 0, page_at) if page_at > 0 else -1
    m = _EDAC_HEAD.match(body[:paren]) if paren > 0 and body.endswith(")") else None
    if m is not None:
        inner = _EDAC_INNER.match(body[paren + 2 : -1])
        parts = split_msg_label(m["rest"])
        if inner is None or parts is None:
            return _edac_without_detail(mc, body, time, line)
        msg, label = parts
        return Outcome(
            "kmsg_edac",
            _edac_event(
                mc,
                m["type"] == "CE",
                int(m["count"]),
                int(inner["page"], 16),
                int(inner["off"], 16),
                int(inner["grain"]),
                int(inner["synd"], 16) if inner["synd"] else None,
                label,
                inner["loc"].strip(),
                msg,
                inner["detail"] or "",
                time,
                line,
            ),
        )
    m = _EDAC_LEGACY.match(body)
    if m is not None:
        location = f"row:{m['row']}" + (f" channel:{m['chan']}" if m["chan"] else "")
        return Outcome(
            "kmsg_edac",
            _edac_event(
                mc,
                m["type"] == "CE",
                1,
                int(m["page"], 16),
                int(m["off"], 16),
                int(m["grain"]),
                int(m["synd"], 16) if m["synd"] else None,
                m["label"],
                location,
                m["msg"],
                "",
                time,
                line,
            ),
        )
    if _EDAC_HEAD.match(body) is not None:
        return _edac_without_detail(mc, body, time, line)
    # Looks like a CE/UE report but did not parse: say so rather than drop it silently.
    if re.match(r"^(?:\d+ )?[CU]E ", body):
        return _malformed("kmsg_edac")
    return None


def _edac_without_detail(mc: int, body: str, time: float | None, line: int | None) -> Outcome:
    """A v3.5+ report whose "(location page:… offset:… grain:…)" detail is missing, cut short
    or redacted (a forum post, a 1 KiB printk limit, "page:0xXXXX"): still an error of this
    severity and count on this controller and DIMM, without an address. The address is never
    salvaged from a damaged detail: a cut hex number names another page."""
    head = _EDAC_HEAD.match(body)
    if head is None:
        return _malformed("kmsg_edac")
    rest, sep, tail = head["rest"].partition(" (")
    parts = split_msg_label(rest)
    msg, label = parts if parts is not None else (rest.strip(), "")
    return Outcome(
        "kmsg_edac",
        Event(
            "memory_error",
            "kmsg_edac",
            "corrected" if head["type"] == "CE" else "uncorrected",
            count=int(head["count"]),
            time=time,
            line=line,
            mc=mc,
            label=label or None,
            msg=msg or None,
            extra=(("detail_unparsed", tail[:200]),) if sep else (("detail", "missing"),),
        ),
    )


# --- mce: [Hardware Error] records ------------------------------------------------------------

_HW_ERR = "[Hardware Error]: "
_MCE_START = re.compile(
    r"^CPU (?P<cpu>\d+): Machine Check(?: Exception)?: (?P<mcg>[0-9a-fA-F]+) "
    r"Bank (?P<bank>\d+): (?P<status>[0-9a-fA-F]{1,16})\s*$"
)
_MCE_PROCESSOR = re.compile(
    r"^PROCESSOR (?P<vendor>\d+):(?P<cpuid>[0-9a-fA-F]+) TIME (?P<time>\d+) SOCKET (?P<socket>\d+)"
    r" APIC (?P<apic>[0-9a-fA-F]+)(?: microcode (?P<ucode>[0-9a-fA-F]+))?\s*$"
)
_MCE_REG_KEYS = frozenset({"TSC", "ADDR", "MISC", "PPIN", "SYND", "IPID", "SYND1", "SYND2"})


@dataclass(slots=True)
class MceRecord:
    """A `[Hardware Error]` record being assembled, one line at a time (mutable on purpose: it
    lives only inside the line parser until it is turned into an Event)."""

    line: int | None
    time: float | None
    cpu: int
    bank: int
    status: int
    mcgstatus: int
    regs: dict[str, int] = field(default_factory=dict)
    vendor: int | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)
    complete: bool = False

    def to_event(self) -> Event:
        addr = self.regs.get("ADDR", 0)
        misc = self.regs.get("MISC", 0)
        ipid = self.regs.get("IPID", 0)
        decoded = decode_mca(self.status, addr, misc, ipid, self.vendor)
        extra = [("mcgstatus", f"{self.mcgstatus:#x}")]
        extra += [(k.lower(), f"{v:#x}") for k, v in self.regs.items()]
        extra += self.extra
        if not self.complete:
            extra.append(("incomplete", "1"))
        return Event(
            kind="memory_error" if decoded.memory_error else "mce",
            source="kmsg_mce",
            severity=decoded.severity,
            phys_addr=decoded.phys_addr,
            pfn=pfn_of(decoded.phys_addr) if decoded.phys_addr is not None else None,
            time=self.time,
            line=self.line,
            bank=self.bank,
            status=self.status,
            cpu=self.cpu,
            extra=tuple(extra),
        )


def hardware_error_body(message: str) -> str | None:
    """The text after "[Hardware Error]: " when the line is an x86 mce message ("mce: " prefix
    since v4.x, none before); None for other lines, including the CPER "{n}[Hardware Error]"
    lines of APEI, which are not machine-check records."""
    idx = message.find(_HW_ERR)
    if idx < 0:
        return None
    before = message[:idx]
    if before not in ("", "mce: "):
        return None
    return message[idx + len(_HW_ERR) :]


def start_mce_record(body: str, line: int | None, time: float | None) -> MceRecord | None:
    m = _MCE_START.match(body)
    if m is None:
        return None
    return MceRecord(
        line=line,
        time=time,
        cpu=int(m["cpu"]),
        bank=int(m["bank"]),
        status=int(m["status"], 16),
        mcgstatus=int(m["mcg"], 16),
    )


def continue_mce_record(record: MceRecord, body: str) -> bool:
    """Add one continuation line (TSC/ADDR/MISC…, PROCESSOR…, RIP…) to `record`; False when the
    line is not a continuation."""
    if body.startswith("TSC "):
        tokens = body.split()
        if len(tokens) % 2:
            return False
        for key, value in zip(tokens[::2], tokens[1::2], strict=True):
            if key not in _MCE_REG_KEYS:
                return False
            try:
                record.regs[key] = int(value, 16)
            except ValueError:
                return False
        return True
    if body.startswith("PROCESSOR "):
        m = _MCE_PROCESSOR.match(body)
        if m is None:
            return False
        record.vendor = int(m["vendor"])
        record.extra += [
            ("cpuid", m["cpuid"]),
            ("walltime", m["time"]),
            ("socket", m["socket"]),
            ("apicid", m["apic"]),
        ]
        if m["ucode"]:
            record.extra.append(("microcode", m["ucode"]))
        record.complete = True
        return True
    return body.startswith("RIP")


def is_mce_notice(message: str) -> bool:
    """ "Machine check events logged" (mce_notify_irq): recognised, carries no event."""
    return message.endswith("Machine check events logged") and (
        message.startswith(("mce: ", _HW_ERR, "Machine check"))
    )


# --- memory failure / soft offline / unpoison / CEC -----------------------------------------

_HEX = r"0x[0-9a-fA-F]+|0"
_MF_ACTION = re.compile(
    rf"^(?P<pfn>{_HEX}): recovery action for (?P<type>.+): (?P<result>[A-Za-z]+)$"
)
_MF_OLD_ACTION = re.compile(
    rf"^(?P<pfn>{_HEX}): (?P<type>.+?) page recovery: (?P<result>[A-Za-z]+)$"
)
#: mm/memory-failure.c kill_proc(): "%#lx: Sending SIGBUS to %s:%d due to hardware memory
#: corruption" (v5.x+), "%#lx: Killing %s:%d due to hardware memory corruption" (before), and
#: "%#lx: forcibly killing %s:%d because of failure to unmap corrupted page" (collect_procs /
#: hwpoison_user_mappings); under "Memory failure: " (v4.16+) or "MCE " (before). The comm may
#: hold ':' or spaces (TASK_COMM_LEN 16), so the pid is the last ":<digits>".
_MF_KILL = re.compile(
    rf"^(?P<pfn>{_HEX}): (?P<how>Sending SIGBUS to|Killing|forcibly killing) (?P<comm>.+):"
    r"(?P<pid>\d+) "
    r"(?:due to hardware memory corruption|because of failure to unmap corrupted page)$"
)
#: arch/x86/kernel/cpu/mcheck/mce.c (v3.x-v4.x): "MCE: Killing %s:%d due to hardware memory
#: corruption fault at %llx" (the physical address of the error).
_MCE_KILL = re.compile(
    r"^MCE: Killing (?P<comm>.+):(?P<pid>\d+) due to hardware memory corruption fault at "
    r"(?P<addr>[0-9a-fA-F]+)$"
)
_KILL_HOW = {"Sending SIGBUS to": "sigbus", "Killing": "killed", "forcibly killing": "force_killed"}
_MF_ALREADY = re.compile(rf"^(?P<pfn>{_HEX}): already hardware poisoned$")
_UNPOISONED = re.compile(rf"^Software-unpoisoned (?:free |huge |free huge )?page (?P<pfn>{_HEX})$")
_SOFT_PFN = re.compile(rf"^(?P<pfn>{_HEX}):? ?(?P<what>.*)$")
_CEC = re.compile(rf"^Soft-offlining pfn: (?P<pfn>{_HEX})$")


def _pfn_event(
    kind: str,
    source: EventSource,
    pfn_text: str,
    at: tuple[float | None, int | None],
    **fields: str | None,
) -> Event | None:
    time, line = at
    try:
        pfn = int(pfn_text, 16)
    except ValueError:
        return None
    if kind == "memory_failure":
        return Event(
            time=time,
            line=line,
            kind="memory_failure",
            source=source,
            severity=None,
            phys_addr=pfn << 12,
            pfn=pfn,
            page_type=fields.get("page_type"),
            result=fields.get("result"),
        )
    if kind == "soft_offline":
        return Event(
            time=time,
            line=line,
            kind="soft_offline",
            source=source,
            severity=None,
            phys_addr=pfn << 12,
            pfn=pfn,
            result=fields.get("result"),
            msg=fields.get("msg"),
        )
    return Event(
        time=time,
        line=line,
        kind="cec_offline",
        source=source,
        severity=None,
        phys_addr=pfn << 12,
        pfn=pfn,
    )


def _soft_offline_result(what: str) -> str:
    if "already poisoned" in what:
        return "already_poisoned"
    if "invalidated" in what:
        return "invalidated"
    if "migration failed" in what:
        return "migration_failed"
    if "isolation failed" in what or "failed to isolate" in what:
        return "isolation_failed"
    if "split" in what:
        return "split_failed"
    return "other"


def parse_soft_offline(rest: str, at: tuple[float | None, int | None]) -> Outcome:
    """The text after "soft offline: " / "soft_offline: " / "Soft offline: "."""
    m = _SOFT_PFN.match(rest)
    if m is None:
        return _malformed("kmsg_soft_offline")
    what = m["what"].strip()
    event = _pfn_event(
        "soft_offline",
        "kmsg_soft_offline",
        m["pfn"],
        at,
        result=_soft_offline_result(what),
        msg=what or None,
    )
    return Outcome("kmsg_soft_offline", event)


def parse_unpoison(rest: str, at: tuple[float | None, int | None]) -> Outcome:
    """The text after "Unpoison: ": only "Software-unpoisoned … page" means the page is back."""
    m = _UNPOISONED.match(rest)
    if m is None:
        return Outcome("kmsg_memory_failure", None, notice=True)
    event = _pfn_event("memory_failure", "kmsg_memory_failure", m["pfn"], at, result="unpoisoned")
    return Outcome("kmsg_memory_failure", event)


def _memory_failure_body(rest: str, at: tuple[float | None, int | None]) -> Outcome | None:
    """The text after "Memory failure: " or "MCE " (before v4.16)."""
    if rest.startswith(("soft offline: ", "soft_offline: ")):
        return parse_soft_offline(rest.partition(": ")[2], at)
    if rest.startswith("soft_offline_page: "):
        return parse_soft_offline(rest[len("soft_offline_page: ") :], at)
    if rest.startswith("Unpoison: "):
        return parse_unpoison(rest[len("Unpoison: ") :], at)
    if rest.startswith("Software-unpoisoned"):  # before v5.x: "MCE: Software-unpoisoned page"
        return parse_unpoison(rest, at)
    if not rest.startswith("0"):
        return None
    m = _MF_ACTION.match(rest) or _MF_OLD_ACTION.match(rest)
    if m is not None:
        return Outcome(
            "kmsg_memory_failure",
            _pfn_event(
                "memory_failure",
                "kmsg_memory_failure",
                m["pfn"],
                at,
                page_type=m["type"],
                result=m["result"].lower(),
            ),
        )
    m = _MF_KILL.match(rest)
    if m is not None:
        return Outcome("kmsg_memory_failure", _kill_event(m, at))
    m = _MF_ALREADY.match(rest)
    if m is not None:
        return Outcome(
            "kmsg_memory_failure",
            _pfn_event(
                "memory_failure", "kmsg_memory_failure", m["pfn"], at, result="already_poisoned"
            ),
        )
    if "recovery" in rest:
        return _malformed("kmsg_memory_failure")
    return None  # other memory-failure chatter (SIGBUS notes, unhandlable pages, …)


def _kill_event(m: re.Match[str], at: tuple[float | None, int | None]) -> Event | None:
    """A process the kernel signalled or killed because it used a poisoned page: comm and pid
    are the first question of a post-mortem."""
    pfn = int(m["pfn"], 16)
    return _process_event(pfn << 12, pfn, m["comm"], m["pid"], _KILL_HOW[m["how"]], at)


def _process_event(
    phys_addr: int,
    pfn: int,
    comm: str,
    pid: str,
    how: str,
    at: tuple[float | None, int | None],
) -> Event:
    return Event(
        "process_killed",
        "kmsg_memory_failure",
        None,
        phys_addr=phys_addr,
        pfn=pfn,
        time=at[0],
        line=at[1],
        result=how,
        extra=(("comm", comm), ("pid", pid)),
    )


def parse_page_message(
    message: str, time: float | None = None, line: int | None = None
) -> Outcome | None:
    """Memory failure, soft offline, unpoison and CEC lines; None when the line is none of them."""
    at = (time, line)
    if message.startswith("Memory failure: "):
        return _memory_failure_body(message[len("Memory failure: ") :], at)
    if message.startswith("MCE "):
        rest = message[4:]
        if rest.startswith("Software-unpoisoned") or rest.startswith("0"):
            return _memory_failure_body(rest, at)
        return None
    if message.startswith("MCE: Killing "):
        m = _MCE_KILL.match(message)
        if m is None:
            return _malformed("kmsg_memory_failure")
        addr = int(m["addr"], 16)
        killed = _process_event(addr, pfn_of(addr), m["comm"], m["pid"], "killed", at)
        return Outcome("kmsg_memory_failure", killed)
    if message.startswith("MCE: Software-unpoisoned"):
        return parse_unpoison(message[len("MCE: ") :], at)
    if message.startswith(("Soft offline: ", "soft offline: ", "soft_offline: ")):
        return parse_soft_offline(message.partition(": ")[2], at)
    if message.startswith("Unpoison: "):
        return parse_unpoison(message[len("Unpoison: ") :], at)
    if message.startswith("RAS: Soft-offlining pfn: "):
        m = _CEC.match(message[len("RAS: ") :])
        if m is None:
            return _malformed("kmsg_cec")
        return Outcome("kmsg_cec", _pfn_event("cec_offline", "kmsg_cec", m["pfn"], at))
    return None
