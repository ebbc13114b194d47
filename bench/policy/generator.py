"""Seeded fleet generator: simulated faulty hosts as real kernel trace text plus hidden truth.

Rule: output is a pure function of (seed, host index, parameters) — the same seed gives the same
bytes on any machine. The text is exactly what a 6.1 kernel writes to tracefs (and, on CEC
hosts, to the kernel log); the truth goes to a side file that only the scorer reads.

Formats, checked against the format strings inside Debian's linux-image-6.1.0-56-amd64
(6.1.192) vmlinux and skx_edac_common.ko:
- `ras:mc_event`: include/ras/ras_event.h TP_printk "%d %s error%s:%s%s on %s (mc:%d
  location:%d:%d:%d address:0x%08lx grain:%d syndrome:0x%08lx%s%s)", with the driver detail of
  drivers/edac/skx_common.c skx_mce_output_error() "%s%s err_code:0x%04x:0x%04x
  ProcessorSocketId:0x%x MemoryControllerId:0x%x PhysicalRankId:0x%x Row:0x%x Column:0x%x
  Bank:0x%x BankGroup:0x%x" and its DIMM label "CPU_SrcID#%u_MC#%u_Chan#%u_DIMM#%u".
- `mce:mce_record`: include/trace/events/mce.h, the IPID/SYND generation (4.x-6.9) "CPU: %d,
  MCGc/s: %llx/%llx, MC%d: %016Lx, IPID: %016Lx, ADDR/MISC/SYND: %016Lx/%016Lx/%016Lx, RIP:
  %02x:<%016Lx>, TSC: %llx, PROCESSOR: %u:%x, TIME: %llu, SOCKET: %u, APIC: %x".
- CEC: drivers/ras/cec.c cec_add_elem() pr_err("Soft-offlining pfn: 0x%llx\\n") under the
  "RAS: " prefix, in dmesg form "[%5lu.%06lu] ".
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.policy import model
from bench.policy.model import DramAddress, FaultMode
from bench.policy.truth import HostTruth, TruthCE, TruthFault, TruthUE

_CHANNEL_MODE = "channel"
#: Wall-clock second of the simulated boot (for mce_record's TIME field): 2024-01-01 UTC.
_BOOT_EPOCH = 1_704_067_200
_TSC_HZ = 2_100_000_000
#: IA32_MCG_CAP: 22 banks, CMCI_P (10), TES_P (11), SER_P (24).
_MCG_CAP = 0x1000C16
_CPUID = 0x606A6  # Ice Lake-SP
_CPUS_PER_SOCKET = 32


@dataclass(frozen=True, slots=True)
class SuiteParams:
    hosts: int = 200
    seed: int = 1
    days: float = 90.0
    #: Share of hosts whose kernel runs the RAS CEC (CONFIG_RAS_CEC): those log mce_record only
    #: and the kernel soft-offlines a pfn on its second CE itself.
    cec_fraction: float = 0.0
    #: Write the mce_record line of every CE on EDAC hosts too, as a real trace has (the
    #: tracepoint fires in mce_log() for every machine check; skx_edac then emits mc_event).
    #: mcelog- and CEC-like presets count only mce_record, rasdaemon only mc_event; off gives an
    #: EDAC-only trace.
    all_mce_records: bool = True


@dataclass(frozen=True, slots=True)
class _Error:
    at: float
    addr: DramAddress
    fault: int
    uncorrected: bool
    scrub: bool


@dataclass(frozen=True, slots=True)
class HostTrace:
    lines: tuple[str, ...]
    truth: HostTruth


def _pick_mode(rng: random.Random) -> tuple[str, bool, FaultMode | None]:
    """A fault mode weighted by Sridharan & Liberty's FIT, plus the channel-fault share."""
    if rng.random() < model.CHANNEL_FAULT_SHARE:
        return _CHANNEL_MODE, True, None
    weights = [m.fit_transient + m.fit_permanent for m in model.FAULT_MODES]
    mode = rng.choices(model.FAULT_MODES, weights=weights)[0]
    permanent = rng.random() < mode.fit_permanent / (mode.fit_transient + mode.fit_permanent)
    return mode.name, permanent, mode


def _random_address(rng: random.Random) -> DramAddress:
    return DramAddress(
        socket=rng.randrange(model.SOCKETS),
        imc=rng.randrange(model.IMCS_PER_SOCKET),
        channel=rng.randrange(model.CHANNELS_PER_IMC),
        rank=rng.randrange(model.RANKS_PER_DIMM),
        bank_group=rng.randrange(model.BANK_GROUPS),
        bank=rng.randrange(model.BANKS_PER_GROUP),
        row=rng.randrange(1 << model.ROW_BITS),
        column=rng.randrange(1 << model.COLUMN_BITS),
    )


