"""APEI/CPER kernel log blocks: assembles "{N}[Hardware Error]: …" lines into memory-error events,
never reads files.

Firmware-first platforms (ARM64 servers, many x86 ones) report memory errors through APEI GHES;
the kernel prints each error status block as lines sharing one "{N}[Hardware Error]: " prefix,
N a sequence number (drivers/acpi/apei/ghes.c __ghes_print_estatus, v4.x–v6.12):

    {N}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: %d
    {N}[Hardware Error]: It has been corrected by h/w and requires no further action
    {N}[Hardware Error]: event severity: %s            (cper_estatus_print, efi/cper.c)
    {N}[Hardware Error]:  Error %d, type: %s           (cper_estatus_print_section, one per section)
    {N}[Hardware Error]:  fru_id: %pUl / fru_text: %.20s
    {N}[Hardware Error]:   section_type: memory error
    {N}[Hardware Error]:   error_status: 0x%016llx     (cper_print_mem)
    {N}[Hardware Error]:   physical_address: 0x%016llx
    {N}[Hardware Error]:   physical_address_mask: 0x%016llx
    {N}[Hardware Error]:   node:%d card:%d module:%d … (cper_mem_err_location; "node: %d "
                                                       with a space before v5.10)
    {N}[Hardware Error]:   error_type: %d, %s
    {N}[Hardware Error]:   DIMM location: %s %s        (cper_dimm_err_location)

Severities (cper_severity_strs): recoverable, fatal, corrected, info. Since v6.1 ghes_edac loads
only on allow-listed platforms, so on the others this block is the only report of the error.
Each memory-error section is one `kmsg_cper` event; when ghes_edac also prints its "EDAC MCn"
line for the same error, the policy counts the two once (`dedupe_seconds`, same pfn).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hwpoisond.core.model import Event, Severity, pfn_of
from hwpoisond.parse.trace import parse_dram_location

_CPER_LINE = re.compile(r"^\{(\d+)\}\[Hardware Error\]: (.*)$")
_START = "Hardware error from APEI Generic Hardware Error Source: "
#: The start line as far as a mail client may wrap it.
_START_HEAD = "Hardware error from APEI"
_SECTION = re.compile(r"^Error (\d+), type: (\w+)")
_HEX_VALUE = re.compile(r"^(0x[0-9a-fA-F]+)$")
_ERROR_TYPE = re.compile(r"^(\d+), (.*)$")
_SEVERITY: dict[str, Severity] = {
    "corrected": "corrected",
    "recoverable": "uncorrected",
    "fatal": "fatal",
    "info": "info",
}


def split_cper_line(message: str) -> tuple[int, str] | None:
    """(sequence number, body without the section indent) of a CPER line, or None."""
    m = _CPER_LINE.match(message)
    if m is None:
        return None
    return int(m[1]), m[2].strip()


@dataclass(slots=True)
class _Section:
    line: int | None
    time: float | None
    severity: str | None
    #: section_type said "memory error" (True) or something else (False); None when the
    #: section's header lines were not seen (a block the reader split): a physical_address
    #: line, printed only by cper_print_mem, then says it is one.
    memory: bool | None = None
    phys_addr: int | None = None
    mask: int | None = None
    status: int | None = None
    location: str | None = None
    error_type: str | None = None
    dimm: str | None = None
    fru_text: str | None = None
    malformed: bool = False


@dataclass(slots=True)
class CperRecord:
    """One error status block being assembled; `events()` gives its memory-error sections."""

    seq: int
    line: int | None
    time: float | None
    source_id: str | None = None
    severity: str | None = None
    sections: list[_Section] = field(default_factory=list)

    def add(self, body: str, line: int | None, time: float | None) -> None:
        """Take one line of the block (`body` as split_cper_line gives it)."""
        m = _SECTION.match(body)
        if m is not None:
            self.sections.append(_Section(line, time, m[2]))
            return
        if body.startswith("event severity: "):
            self.severity = body[len("event severity: ") :].strip()
            return
        section = self.sections[-1] if self.sections else None
        if section is None:
            # Section lines with no "Error N" header (a truncated or wrapped block): they
            # belong to an implicit first section.
            section = _Section(line, time, None)
            self.sections.append(section)
        key, sep, value = body.partition(": ")
        if not sep:
            return
        if key == "section_type":
            section.memory = value.strip() == "memory error"
        elif key in ("physical_address", "physical_address_mask", "error_status"):
            hexed = _HEX_VALUE.match(value.strip())
            if hexed is None:
                section.malformed = True
                return
            number = int(hexed[1], 16)
            if key == "physical_address":
                section.phys_addr = number
                if section.memory is None:
                    section.memory = True
            elif key == "physical_address_mask":
                section.mask = number
            else:
                section.status = number
        elif key == "error_type":
            typed = _ERROR_TYPE.match(value.strip())
            section.error_type = typed[2] if typed is not None else value.strip()
        elif key == "DIMM location":
            section.dimm = value.strip()
        elif key == "fru_text":
            section.fru_text = value.strip()
        elif key in ("node", "card", "module", "rank", "bank", "device", "row", "column"):
            section.location = body

    def events(self) -> tuple[list[Event], int]:
        """(events of the memory-error sections, sections that were malformed)."""
        out: list[Event] = []
        bad = 0
        for s in self.sections:
            if not s.memory:
                continue
            if s.malformed:
                bad += 1
                continue
            severity = _SEVERITY.get(s.severity or self.severity or "")
            # An all-ones mask below the page bits says which address bits are valid: the
            # error's granule (UEFI spec N.2.5; ghes_edac derives its grain the same way).
            grain = None
            if s.mask:
                low = ~s.mask & ((1 << 64) - 1)
                if low & (low + 1) == 0:
                    grain = low + 1
            extra: list[tuple[str, str]] = [("cper_seq", str(self.seq))]
            if self.source_id is not None:
                extra.append(("ghes_source", self.source_id))
            if s.error_type is not None and s.error_type != "unknown":
                msg: str | None = s.error_type
            else:
                msg = None
            label = s.dimm if s.dimm and not s.dimm.startswith("not present") else s.fru_text
            out.append(
                Event(
                    "memory_error",
                    "kmsg_cper",
                    severity,
                    phys_addr=s.phys_addr,
                    pfn=pfn_of(s.phys_addr) if s.phys_addr is not None else None,
                    time=s.time if s.time is not None else self.time,
                    line=s.line,
                    label=label,
                    location=s.location,
                    grain=grain,
                    msg=msg,
                    status=s.status,
                    dram=parse_dram_location(s.location) if s.location else None,
                    extra=tuple(extra),
                )
            )
        return out, bad


def start_record(seq: int, body: str, line: int | None, time: float | None) -> CperRecord:
    """A new block from its first line (normally "Hardware error from APEI …")."""
    record = CperRecord(seq, line, time)
    if body.startswith(_START):
        record.source_id = body[len(_START) :].strip()
    elif not body.startswith(_START_HEAD):
        record.add(body, line, time)
    return record


def is_record_start(body: str) -> bool:
    return body.startswith(_START_HEAD)
