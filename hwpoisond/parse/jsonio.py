"""Event ⇄ JSON object: converts, never reads or writes files.

`event_to_json` is the `hwpoisond parse` output contract (DESIGN.md): `line`, `time`, `kind`,
`source`, `severity`, `count`, `phys_addr`, `pfn` are always present (null when unknown); `mc`,
`label`, `location`, `grain`, `syndrome`, `msg`, `page_type`, `result`, `bank`, `status`, `cpu`,
`dram` (object) and `extra` (object of strings) only when known; `status` and `syndrome` are
"0x…" strings (64-bit registers). `event_from_json` reads that
back (and accepts `at` for `time`, as hand-written replay input uses), returning None for an
object that is not a valid event.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, get_args

from hwpoisond.core.model import (
    DramLocation,
    Event,
    EventKind,
    EventSource,
    Severity,
    pfn_of,
)

_KINDS: frozenset[str] = frozenset(get_args(EventKind))
_SOURCES: frozenset[str] = frozenset(get_args(EventSource))
_SEVERITIES: frozenset[str] = frozenset(get_args(Severity))
_OPTIONAL_INTS = ("mc", "grain", "syndrome", "bank", "status", "cpu")
_OPTIONAL_STRS = ("label", "location", "msg", "page_type", "result")
#: 64-bit hardware registers: "0x…" strings in JSON (DESIGN.md), because a JSON number above
#: 2^53 is rounded by common tools (jq 1.6 reads numbers as doubles). The other registers of a
#: machine check (addr, misc, ipid, synd…) are already "0x…" strings under `extra`.
REGISTER_FIELDS = frozenset({"status", "syndrome"})
_DRAM_FIELDS = tuple(f.name for f in fields(DramLocation))


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON object `hwpoisond parse` prints for `event`."""
    obj: dict[str, Any] = {
        "line": event.line,
        "time": event.time,
        "kind": event.kind,
        "source": event.source,
        "severity": event.severity,
        "count": event.count,
        "phys_addr": event.phys_addr,
        "pfn": event.pfn,
    }
    for name in (*_OPTIONAL_INTS, *_OPTIONAL_STRS):
        value = getattr(event, name)
        if value is not None:
            obj[name] = f"{value:#x}" if name in REGISTER_FIELDS else value
    if event.dram is not None:
        obj["dram"] = {
            name: getattr(event.dram, name)
            for name in _DRAM_FIELDS
            if getattr(event.dram, name) is not None
        }
    if event.extra:
        obj["extra"] = dict(event.extra)
    return obj


def _opt_int(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(name)
    return value


def _opt_register(obj: dict[str, Any], name: str) -> int | None:
    """A register as `event_to_json` writes it ("0x…"), or as a plain integer."""
    value = obj.get(name)
    if isinstance(value, str):
        if not value.lstrip("-").startswith(("0x", "0X")):
            raise ValueError(name)
        return int(value, 16)
    return _opt_int(obj, name)


def _opt_str(obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(name)
    return value


def _opt_time(obj: dict[str, Any]) -> float | None:
    value = obj.get("time", obj.get("at"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("time")
    return float(value)


def event_from_json(obj: dict[str, Any], line: int | None = None) -> Event | None:
    """The Event an object describes, or None when it is not one (wrong kind/source/types).
    `line`, when given, replaces the object's own `line` (the input line it was read from)."""
    kind = obj.get("kind")
    source = obj.get("source")
    severity = obj.get("severity")
    if kind not in _KINDS or source not in _SOURCES:
        return None
    if severity is not None and severity not in _SEVERITIES:
        return None
    try:
        count = _opt_int(obj, "count")
        phys_addr = _opt_int(obj, "phys_addr")
        pfn = _opt_int(obj, "pfn")
        if pfn is None and phys_addr is not None:
            pfn = pfn_of(phys_addr)
        dram_obj = obj.get("dram")
        dram: DramLocation | None = None
        if dram_obj is not None:
            if not isinstance(dram_obj, dict):
                return None
            dram = DramLocation(**{name: _opt_int(dram_obj, name) for name in _DRAM_FIELDS})
        extra_obj = obj.get("extra") or {}
        if not isinstance(extra_obj, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra_obj.items()
        ):
            return None
        if line is None:
            line = _opt_int(obj, "line")
        return Event(
            kind=kind,
            source=source,
            severity=severity,
            count=1 if count is None else count,
            phys_addr=phys_addr,
            pfn=pfn,
            time=_opt_time(obj),
            line=line,
            mc=_opt_int(obj, "mc"),
            label=_opt_str(obj, "label"),
            location=_opt_str(obj, "location"),
            grain=_opt_int(obj, "grain"),
            syndrome=_opt_register(obj, "syndrome"),
            msg=_opt_str(obj, "msg"),
            page_type=_opt_str(obj, "page_type"),
            result=_opt_str(obj, "result"),
            bank=_opt_int(obj, "bank"),
            status=_opt_register(obj, "status"),
            cpu=_opt_int(obj, "cpu"),
            dram=dram,
            extra=tuple(extra_obj.items()),
        )
    except ValueError:
        return None
