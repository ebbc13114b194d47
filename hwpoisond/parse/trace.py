"""tracefs text: parses trace_pipe lines of the RAS events, never reads files.

Formats are the kernel's TP_printk strings:
- `ras:mc_event` (include/ras/ras_event.h, unchanged since v3.5):
  "%d %s error%s:%s%s on %s (mc:%d location:%d:%d:%d address:0x%08lx grain:%d
  syndrome:0x%08lx%s%s)" — count, type, msg, label, mc, layers, address, grain, syndrome, driver
  detail (free text; APEI GHES and Intel skx/i10nm put the DRAM location there).
- `mce:mce_record` (include/trace/events/mce.h), three generations: "ADDR/MISC:" (v2.6.31–v4.8),
  "IPID: …, ADDR/MISC/SYND:" (v4.9–v6.9), "ADDR: …, MISC: …, SYND: …, … PPIN … microcode"
  (v6.10+). All are "KEY: value" items joined by ", ", which is how they are read here.
- `ras:memory_failure_event`: "pfn %#lx: recovery action for %s: %s" (page type names differ by
  version; any name is accepted).
- `ras:extlog_mem_event`: "{%d} %s error: %s physical addr: %016llx (mask lsb: %x) %sFRU: %pUl
  %.20s".
A trace_pipe line carries the prefix "task-pid [cpu] flags timestamp: event: " (no flags column
before v3.x-era latency format changes; an optional "(tgid)" column with the record-tgid option).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import cast

from hwpoisond.core.model import PAGE_SHIFT, DramLocation, Event, Severity, pfn_of
from hwpoisond.parse.build import fast_builder
from hwpoisond.parse.mce import decode_mca

# Event(...) and DramLocation(...) at a plain class's cost (see hwpoisond.parse.build); typed as
# the classes so that mypy checks every call against the real constructors.
_Event = cast("type[Event]", fast_builder(Event))
_DramLocation = cast("type[DramLocation]", fast_builder(DramLocation))

# comm-pid, optional (tgid), [cpu], optional flags, timestamp, event name, body.
_TRACE_PREFIX = re.compile(
    r"^\s*.*?-\d+\s+(?:\(\s*[\d-]+\)\s+)?\[(\d+)\]\s+"
    r"(?:[^\s:]{1,8}\s+)?(\d+\.\d+):\s+([a-z_]+):\s?(.*)$"
)


def split_trace_line(line: str) -> tuple[str, float, int, str] | None:
    """(event name, timestamp seconds, cpu, body) of a trace_pipe line, or None."""
    m = _TRACE_PREFIX.match(line)
    if m is None:
        return None
    cpu, ts, event, body = m.groups()
    return event, float(ts), int(cpu), body


# --- DRAM location from driver detail -------------------------------------------------------

# "key:value" / "key: value" / "key=value" with a decimal or 0x-hex value. APEI GHES prints
# decimal ("node:%d card:%d module:%d rank:%d bank:%d bank_group:%d bank_address:%d row:%d
# col:%d", drivers/firmware/efi/cper.c cper_mem_err_location; "card: %d" with a space before
# v5.10), Intel skx_common.c prints "socket:%d imc:%d rank:%d bg:%d ba:%d row:0x%x col:0x%x"
# (v4.x–v5.x) and "ProcessorSocketId:0x%x MemoryControllerId:0x%x PhysicalRankId:0x%x Row:0x%x
# Column:0x%x Bank:0x%x BankGroup:0x%x" (v5.x+; ADXL-decoded messages use the BIOS's component
# names, which follow the same words).
_KV = re.compile(r"(?<![\w#])([A-Za-z][A-Za-z_]*)\s?[:=]\s?(0x[0-9a-fA-F]+|-?\d+)\b")

# Lower-cased key → DramLocation field. CPER's node/card/module are mapped to socket/channel/
# dimm: the closest meaning the firmware gives them (UEFI spec N.2.5, Memory Error Section).
_DRAM_KEYS: dict[str, str] = {
    "socket": "socket",
    "socketid": "socket",
    "processorsocketid": "socket",
    "node": "socket",
    "imc": "mc",
    "memctrl": "mc",
    "memorycontrollerid": "mc",
    "channel": "channel",
    "channelid": "channel",
    "chan": "channel",
    "card": "channel",
    "dimm": "dimm",
    "dimmslotid": "dimm",
    "slot": "dimm",
    "module": "dimm",
    "rank": "rank",
    "physicalrankid": "rank",
    "dimmrankid": "rank",
    "bank_group": "bank_group",
    "bankgroup": "bank_group",
    "bg": "bank_group",
    "bank": "bank",
    "ba": "bank",
    "bankaddress": "bank_address",
    "bank_address": "bank_address",
    "row": "row",
    "column": "column",
    "col": "column",
}


def _int(text: str) -> int:
    return int(text, 16) if text[:2] in ("0x", "0X") else int(text)


# Detail made only of "key:value[:value…]" tokens joined by single spaces, ASCII (what Intel
# skx/i10nm and APEI GHES since v5.10 print). On such text _KV finds exactly each token's key and
# first value, so it is read token by token: the same answer for a fraction of the regex's cost.
_SIMPLE_VALUE = r"(?::(?:0x[0-9a-fA-F]+|-?[0-9]+))+"
_SIMPLE_DETAIL = re.compile(
    rf"[A-Za-z][A-Za-z_]*{_SIMPLE_VALUE}(?: [A-Za-z][A-Za-z_]*{_SIMPLE_VALUE})*"
)


def _dram_fields_by_regex(text: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for key, value in _KV.findall(text):
        field = _DRAM_KEYS.get(key.lower())
        if field is not None and field not in found:
            found[field] = _int(value)
    return found


def _dram_fields_by_tokens(text: str) -> dict[str, int]:
    """_dram_fields_by_regex() for text that _SIMPLE_DETAIL matches in full."""
    found: dict[str, int] = {}
    for token in text.split(" "):
        key, _, values = token.partition(":")
        field = _DRAM_KEYS.get(key.lower())
        if field is not None and field not in found:
            value = values.partition(":")[0]
            found[field] = int(value, 16) if value[1:2] == "x" else int(value)
    return found


#: Distinct driver details remembered by parse_dram_location (a recurring error repeats its
#: detail text exactly; the values are immutable, so sharing them is safe).
DRAM_CACHE_ENTRIES = 4096


@lru_cache(maxsize=DRAM_CACHE_ENTRIES)
def parse_dram_location(text: str) -> DramLocation | None:
    """The DRAM coordinates named in a driver's free-text detail, or None when it names none.

    When both CPER "bank" (the raw field) and "bank_address" are present the latter wins: with
    bank-group addressing the raw field packs group and address together.
    """
    if _SIMPLE_DETAIL.fullmatch(text) is not None:
        found = _dram_fields_by_tokens(text)
    else:
        found = _dram_fields_by_regex(text)
    if not found:
        return None
    bank_address = found.pop("bank_address", None)
    if bank_address is not None:
        found["bank"] = bank_address
    return _DramLocation(**found)


# --- ras:mc_event ---------------------------------------------------------------------------

# One regex for the fixed parts, msg and label split with rfind after it. The atomic group ends
# the free text at the first " (mc:" for good: with a second free-text group (detail) a plain
# lazy group would backtrack quadratically on hostile lines (labels are writable in sysfs).
_MC_EVENT = re.compile(
    r"(\d+) (Corrected|Uncorrected|Deferred|Fatal|Info) errors?:(?>(.*?)\n? \(mc:)"
    r"(\d+) location:(-?\d+:-?\d+:-?\d+)(?: address:0x([0-9a-fA-F]+))?"
    r" grain:(\d+)(?: syndrome:0x([0-9a-fA-F]+))?(?: (.*))?\)\s*"
)


def split_msg_label(text: str) -> tuple[str, str] | None:
    """("msg", "label") of "<msg> on <label>" / "on <label>" (edac_mc.c: "%s%son %s"); the
    last " on " splits them, since driver messages may say "on" and DIMM labels do not."""
    text = " " + text.lstrip(" ")
    idx = text.rfind(" on ")
    if idx < 0:
        return None
    return text[:idx].strip(), text[idx + 4 :]


MC_EVENT_SEVERITY: dict[str, Severity] = {
    "Corrected": "corrected",
    "Uncorrected": "uncorrected",
    "Deferred": "deferred",
    "Fatal": "fatal",
    "Info": "info",
}


def parse_mc_event(body: str, time: float | None = None, line: int | None = None) -> Event | None:
    """One `mc_event` body. EDAC drivers pass page 0 / offset 0 when they do not know the
    address, so address 0 means "unknown" (nobody offlines pfn 0)."""
    m = _MC_EVENT.fullmatch(body)
    if m is None:
        return None
    count, etype, rest, mc, location, addr_hex, grain, syndrome, detail = m.groups()
    parts = split_msg_label(rest)
    if parts is None:
        return None
    msg, label = parts
    phys_addr = int(addr_hex, 16) if addr_hex else None
    if not phys_addr:
        phys_addr = None
    return _Event(
        time=time,
        line=line,
        kind="memory_error",
        source="mc_event",
        severity=MC_EVENT_SEVERITY[etype],
        count=int(count),
        phys_addr=phys_addr,
        pfn=phys_addr >> PAGE_SHIFT if phys_addr is not None else None,
        mc=int(mc),
        label=label,
        location=location,
        grain=int(grain),
        syndrome=int(syndrome, 16) if syndrome else None,
        msg=msg or None,
        dram=parse_dram_location(detail) if detail else None,
        extra=(("driver_detail", detail),) if detail else (),
    )


# --- mce:mce_record -------------------------------------------------------------------------


# Optional items kept verbatim in Event.extra: (extra name, item key), in this order.
_MCE_EXTRA_ITEMS = (
    ("mcgcap/mcgstatus", "MCGc/s"),
    ("ipid", "IPID"),
    ("tsc", "TSC"),
    ("walltime", "TIME"),
    ("walltime", "time"),
    ("socket", "SOCKET"),
    ("socket", "socket"),
    ("apicid", "APIC"),
    ("ppin", "PPIN"),
    ("microcode", "microcode"),
)

# The two current generations exactly as the kernel prints them, read with one regex each (the
# item-by-item reader below gives the same answer on them at several times the cost).
_HEX = "[0-9a-fA-F]+"
_MCE_RECORD_V4_9 = re.compile(  # v4.9–v6.9
    rf"CPU: ([0-9]+), MCGc/s: ({_HEX}/{_HEX}), MC([0-9]+): ({_HEX}), IPID: ({_HEX}), "
    rf"ADDR/MISC/SYND: ({_HEX})/({_HEX})/{_HEX}, RIP: {_HEX}:<{_HEX}>, TSC: ({_HEX}), "
    rf"PROCESSOR: ([0-9]+):{_HEX}, TIME: ([0-9]+), SOCKET: ([0-9]+), APIC: ({_HEX})"
)
_MCE_RECORD_V6_10 = re.compile(  # v6.10+
    rf"CPU: ([0-9]+), MCGc/s: ({_HEX}/{_HEX}), MC([0-9]+): ({_HEX}), IPID: ({_HEX}), "
    rf"ADDR: ({_HEX}), MISC: ({_HEX}), SYND: {_HEX}, RIP: {_HEX}:<{_HEX}>, TSC: ({_HEX}), "
    rf"PPIN: ({_HEX}), vendor: ([0-9]+), CPUID: {_HEX}, time: ([0-9]+), socket: ([0-9]+), "
    rf"APIC: ({_HEX}), microcode: ({_HEX})"
)


def _mce_items(body: str) -> dict[str, str]:
    items: dict[str, str] = {}
    for part in body.split(", "):
        key, sep, value = part.partition(": ")
        if sep:
            items[key.strip()] = value.strip()
    return items


def parse_mce_record(body: str, time: float | None = None, line: int | None = None) -> Event | None:
    """One `mce_record` body, any of the three generations."""
    m = _MCE_RECORD_V4_9.fullmatch(body)
    if m is not None:
        cpu, mcg, bank, status, ipid, addr, misc, tsc, vendor, walltime, socket, apic = m.groups()
        extra = [
            ("mcgcap/mcgstatus", mcg),
            ("ipid", ipid),
            ("tsc", tsc),
            ("walltime", walltime),
            ("socket", socket),
            ("apicid", apic),
        ]
        return mce_record_event(
            time, line, int(cpu), int(bank), int(status, 16), int(addr, 16), int(misc, 16),
            int(ipid, 16), int(vendor), extra,
        )  # fmt: skip
    m = _MCE_RECORD_V6_10.fullmatch(body)
    if m is not None:
        (
            cpu,
            mcg,
            bank,
            status,
            ipid,
            addr,
            misc,
            tsc,
            ppin,
            vendor,
            walltime,
            socket,
            apic,
            ucode,
        ) = m.groups()
        extra = [
            ("mcgcap/mcgstatus", mcg),
            ("ipid", ipid),
            ("tsc", tsc),
            ("walltime", walltime),
            ("socket", socket),
            ("apicid", apic),
            ("ppin", ppin),
            ("microcode", ucode),
        ]
        return mce_record_event(
            time, line, int(cpu), int(bank), int(status, 16), int(addr, 16), int(misc, 16),
            int(ipid, 16), int(vendor), extra,
        )  # fmt: skip
    return _parse_mce_items(_mce_items(body), time, line)


def _parse_mce_items(items: dict[str, str], time: float | None, line: int | None) -> Event | None:
    """Any generation, from its "KEY: value" items."""
    try:
        cpu = int(items["CPU"])
        bank_key = next(k for k in items if k.startswith("MC") and k[2:].isdigit())
        bank = int(bank_key[2:])
        status = int(items[bank_key], 16)
        if "ADDR" in items:  # v6.10+
            addr = int(items["ADDR"], 16)
            misc = int(items["MISC"], 16)
        elif "ADDR/MISC/SYND" in items:  # v4.9–v6.9
            addr_s, misc_s, _synd = items["ADDR/MISC/SYND"].split("/")
            addr, misc = int(addr_s, 16), int(misc_s, 16)
        else:  # v2.6.31–v4.8
            addr_s, misc_s = items["ADDR/MISC"].split("/")
            addr, misc = int(addr_s, 16), int(misc_s, 16)
        ipid = int(items.get("IPID", "0"), 16)
        vendor: int | None
        if "vendor" in items:
            vendor = int(items["vendor"])
        elif "PROCESSOR" in items:
            vendor = int(items["PROCESSOR"].split(":")[0])
        else:
            vendor = None
    except (KeyError, ValueError, StopIteration):
        return None
    extra = [(name, items[key]) for name, key in _MCE_EXTRA_ITEMS if key in items]
    return mce_record_event(time, line, cpu, bank, status, addr, misc, ipid, vendor, extra)


def mce_record_event(  # one machine check as `mce_record` carries it (also rasdaemon's table)
    time: float | None,
    line: int | None,
    cpu: int,
    bank: int,
    status: int,
    addr: int,
    misc: int,
    ipid: int,
    vendor: int | None,
    extra: list[tuple[str, str]],
) -> Event:
    decoded = decode_mca(status, addr, misc, ipid, vendor)
    extra.append(("addr", f"{addr:#x}"))
    extra.append(("misc", f"{misc:#x}"))
    phys_addr = decoded.phys_addr
    return _Event(
        time=time,
        line=line,
        kind="memory_error" if decoded.memory_error else "mce",
        source="mce_record",
        severity=decoded.severity,
        phys_addr=phys_addr,
        pfn=phys_addr >> PAGE_SHIFT if phys_addr is not None else None,
        bank=bank,
        status=status,
        cpu=cpu,
        extra=tuple(extra),
    )


# --- ras:memory_failure_event ---------------------------------------------------------------

_MEMORY_FAILURE = re.compile(
    r"^pfn (?P<pfn>0x[0-9a-fA-F]+|0): recovery action for (?P<type>.+): (?P<result>\S+)\s*$"
)


def parse_memory_failure_event(
    body: str, time: float | None = None, line: int | None = None
) -> Event | None:
    """One `memory_failure_event` body. `result` is the kernel's action name lower-cased
    (recovered, delayed, failed, ignored); the page type is kept verbatim."""
    m = _MEMORY_FAILURE.match(body)
    if m is None:
        return None
    pfn = int(m["pfn"], 16)
    return _Event(
        time=time,
        line=line,
        kind="memory_failure",
        source="memory_failure_event",
        severity=None,
        phys_addr=pfn << 12,
        pfn=pfn,
        page_type=m["type"],
        result=m["result"].lower(),
    )


_SYMBOLIC = re.compile(r"__print_symbolic\(REC->(\w+), ((?:\{ *-?\d+, *\"[^\"]*\" *\},? *)+)\)")
_SYMBOL = re.compile(r"\{ *(-?\d+), *\"([^\"]*)\" *\}")


def print_symbolic_tables(format_text: str) -> dict[str, dict[int, str]]:
    """The value → name tables of the __print_symbolic() calls in a tracefs event `format` file,
    by field (for memory_failure_event: "type" → page-type names, "result" → action names).
    Page-type numbering differs between kernel versions, so a reader of raw records must take
    the names from the running kernel's own format file."""
    return {
        field_name: {int(value): name for value, name in _SYMBOL.findall(table)}
        for field_name, table in _SYMBOLIC.findall(format_text)
    }


