"""MCA bank decoding: decodes register values, never parses text or reads files.

Given the MCi_STATUS/ADDR/MISC (and, on AMD SMCA, IPID) values of one machine-check record, say
whether it is a memory error, how severe it is, and whether its address is a usable physical
address. Bit positions follow the Intel SDM vol. 3B ch. 16 ("Machine-Check Architecture") and
arch/x86/include/asm/mce.h; the usable-address rule follows the kernel's own
`intel_mce_usable_address()` / `amd_mce_usable_address()` (arch/x86/kernel/cpu/mce/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from hwpoisond.core.model import PAGE_SHIFT, Severity
from hwpoisond.parse.build import fast_builder

# MCi_STATUS bits (arch/x86/include/asm/mce.h).
MCI_STATUS_VAL = 1 << 63
MCI_STATUS_OVER = 1 << 62
MCI_STATUS_UC = 1 << 61
MCI_STATUS_EN = 1 << 60
MCI_STATUS_MISCV = 1 << 59
MCI_STATUS_ADDRV = 1 << 58
MCI_STATUS_PCC = 1 << 57
MCI_STATUS_S = 1 << 56
MCI_STATUS_AR = 1 << 55
# AMD only: bit 44 is "Deferred", bit 43 "Poison"; on Intel these bits belong to other fields.
MCI_STATUS_DEFERRED = 1 << 44
MCI_STATUS_POISON = 1 << 43

# MCi_MISC: bits 5:0 = least significant valid address bit, bits 8:6 = address mode.
MCI_MISC_ADDR_PHYS = 2

# struct mce.cpuvendor values (arch/x86/include/asm/processor.h X86_VENDOR_*).
X86_VENDOR_INTEL = 0
X86_VENDOR_AMD = 2
X86_VENDOR_HYGON = 9

# AMD SMCA: MCA_IPID[43:32] is the hardware id, MCA_IPID[63:48] the MCA type; the unified memory
# controller is hwid 0x96 with type 0 (UMC) or 2 (UMC v2) (arch/x86/kernel/cpu/mce/amd.c
# smca_hwid_mcatypes).
SMCA_HWID_UMC = 0x96
SMCA_UMC_MCATYPES = frozenset({0x0, 0x2})


@dataclass(frozen=True, slots=True)
class McaDecode:
    """What one MCA bank record means for memory: memory error or not, severity, usable address."""

    memory_error: bool
    severity: Severity
    phys_addr: int | None


_McaDecode = cast("type[McaDecode]", fast_builder(McaDecode))


def is_amd(vendor: int | None, ipid: int) -> bool:
    """AMD-family semantics apply: vendor says AMD/Hygon, or (vendor unknown) an IPID is present,
    which only SMCA processors report."""
    if vendor is None:
        return ipid != 0
    return vendor in (X86_VENDOR_AMD, X86_VENDOR_HYGON)


def is_memory_controller_code(status: int) -> bool:
    """Intel compound MCA error code `0000 0000 1MMM CCCC` (bit 12, the correction-report filter
    bit, ignored): a memory controller error (SDM table 16-9; drivers/edac/skx_common.c uses the
    same mask)."""
    return (status & 0xEF80) == 0x0080


def is_smca_umc(ipid: int) -> bool:
    """The bank is an AMD SMCA unified memory controller, by the IPID hardware id and MCA type."""
    hwid = (ipid >> 32) & 0xFFF
    mcatype = (ipid >> 48) & 0xFFFF
    return hwid == SMCA_HWID_UMC and mcatype in SMCA_UMC_MCATYPES


def mca_severity(status: int, amd: bool) -> Severity:
    """Corrected unless UC; a UC error with PCC set means the processor context is corrupt (the
    kernel panics: fatal). AMD's Deferred bit marks an uncorrected error the hardware deferred."""
    if status & MCI_STATUS_UC:
        if status & MCI_STATUS_PCC:
            return "fatal"
        return "uncorrected"
    if amd and status & MCI_STATUS_DEFERRED:
        return "deferred"
    return "corrected"


def usable_phys_addr(status: int, addr: int, misc: int, amd: bool, umc: bool) -> int | None:
    """The physical address of the error, or None when the record does not give a usable one.

    Intel (intel_mce_usable_address): ADDRV and MISCV set, MISC says physical address mode and
    the least significant valid bit is at most PAGE_SHIFT; the bits below it are not valid, so
    they are cleared. AMD SMCA UMC banks report a normalized DRAM address, not a system physical
    address (the kernel's amd64_edac translates it and reports it through EDAC), so they yield
    none here; other AMD banks give one only for poisoned data (amd_mce_usable_address).
    """
    if not status & MCI_STATUS_ADDRV:
        return None
    if amd:
        if umc or not status & MCI_STATUS_POISON:
            return None
        return addr
    if not status & MCI_STATUS_MISCV:
        return None
    lsb = misc & 0x3F
    mode = (misc >> 6) & 0x7
    if mode != MCI_MISC_ADDR_PHYS or lsb > PAGE_SHIFT:
        return None
    return addr & ~((1 << lsb) - 1)


def decode_mca(
    status: int, addr: int, misc: int, ipid: int = 0, vendor: int | None = None
) -> McaDecode:
    """Decode one bank record. `vendor` is struct mce.cpuvendor when the text carried it."""
    amd = is_amd(vendor, ipid)
    umc = amd and is_smca_umc(ipid)
    memory_error = umc if amd else is_memory_controller_code(status)
    return _McaDecode(
        memory_error=memory_error,
        severity=mca_severity(status, amd),
        phys_addr=usable_phys_addr(status, addr, misc, amd, umc),
    )
