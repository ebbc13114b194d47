"""The fault model behind the policy benchmark: numbers and their sources, no I/O.

Rule: every modelling constant lives here with the study it comes from (or the word ASSUMED);
BENCHMARKS_POLICY.md repeats them in a table. The synthetic machine and its address map are
also here, so the generator and the tests agree on what a "row" or a "page" is.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- The synthetic host --------------------------------------------------------------------
# An Ice Lake-SP-like two-socket server: 4 integrated memory controllers (IMCs) per socket, 2
# channels each, one dual-rank 32 GiB DDR4 RDIMM per channel: 16 DIMMs, 512 GiB. ASSUMED layout;
# Intel's i10nm EDAC driver (drivers/edac/i10nm_base.c + skx_common.c) reports this shape.
SOCKETS = 2
IMCS_PER_SOCKET = 4
CHANNELS_PER_IMC = 2
RANKS_PER_DIMM = 2
BANK_GROUPS = 4
BANKS_PER_GROUP = 4
ROW_BITS = 17  # 131072 rows per bank
COLUMN_BITS = 10  # 1024 column addresses x 8 bytes (64-bit bus) = 8 KiB DRAM page per rank
CHANNEL_INTERLEAVE_BYTES = 256
CHANNELS_PER_SOCKET = IMCS_PER_SOCKET * CHANNELS_PER_IMC
DIMMS_PER_HOST = SOCKETS * CHANNELS_PER_SOCKET
CHANNEL_BYTES = 1 << (3 + COLUMN_BITS + 2 + 2 + 1 + ROW_BITS)  # 32 GiB per channel/DIMM
SOCKET_BYTES = CHANNEL_BYTES * CHANNELS_PER_SOCKET  # 256 GiB
#: Physical memory starts at 4 GiB: the 32-bit PCI hole below it is not modelled.
PHYS_BASE = 1 << 32
HOST_RAM_BYTES = SOCKET_BYTES * SOCKETS


@dataclass(frozen=True, slots=True)
class DramAddress:
    """One 8-byte column access on one rank of one DIMM."""

    socket: int
    imc: int
    channel: int
    rank: int
    bank_group: int
    bank: int
    row: int
    column: int

    @property
    def dimm_index(self) -> int:
        return (self.socket * IMCS_PER_SOCKET + self.imc) * CHANNELS_PER_IMC + self.channel

    @property
    def edac_mc(self) -> int:
        """EDAC memory-controller index: skx_common registers one mci per IMC, in order."""
        return self.socket * IMCS_PER_SOCKET + self.imc

    @property
    def label(self) -> str:
        """The DIMM label skx_common.c gives ("CPU_SrcID#%u_MC#%u_Chan#%u_DIMM#%u")."""
        return f"CPU_SrcID#{self.socket}_MC#{self.imc}_Chan#{self.channel}_DIMM#0"


def phys_addr_of(a: DramAddress) -> int:
    """Synthetic address map: channel-local address first, then 8-way channel interleave.

    Channel-local bits, low to high: byte-in-burst (3), column (10), bank (2), bank group (2),
    rank (1), row (17) — so one DRAM row is 8 KiB contiguous in the channel. Each socket
    interleaves its 8 channels every 256 bytes, which spreads that 8 KiB over 64 KiB of physical
    address space: 16 pages of 4 KiB per row, as the issue's "~16 pages" asks.
    """
    local = a.column << 3
    local |= a.bank << 13
    local |= a.bank_group << 15
    local |= a.rank << 17
    local |= a.row << 18
    chan_idx = a.imc * CHANNELS_PER_IMC + a.channel
    chunk, offset = divmod(local, CHANNEL_INTERLEAVE_BYTES)
    socket_local = (chunk * CHANNELS_PER_SOCKET + chan_idx) * CHANNEL_INTERLEAVE_BYTES + offset
    return PHYS_BASE + a.socket * SOCKET_BYTES + socket_local


def dram_address_of(phys_addr: int) -> DramAddress:
    """The inverse of `phys_addr_of` (used by the tests to prove the map is a bijection)."""
    rel = phys_addr - PHYS_BASE
    socket, socket_local = divmod(rel, SOCKET_BYTES)
    chunk_all, offset = divmod(socket_local, CHANNEL_INTERLEAVE_BYTES)
    chunk, chan_idx = divmod(chunk_all, CHANNELS_PER_SOCKET)
    local = chunk * CHANNEL_INTERLEAVE_BYTES + offset
    imc, channel = divmod(chan_idx, CHANNELS_PER_IMC)
    return DramAddress(
        socket=socket,
        imc=imc,
        channel=channel,
        rank=(local >> 17) & 1,
        bank_group=(local >> 15) & 3,
        bank=(local >> 13) & 3,
        row=local >> 18,
        column=(local >> 3) & ((1 << COLUMN_BITS) - 1),
    )


# --- Fault modes ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultMode:
    """One fault mode: its field rate and how the generator spreads and sizes its errors.

    `fit_transient`/`fit_permanent`: failures in time (per 10^9 device-hours) per DRAM device,
    Sridharan & Liberty, "A Study of DRAM Failures in the Field", SC'12 (Jaguar), Table of
    fault rates by mode (as widely cited; see BENCHMARKS_POLICY.md). `median_errors_*`: median
    corrected errors one fault logs over the horizon (ASSUMED; the lognormal sigma is from the
    issue). `p_ue_*`: chance the fault causes an uncorrected error within the horizon (ASSUMED,
    chosen UE-rich so a 200-host suite has enough UEs to compare policies). `wide`: the fault
    spans more than one DRAM row, so page retirement cannot contain it and the right response
    is to replace hardware.
    """

    name: str
    fit_transient: float
    fit_permanent: float
    median_errors_transient: float
    median_errors_permanent: float
    p_ue_transient: float
    p_ue_permanent: float
    wide: bool


FAULT_MODES: tuple[FaultMode, ...] = (
    FaultMode("single-bit", 14.2, 18.6, 1.0, 4.0, 0.01, 0.08, wide=False),
    FaultMode("single-word", 1.4, 0.3, 1.0, 4.0, 0.01, 0.15, wide=False),
    FaultMode("single-column", 1.4, 5.6, 1.0, 10.0, 0.01, 0.25, wide=True),
    FaultMode("single-row", 0.2, 8.2, 1.0, 10.0, 0.01, 0.25, wide=False),
    FaultMode("single-bank", 0.8, 10.0, 1.0, 20.0, 0.01, 0.30, wide=True),
    FaultMode("multi-bank", 0.3, 1.4, 1.0, 40.0, 0.01, 0.40, wide=True),
    FaultMode("multi-rank", 0.9, 2.8, 1.0, 40.0, 0.01, 0.40, wide=True),
)

#: Channel / memory-controller faults (Meza et al., "Revisiting Memory Errors in Large-Scale
#: Production Data Centers", DSN 2015: socket and channel faults are rare but cause the majority
#: of errors). Not a per-device FIT in Sridharan's table; their share of faults is ASSUMED (4%)
#: and their intensity set so they carry most corrected errors, as Meza reports.
CHANNEL_FAULT_SHARE = 0.04
CHANNEL_MEDIAN_ERRORS = 8000.0
CHANNEL_P_UE = 0.5
#: Half of them span both channels of a controller (a controller fault), ASSUMED.
CONTROLLER_SPAN_SHARE = 0.5
#: Storm rate of a channel fault, corrected errors per second: lognormal median 5/s, sigma 1
#: (ASSUMED; the issue cites a node logging ~500 CE/s at the extreme).
CHANNEL_STORM_MEDIAN_PER_SECOND = 5.0
CHANNEL_STORM_SIGMA = 1.0

#: Per-fault intensity spread: lognormal sigma. exp(sigma^2 / 2) = mean/median = 55 (the issue:
#: mean/median ~= 55 errors per machine; top 20% of DIMMs hold >94% of errors). sqrt(2 ln 55).
INTENSITY_SIGMA = 2.831
#: Cap on errors per fault (ASSUMED: keeps a 200-host suite replayable in minutes; a capped
#: storm still far exceeds every storm threshold).
MAX_ERRORS_PER_FAULT = 50_000

#: Transient faults log their errors within a burst: lognormal median 10 minutes, sigma 1.5.
TRANSIENT_BURST_MEDIAN_SECONDS = 600.0
TRANSIENT_BURST_SIGMA = 1.5

#: Extra faults on a faulty host beyond the first: Poisson mean (ASSUMED).
EXTRA_FAULTS_MEAN = 0.3

# --- UE lead time --------------------------------------------------------------------------
# Alibaba's 2022 field study of UE-driven server failures (numbers as the issue states them; the
# paper text was not available here): at least one CE preceded 96.5% of UE-driven failures, at
# least one hour 63%, at least one day 33.5%. Bins of the lead time (first CE of the fault ->
# UE), with the within-bin spread log-uniform (ASSUMED).
LEAD_NO_CE = 0.035
LEAD_UNDER_HOUR = 0.965 - 0.63  # 0.335: >= 1 CE, < 1 h
LEAD_HOUR_TO_DAY = 0.63 - 0.335  # 0.295
LEAD_OVER_DAY = 0.335
LEAD_MIN_SECONDS = 10.0
#: Fault growth: a UE-bound fault logs this share of its later CEs between its first CE and the
#: UE, the rest after it (ASSUMED; without it nearly every UE would follow a single CE, since a
#: permanent fault's CEs otherwise spread over the whole horizon).
GROWTH_SHARE_BEFORE_UE = 0.5
LEAD_MAX_SECONDS = 30 * 86400.0

# --- Kernel CEC (drivers/ras/cec.c) --------------------------------------------------------
#: Intel threshold per DESIGN.md; the array holds 512 pfns with LRU eviction.
CEC_THRESHOLD = 2
CEC_ENTRIES = 512