def _spreader(
    mode: str, origin: DramAddress, rng: random.Random, controller: bool
) -> Callable[[], DramAddress]:
    """Where each error of a fault lands: the fault's footprint in DRAM coordinates."""
    rows = 1 << model.ROW_BITS
    cols = 1 << model.COLUMN_BITS

    def pick() -> DramAddress:
        o = origin
        if mode in ("single-bit", "single-word"):
            return o
        if mode == "single-row":
            return DramAddress(
                o.socket, o.imc, o.channel, o.rank, o.bank_group, o.bank, o.row, rng.randrange(cols)
            )
        if mode == "single-column":
            return DramAddress(
                o.socket,
                o.imc,
                o.channel,
                o.rank,
                o.bank_group,
                o.bank,
                rng.randrange(rows),
                o.column,
            )
        if mode == "single-bank":
            return DramAddress(
                o.socket,
                o.imc,
                o.channel,
                o.rank,
                o.bank_group,
                o.bank,
                rng.randrange(rows),
                rng.randrange(cols),
            )
        if mode == "multi-bank":
            return DramAddress(
                o.socket,
                o.imc,
                o.channel,
                o.rank,
                rng.randrange(model.BANK_GROUPS),
                rng.randrange(model.BANKS_PER_GROUP),
                rng.randrange(rows),
                rng.randrange(cols),
            )
        # multi-rank and channel faults: anywhere on the DIMM; a controller fault anywhere on
        # either channel of its IMC.
        channel = rng.randrange(model.CHANNELS_PER_IMC) if controller else o.channel
        return DramAddress(
            o.socket,
            o.imc,
            channel,
            rng.randrange(model.RANKS_PER_DIMM),
            rng.randrange(model.BANK_GROUPS),
            rng.randrange(model.BANKS_PER_GROUP),
            rng.randrange(rows),
            rng.randrange(cols),
        )

    return pick


def _lead_seconds(rng: random.Random) -> float | None:
    """First CE -> UE lead time on Alibaba's curve; None: the UE is the first symptom."""
    u = rng.random()
    if u < model.LEAD_NO_CE:
        return None
    u -= model.LEAD_NO_CE
    if u < model.LEAD_UNDER_HOUR:
        lo, hi = model.LEAD_MIN_SECONDS, 3600.0
    elif u < model.LEAD_UNDER_HOUR + model.LEAD_HOUR_TO_DAY:
        lo, hi = 3600.0, 86400.0
    else:
        lo, hi = 86400.0, model.LEAD_MAX_SECONDS
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _error_count(rng: random.Random, median: float) -> int:
    n = round(rng.lognormvariate(math.log(median), model.INTENSITY_SIGMA))
    return max(1, min(model.MAX_ERRORS_PER_FAULT, n))


def _fault_errors(
    rng: random.Random, fault_id: int, horizon: float
) -> tuple[TruthFault, list[_Error]]:
    mode_name, permanent, mode = _pick_mode(rng)
    origin = _random_address(rng)
    controller = mode is None and rng.random() < model.CONTROLLER_SPAN_SHARE
    if mode is None:
        n = _error_count(rng, model.CHANNEL_MEDIAN_ERRORS)
        p_ue = model.CHANNEL_P_UE
        rate = rng.lognormvariate(
            math.log(model.CHANNEL_STORM_MEDIAN_PER_SECOND), model.CHANNEL_STORM_SIGMA
        )
        span = n / rate
    elif permanent:
        n = _error_count(rng, mode.median_errors_permanent)
        p_ue = mode.p_ue_permanent
        span = math.inf  # until the end of the horizon
    else:
        n = _error_count(rng, mode.median_errors_transient)
        p_ue = mode.p_ue_transient
        span = rng.lognormvariate(
            math.log(model.TRANSIENT_BURST_MEDIAN_SECONDS), model.TRANSIENT_BURST_SIGMA
        )
    has_ue = rng.random() < p_ue
    lead = _lead_seconds(rng) if has_ue else None
    # The fault starts uniformly in the horizon, but a UE must still fit inside it.
    latest_onset = horizon - (lead or 0.0) - 1.0
    onset = rng.uniform(0.0, max(0.0, latest_onset))
    end = min(horizon, onset + span)
    pick = _spreader(mode_name, origin, rng, controller)
    # The first error marks the fault's onset; the rest fall uniformly in its active span —
    # except that a fault growing towards a UE logs a share of its errors between its first CE
    # and the UE (fault growth, ASSUMED share).
    ue_at = None if not has_ue else (onset - 1e-3 if lead is None else onset + lead)
    n_before = 0
    if ue_at is not None and ue_at > onset:
        n_before = round((n - 1) * model.GROWTH_SHARE_BEFORE_UE)
    later = [rng.uniform(onset, ue_at) for _ in range(n_before)] if ue_at is not None else []
    later += [
        rng.uniform(onset if ue_at is None else max(onset, ue_at), max(end, onset))
        for _ in range(n - 1 - n_before)
    ]
    times = [onset, *sorted(later)]
    scrub_share = 0.3  # patrol-scrub finds vs demand reads (ASSUMED)
    errors = [_Error(t, pick(), fault_id, False, rng.random() < scrub_share) for t in times]
    if ue_at is not None:
        errors.append(_Error(ue_at, pick(), fault_id, True, False))
    pfns = {model.phys_addr_of(e.addr) >> 12 for e in errors if not e.uncorrected}
    dimms = sorted({(e.addr.label, e.addr.edac_mc) for e in errors})
    truth = TruthFault(
        id=fault_id,
        mode=mode_name,
        permanent=permanent,
        wide=mode is None or mode.wide,
        labels=tuple(label for label, _ in dimms),
        mcs=tuple(sorted({mc for _, mc in dimms})),
        first_error_at=min(e.at for e in errors),
        errors=n,
        pages=len(pfns),
    )
    return truth, errors