# --- ras:extlog_mem_event -------------------------------------------------------------------

_EXTLOG = re.compile(
    r"^\{(?P<seq>\d+)\} (?P<sev>\S+) error: (?P<etype>.*?) physical addr: (?P<pa>[0-9a-fA-F]+) "
    r"\(mask lsb: (?P<lsb>[0-9a-fA-F]+)\) (?P<loc>.*?)FRU: (?P<fru>\S+)(?: (?P<fru_text>.*))?$"
)

# cper_severity_str() (drivers/firmware/efi/cper.c): "recoverable" is an uncorrected error the
# platform survived.
EXTLOG_SEVERITY: dict[str, Severity] = {
    "recoverable": "uncorrected",
    "fatal": "fatal",
    "corrected": "corrected",
    "info": "info",
}

_PA_INVALID = (1 << 64) - 1  # the tracepoint stores ~0 when CPER_MEM_VALID_PA is clear


def parse_extlog_mem_event(
    body: str, time: float | None = None, line: int | None = None
) -> Event | None:
    """One `extlog_mem_event` body."""
    m = _EXTLOG.match(body)
    if m is None:
        return None
    pa = int(m["pa"], 16)
    lsb = int(m["lsb"], 16)
    phys_addr = None if pa in (_PA_INVALID, 0) else pa
    loc = m["loc"].strip()
    fru_text = (m["fru_text"] or "").strip()
    return _Event(
        time=time,
        line=line,
        kind="memory_error",
        source="extlog_mem_event",
        severity=EXTLOG_SEVERITY.get(m["sev"]),
        phys_addr=phys_addr,
        pfn=pfn_of(phys_addr) if phys_addr is not None else None,
        label=fru_text or None,
        location=loc or None,
        grain=1 << lsb if lsb < 64 else None,
        msg=m["etype"] or None,
        dram=parse_dram_location(loc) if loc else None,
        extra=(("err_seq", m["seq"]), ("fru_id", m["fru"])),
    )


#: Body parser for each trace event name.
TRACE_PARSERS: dict[str, Callable[[str, float | None, int | None], Event | None]] = {
    "mc_event": parse_mc_event,
    "mce_record": parse_mce_record,
    "memory_failure_event": parse_memory_failure_event,
    "extlog_mem_event": parse_extlog_mem_event,
}
