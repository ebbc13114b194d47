"""rasdaemon's database rows: converts them to Events, never opens files.

rasdaemon (ras-record.c) stores each tracepoint it handles as one row; the tables hwpoisond
reads, with the columns of rasdaemon v0.8.5 (older versions lack some, added since with ALTER
TABLE: mce_record's ppin and microcode came in v0.8.1, the memory_failure_event table in v0.6.8):

- mc_event (id, timestamp, err_count, err_type, err_msg, label, mc, top_layer, middle_layer,
  lower_layer, address, grain, syndrome, driver_detail) — ras:mc_event;
- mce_record (id, timestamp, mcgcap, mcgstatus, status, addr, misc, ip, tsc, walltime, ppin, cpu,
  cpuid, apicid, socketid, cs, bank, cpuvendor, microcode, bank_name, error_msg, …) —
  mce:mce_record;
- memory_failure_event (id, timestamp, pfn TEXT "0x%llx", page_type, action_result) —
  ras:memory_failure_event.

`timestamp` is "%Y-%m-%d %H:%M:%S %z" in the recording host's local time (ras-mc-handler.c
strftime), so events get wall-clock epoch seconds. 64-bit registers were bound with
sqlite3_bind_int64 and come back signed: they are read modulo 2^64. The AMD IPID is not stored,
so an SMCA machine check is classified without it (as the trace of a pre-v4.14 kernel is).
Rows become the events the tracepoints would have given, with source mc_event / mce_record /
memory_failure_event, so the rasdaemon preset sees exactly what rasdaemon saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from hwpoisond.core.model import Event, pfn_of
from hwpoisond.parse.trace import MC_EVENT_SEVERITY, mce_record_event, parse_dram_location

#: The tables read, in the order their rows are merged when timestamps tie.
TABLES = ("mc_event", "mce_record", "memory_failure_event")
_U64 = (1 << 64) - 1

Row = Mapping[str, object]


def row_time(value: object) -> float | None:
    """Epoch seconds of a rasdaemon timestamp, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return None


def _int(row: Row, name: str, default: int | None = None) -> int | None:
    value = row.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(name)
    return value


def _u64(row: Row, name: str) -> int:
    value = _int(row, name, 0)
    assert value is not None
    return value & _U64


def _text(row: Row, name: str) -> str | None:
    value = row.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(name)
    return value


def _extra(table: str, row: Row) -> list[tuple[str, str]]:
    return [("rasdaemon_table", table), ("rasdaemon_id", str(row.get("id")))]


def mc_event_row(row: Row) -> Event | None:
    """An mc_event row as the `ras:mc_event` event it recorded; None when malformed."""
    time = row_time(row.get("timestamp"))
    err_type = row.get("err_type")
    if time is None or not isinstance(err_type, str) or err_type not in MC_EVENT_SEVERITY:
        return None
    try:
        layers = [_int(row, f"{name}_layer", -1) for name in ("top", "middle", "lower")]
        address = _u64(row, "address")
        detail = _text(row, "driver_detail")
        extra = _extra("mc_event", row)
        if detail:
            extra.append(("driver_detail", detail))
        # EDAC drivers pass 0 when they do not know the address (nobody offlines pfn 0).
        phys_addr = address or None
        return Event(
            "memory_error",
            "mc_event",
            MC_EVENT_SEVERITY[err_type],
            count=_int(row, "err_count", 1) or 1,
            phys_addr=phys_addr,
            pfn=pfn_of(phys_addr) if phys_addr is not None else None,
            time=time,
            mc=_int(row, "mc"),
            label=_text(row, "label"),
            location=":".join(str(n) for n in layers),
            grain=_int(row, "grain"),
            syndrome=_u64(row, "syndrome") if row.get("syndrome") is not None else None,
            msg=_text(row, "err_msg"),
            dram=parse_dram_location(detail) if detail else None,
            extra=tuple(extra),
        )
    except ValueError:
        return None


def mce_record_row(row: Row) -> Event | None:
    """An mce_record row as the `mce:mce_record` event it recorded; None when malformed."""
    time = row_time(row.get("timestamp"))
    if time is None:
        return None
    try:
        cpu = _int(row, "cpu")
        bank = _int(row, "bank")
        if cpu is None or bank is None:
            return None
        extra = _extra("mce_record", row)
        for name in ("mcgstatus", "tsc", "walltime", "socketid", "apicid", "ppin", "microcode"):
            value = _int(row, name)
            if value is not None:
                extra.append((name, f"{value & _U64:#x}" if name != "walltime" else str(value)))
        return mce_record_event(
            time,
            None,
            cpu,
            bank,
            _u64(row, "status"),
            _u64(row, "addr"),
            _u64(row, "misc"),
            0,
            _int(row, "cpuvendor"),
            extra,
        )
    except ValueError:
        return None


def memory_failure_row(row: Row) -> Event | None:
    """A memory_failure_event row; None when malformed."""
    time = row_time(row.get("timestamp"))
    pfn_text = row.get("pfn")
    if time is None or not isinstance(pfn_text, str):
        return None
    try:
        pfn = int(pfn_text, 16)
        result = _text(row, "action_result")
        return Event(
            "memory_failure",
            "memory_failure_event",
            None,
            phys_addr=pfn << 12,
            pfn=pfn,
            time=time,
            page_type=_text(row, "page_type"),
            result=result.lower() if result else None,
            extra=tuple(_extra("memory_failure_event", row)),
        )
    except ValueError:
        return None


ROW_PARSERS = {
    "mc_event": mc_event_row,
    "mce_record": mce_record_row,
    "memory_failure_event": memory_failure_row,
}