def _trace_prefix(comm: str, pid: int, cpu: int, flags: str, at: float) -> str:
    # kernel/trace/trace_output.c: "%16s-%-7d [%03d] <flags> %5lu.%06lu: "
    return f"{comm:>16}-{pid:<7d} [{cpu:03d}] {flags} {at:12.6f}: "


def _mc_event_line(e: _Error, at: float, cpu: int) -> str:
    a = e.addr
    phys = model.phys_addr_of(a)
    # Intel compound error code 0000 0000 1MMM CCCC: MMM 001 read / 100 scrub, CCCC channel.
    mmm = 0b100 if e.scrub else 0b001
    errcode = 0x80 | (mmm << 4) | a.channel
    optype = "memory scrubbing error" if e.scrub else "memory read error"
    kind = "Uncorrected" if e.uncorrected else "Corrected"
    # skx_msg starts with "%s%s" (OVERFLOW, recoverable); TP_printk adds one more space.
    flags = " recoverable" if e.uncorrected else ""
    detail = (
        f"{flags} err_code:0x0000:0x{errcode:04x} ProcessorSocketId:0x{a.socket:x} "
        f"MemoryControllerId:0x{a.imc:x} PhysicalRankId:0x{a.rank:x} Row:0x{a.row:x} "
        f"Column:0x{a.column:x} Bank:0x{a.bank:x} BankGroup:0x{a.bank_group:x}"
    )
    text = (
        f"1 {kind} error: {optype} on {a.label} (mc:{a.edac_mc} location:{a.channel}:0:-1 "
        f"address:0x{phys:08x} grain:32 syndrome:0x00000000 {detail})"
    )
    # skx_mce_check_error runs from the MCE notifier chain, i.e. in a kworker.
    return _trace_prefix(f"kworker/{cpu}:1", 200 + cpu, cpu, ".....", at) + "mc_event: " + text


def _mce_record_line(e: _Error, at: float, cpu: int) -> str:
    a = e.addr
    phys = model.phys_addr_of(a)
    mmm = 0b100 if e.scrub else 0b001
    errcode = 0x80 | (mmm << 4) | a.channel
    # IA32_MCi_STATUS: VAL(63) MISCV(59) ADDRV(58), corrected count 1 at bits 38-52; a UE adds
    # UC(61) EN(60) S(56) AR(55) (SRAR: data load consumed poison).
    status = (1 << 63) | (1 << 59) | (1 << 58) | (1 << 38) | errcode
    mcg_status = 0
    cs, ip, comm, pid, flags = 0, 0, "<idle>", 0, "d.h1."
    if e.uncorrected:
        status |= (1 << 61) | (1 << 60) | (1 << 56) | (1 << 55)
        mcg_status = 0x5  # RIPV | MCIP
        cs, ip, comm, pid, flags = 0x33, 0x7F3A_1C2B_4D10, "java", 4242, "d...."
    # IA32_MCi_MISC: address mode 2 (physical) in bits 8:6, LSB 6 (a cache line) in bits 5:0.
    misc = (2 << 6) | 6
    bank = 13 + a.imc * model.CHANNELS_PER_IMC + a.channel
    tsc = int(at * _TSC_HZ)
    text = (
        f"CPU: {cpu}, MCGc/s: {_MCG_CAP:x}/{mcg_status:x}, MC{bank}: {status:016x}, "
        f"IPID: {0:016x}, ADDR/MISC/SYND: {phys:016x}/{misc:016x}/{0:016x}, "
        f"RIP: {cs:02x}:<{ip:016x}>, TSC: {tsc:x}, PROCESSOR: 0:{_CPUID:x}, "
        f"TIME: {_BOOT_EPOCH + int(at)}, SOCKET: {a.socket}, APIC: {cpu * 2:x}"
    )
    return _trace_prefix(comm, pid, cpu, flags, at) + "mce_record: " + text


def _cec_line(at: float, pfn: int) -> str:
    return f"[{at:12.6f}] RAS: Soft-offlining pfn: 0x{pfn:x}"


def generate_host(params: SuiteParams, host: int) -> HostTrace:
    """One simulated faulty host: its trace lines (time order) and the truth behind them."""
    rng = random.Random(f"hwpoisond-bench-policy:{params.seed}:{host}")
    horizon = params.days * 86400.0
    # Trace timestamps are seconds since boot; the simulation starts some time after boot.
    boot_offset = round(rng.uniform(600.0, 86400.0), 6)
    cec = rng.random() < params.cec_fraction
    n_faults = 1
    # Poisson(EXTRA_FAULTS_MEAN) by inversion: few draws, and stable across Python versions.
    p, u = math.exp(-model.EXTRA_FAULTS_MEAN), rng.random()
    cum, k = p, 0
    while u > cum:
        k += 1
        p *= model.EXTRA_FAULTS_MEAN / k
        cum += p
    n_faults += k
    faults: list[TruthFault] = []
    errors: list[_Error] = []
    for fid in range(n_faults):
        fault, errs = _fault_errors(rng, fid, horizon)
        faults.append(fault)
        errors.extend(errs)
    errors.sort(key=lambda e: (e.at, e.fault))

    lines: list[str] = []
    ces: list[TruthCE] = []
    ues: list[TruthUE] = []
    cec_offlines: list[tuple[float, int]] = []
    cec_counts: OrderedDict[int, int] = OrderedDict()
    cec_poisoned: set[int] = set()
    last_at = 0.0
    for e in errors:
        # Strictly increasing timestamps: the trace clock has microseconds.
        at = max(round(boot_offset + max(e.at, 0.0), 6), round(last_at + 1e-6, 6))
        last_at = at
        pfn = model.phys_addr_of(e.addr) >> 12
        cpu = e.addr.socket * _CPUS_PER_SOCKET + rng.randrange(_CPUS_PER_SOCKET)
        if e.uncorrected:
            ues.append(TruthUE(at, pfn, e.fault, e.addr.label, e.addr.edac_mc, pfn in cec_poisoned))
            if pfn in cec_poisoned:
                continue  # the page is offline: nothing touches it, nothing is logged
            lines.append(_mce_record_line(e, at, cpu))
            lines.append(_mc_event_line(e, at, cpu))
            continue
        if pfn in cec_poisoned:
            continue  # the kernel retired this page; its faulty cells are no longer read
        ces.append(TruthCE(at, pfn, e.fault))
        if cec:
            # drivers/ras/cec.c consumes the CE (MCE_HANDLED_CEC), so skx_edac never reports
            # it: only the tracepoint in mce_log() and, at the threshold, the kmsg line remain.
            lines.append(_mce_record_line(e, at, cpu))
            count = cec_counts.pop(pfn, 0) + 1
            if count >= model.CEC_THRESHOLD:
                lines.append(_cec_line(at, pfn))
                cec_offlines.append((at, pfn))
                cec_poisoned.add(pfn)
            else:
                cec_counts[pfn] = count
                if len(cec_counts) > model.CEC_ENTRIES:
                    cec_counts.popitem(last=False)
            continue
        if params.all_mce_records:
            lines.append(_mce_record_line(e, at, cpu))
        lines.append(_mc_event_line(e, at, cpu))

    truth = HostTruth(
        host=host,
        seed=params.seed,
        start_at=boot_offset,
        end_at=round(boot_offset + horizon, 6),
        cec=cec,
        faults=tuple(faults),
        ces=tuple(ces),
        ues=tuple(ues),
        cec_offlines=tuple(cec_offlines),
    )
    return HostTrace(lines=tuple(lines), truth=truth)


def trace_path(out_dir: Path, host: int) -> Path:
    return out_dir / f"host-{host:04d}.trace"


def truth_path(out_dir: Path, host: int) -> Path:
    return out_dir / f"host-{host:04d}.truth.json"


def write_suite(params: SuiteParams, out_dir: Path) -> list[Path]:
    """Write one trace file and one truth file per host; returns the trace paths in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for host in range(params.hosts):
        trace = generate_host(params, host)
        path = trace_path(out_dir, host)
        path.write_text("".join(line + "\n" for line in trace.lines), encoding="ascii")
        trace.truth.write(truth_path(out_dir, host))
        paths.append(path)
    return paths
