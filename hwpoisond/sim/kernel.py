"""A simulated server kernel: a fake root that behaves like Linux where hwpoisond depends on it.

Rule: simulation only, never the live machine. `SimMachine` lays out a server-shaped tree under
its own directory (2 memory controllers × 2 channels × 2 DIMMs, EDAC sysfs, meminfo, kpageflags,
tracefs with a FIFO trace_pipe) and plays the kernel's part: it emits trace lines, counts errors
in EDAC, poisons pages; `SimKernelFS` is the kernel filesystem object the daemon uses with it, whose
writes to `soft_offline_page` act like the kernel's store function. Kernel behaviour copied here is
cited where it matters; text formats are the kernel's own (see each formatter).
"""

from __future__ import annotations

import errno
import os
import random
import select
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hwpoisond.core.model import PAGE_SHIFT
from hwpoisond.kernelfs import KernelFS, KernelFSError

TRACING = "sys/kernel/tracing"
INSTANCE = f"{TRACING}/instances/hwpoisond"
SOFT_OFFLINE = "sys/devices/system/memory/soft_offline_page"
HARD_OFFLINE = "sys/devices/system/memory/hard_offline_page"
KPF_HWPOISON = 19  # include/uapi/linux/kernel-page-flags.h
#: The events a 6.x kernel built with CONFIG_RAS and CONFIG_X86_MCE has (include/ras/ras_event.h).
TRACE_EVENTS = ("ras/mc_event", "mce/mce_record", "ras/memory_failure_event")
#: kernel/trace/trace_clock names as `trace_clock` lists them, the selected one in brackets.
TRACE_CLOCKS = "[local] global counter uptime perf mono mono_raw boot x86-tsc tai"

# DRAM geometry of the simulated DIMMs: DDR4 x4, 4 bank groups × 4 banks, 8 KiB rows.
BANKS = 16
PAGES_PER_ROW = 16  # one row's pages after channel interleaving (issue 8's address-map model)
COLUMNS = 1024


@dataclass(frozen=True, slots=True)
class SimDimm:
    index: int
    mc: int
    channel: int
    slot: int
    size_mb: int

    @property
    def label(self) -> str:
        # The label form of Intel's skx/i10nm EDAC drivers (drivers/edac/skx_common.c).
        return f"CPU_SrcID#0_MC#{self.mc}_Chan#{self.channel}_DIMM#{self.slot}"


@dataclass(frozen=True, slots=True)
class DramAddress:
    dimm: SimDimm
    bank: int
    row: int
    column: int
    rank: int = 0


class SimMachine:
    """The simulated machine's kernel state, and its directory tree under `root`."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        dimm_size_mb: int = 8192,
        boot_time: int = 1_790_000_000,
        busy_pfns: frozenset[int] = frozenset(),
        seed: int = 1,
    ) -> None:
        self.root = Path(root)
        self.dimms = tuple(
            SimDimm(index=i, mc=i // 4, channel=(i // 2) % 2, slot=i % 2, size_mb=dimm_size_mb)
            for i in range(8)
        )
        self.total_bytes = len(self.dimms) * dimm_size_mb * 1024 * 1024
        self.max_pfn = self.total_bytes >> PAGE_SHIFT
        self.boot_time = boot_time
        #: Pages whose soft offline fails with EBUSY (pinned or unmovable: mm/memory-failure.c).
        self.busy_pfns = set(busy_pfns)
        self.poisoned: set[int] = set()
        self.offline_writes: list[tuple[str, int, int | None]] = []  # (kind, pfn, errno)
        self.rng = random.Random(seed)  # noqa: S311 - reproducible simulation, not secrets
        self._lock = threading.Lock()
        self._ce = [0] * len(self.dimms)
        self._ue = [0] * len(self.dimms)
        self._node_mf = {"total": 0, "recovered": 0, "ignored": 0, "failed": 0, "delayed": 0}
        self._pipe_fds: dict[str, int] = {}
        self.lines_dropped = 0
        self.boot_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- address map ------------------------------------------------------------------------------

    @property
    def rows_per_bank(self) -> int:
        pages_per_dimm = self.dimms[0].size_mb * 256
        return pages_per_dimm // (BANKS * PAGES_PER_ROW)

    def pfn_of(self, dimm: SimDimm, bank: int, row: int, page_in_row: int) -> int:
        """Pages interleave across the 8 DIMMs; a row's 16 pages are consecutive page slots of
        its DIMM. Deterministic and invertible (`dram_of`)."""
        if not (0 <= row < self.rows_per_bank and 0 <= bank < BANKS):
            raise ValueError(f"no row {row} bank {bank} on a {dimm.size_mb} MiB DIMM")
        slot = (row * BANKS + bank) * PAGES_PER_ROW + page_in_row
        return slot * len(self.dimms) + dimm.index

    def dram_of(self, pfn: int) -> tuple[SimDimm, int, int, int]:
        """(dimm, bank, row, page_in_row) of `pfn`."""
        dimm = self.dimms[pfn % len(self.dimms)]
        slot = pfn // len(self.dimms)
        page_in_row = slot % PAGES_PER_ROW
        bank = (slot // PAGES_PER_ROW) % BANKS
        row = slot // PAGES_PER_ROW // BANKS
        return dimm, bank, row, page_in_row

    def phys_addr_of(self, addr: DramAddress) -> int:
        """The physical address of a DRAM cell: the column picks the page within the row and
        the 64-byte line within the page."""
        columns_per_page = COLUMNS // PAGES_PER_ROW
        pfn = self.pfn_of(addr.dimm, addr.bank, addr.row, addr.column // columns_per_page)
        return (pfn << PAGE_SHIFT) | (addr.column % columns_per_page) * 64

    # -- tree -------------------------------------------------------------------------------------

    def _write(self, kpath: str, text: str, mode: int = 0o644) -> None:
        path = self.root / kpath
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def build(self) -> SimMachine:
        """Lay out the tree (idempotent: a second call rewrites counters, keeps the pipes)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write("proc/stat", f"cpu  0 0 0 0 0 0 0 0 0 0\nbtime {self.boot_time}\n")
        self._write("proc/sys/kernel/random/boot_id", self.boot_id + "\n")
        self._write("proc/sys/vm/memory_failure_early_kill", "0\n")
        self._write("proc/sys/vm/memory_failure_recovery", "1\n")
        self._write("proc/sys/vm/enable_soft_offline", "1\n")
        kpf = self.root / "proc/kpageflags"
        with open(kpf, "ab") as f:  # sparse: 8 bytes per pfn, zeros until poisoned
            f.truncate(self.max_pfn * 8)
        self._write_meminfo()
        for kind in (SOFT_OFFLINE, HARD_OFFLINE):
            self._write(kind, "", 0o200)
        self._write_edac()
        self._write_node_stats()
        (self.root / TRACING / "instances").mkdir(parents=True, exist_ok=True)
        self._write(f"{TRACING}/trace_clock", TRACE_CLOCKS + "\n")
        for ev in TRACE_EVENTS:
            self._write(f"{TRACING}/events/{ev}/enable", "0\n")
        # A leftover instance is what a subprocess daemon adopts (it cannot call our mkdir).
        self.populate_instance(INSTANCE)
        return self

    def populate_instance(self, kpath: str) -> None:
        """What `mkdir instances/NAME` makes in real tracefs (kernel/trace/trace.c
        instance_mkdir): the instance's own events/, trace_clock, tracing_on and trace_pipe."""
        base = self.root / kpath
        base.mkdir(parents=True, exist_ok=True)
        (base / "trace_clock").write_text(TRACE_CLOCKS + "\n")
        (base / "tracing_on").write_text("1\n")
        for ev in TRACE_EVENTS:
            (base / "events" / ev).mkdir(parents=True, exist_ok=True)
            (base / "events" / ev / "enable").write_text("0\n")
        pipe = base / "trace_pipe"
        if not (pipe.exists() and stat.S_ISFIFO(pipe.stat().st_mode)):
            os.mkfifo(pipe, 0o600)

    def _write_meminfo(self) -> None:
        corrupted_kb = len(self.poisoned) * 4
        self._write(
            "proc/meminfo",
            f"MemTotal:       {self.total_bytes // 1024:>8} kB\n"
            f"MemFree:        {self.total_bytes // 2048:>8} kB\n"
            f"HardwareCorrupted: {corrupted_kb:>5} kB\n",
        )

    def _write_edac(self) -> None:
        # drivers/edac/edac_mc_sysfs.c: per-controller and per-DIMM attributes.
        for mc in sorted({d.mc for d in self.dimms}):
            base = f"sys/devices/system/edac/mc/mc{mc}"
            dimms = [d for d in self.dimms if d.mc == mc]
            self._write(f"{base}/mc_name", f"Intel_10nm Socket#0 IMC#{mc}\n")
            self._write(f"{base}/size_mb", f"{sum(d.size_mb for d in dimms)}\n")
            self._write(f"{base}/ce_count", f"{sum(self._ce[d.index] for d in dimms)}\n")
            self._write(f"{base}/ue_count", f"{sum(self._ue[d.index] for d in dimms)}\n")
            self._write(f"{base}/ce_noinfo_count", "0\n")
            self._write(f"{base}/ue_noinfo_count", "0\n")
            for n, d in enumerate(dimms):
                dd = f"{base}/dimm{n}"
                self._write(f"{dd}/dimm_label", d.label + "\n")
                self._write(f"{dd}/dimm_location", f"channel {d.channel} slot {d.slot} \n")
                self._write(f"{dd}/size", f"{d.size_mb}\n")
                self._write(f"{dd}/dimm_mem_type", "Registered-DDR4\n")
                self._write(f"{dd}/dimm_edac_mode", "SECDED\n")
                self._write(f"{dd}/dimm_ce_count", f"{self._ce[d.index]}\n")
                self._write(f"{dd}/dimm_ue_count", f"{self._ue[d.index]}\n")

    def _write_node_stats(self) -> None:
        # Documentation/ABI/stable/sysfs-devices-node: memory_failure/{total,ignored,...}.
        for key, value in self._node_mf.items():
            self._write(f"sys/devices/system/node/node0/memory_failure/{key}", f"{value}\n")

    # -- kernel behaviour -------------------------------------------------------------------------

    def _set_kpageflag(self, pfn: int, poisoned: bool) -> None:
        with open(self.root / "proc/kpageflags", "r+b") as f:
            f.seek(pfn * 8)
            flags = int.from_bytes(f.read(8) or b"\0" * 8, "little")
            flags = flags | (1 << KPF_HWPOISON) if poisoned else flags & ~(1 << KPF_HWPOISON)
            f.seek(pfn * 8)
            f.write(flags.to_bytes(8, "little"))

    def poison(self, pfn: int) -> None:
        with self._lock:
            if pfn in self.poisoned:
                return
            self.poisoned.add(pfn)
            self._set_kpageflag(pfn, True)
            self._write_meminfo()

    def offline(self, kind: str, text: str) -> None:
        """The store function behind {soft,hard}_offline_page (drivers/base/memory.c): parse the
        address with kstrtoull(buf, 0), then soft_offline_page()/memory_failure(). Raises
        KernelFSError with the errno the kernel would answer."""
        kpath = SOFT_OFFLINE if kind == "soft" else HARD_OFFLINE
        try:
            phys_addr = int(text.strip(), 0)
        except ValueError:
            raise KernelFSError(errno.EINVAL, kpath, "write") from None
        pfn = phys_addr >> PAGE_SHIFT
        err: int | None = None
        if pfn >= self.max_pfn:
            err = errno.ENXIO  # pfn_valid() fails
        elif pfn in self.poisoned:
            err = None  # "page already poisoned": the kernel answers success (mm/memory-failure.c)
        elif kind == "soft" and pfn in self.busy_pfns:
            err = errno.EBUSY  # isolation or migration failed
        else:
            self.poison(pfn)
        self.offline_writes.append((kind, pfn, err))
        if err is not None:
            raise KernelFSError(err, kpath, "write")

    def reboot(self) -> None:
        """Every poisoned page is back in use, counters restart, a new boot_id (a reboot)."""
        with self._lock:
            for pfn in self.poisoned:
                self._set_kpageflag(pfn, False)
            self.poisoned.clear()
            self._ce = [0] * len(self.dimms)
            self._ue = [0] * len(self.dimms)
            self._node_mf = dict.fromkeys(self._node_mf, 0)
            self.boot_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            self.boot_time += 3600
        self.close_pipes()
        self.build()

    # -- events -----------------------------------------------------------------------------------

    def mc_event_line(
        self, ts: float, addr: DramAddress, *, count: int = 1, uncorrected: bool = False
    ) -> str:
        """A `ras:mc_event` trace_pipe line exactly as TP_printk in include/ras/ras_event.h
        prints it, with the i10nm driver detail (drivers/edac/i10nm_base.c, skx_common.c)."""
        d = addr.dimm
        phys_addr = self.phys_addr_of(addr)
        kind = "Uncorrected" if uncorrected else "Corrected"
        plural = "s" if count > 1 else ""
        detail = (
            f"err_code:0x0000:0x009f socket:0 imc:{d.mc} rank:{addr.rank} bg:{addr.bank // 4}"
            f" ba:{addr.bank % 4} row:{addr.row:#x} col:{addr.column:#x}"
        )
        return (
            f"     kworker/0:1-12    [000] d.h1. {ts:12.6f}: mc_event:"
            f" {count} {kind} error{plural}: memory read error on {d.label}"
            f" (mc:{d.mc} location:{d.channel}:{d.slot}:-1"
            f" address:{phys_addr:#010x} grain:32 syndrome:0x00000000 {detail})"
        )

    def memory_failure_line(self, ts: float, pfn: int, page_type: str, result: str) -> str:
        """`ras:memory_failure_event` (include/ras/ras_event.h): "pfn %#lx: recovery action for
        %s: %s"."""
        return (
            f"     kworker/0:1-12    [000] ..... {ts:12.6f}: memory_failure_event: pfn {pfn:#x}:"
            f" recovery action for {page_type}: {result}"
        )

    def _write_dimm_counters(self, dimm: SimDimm) -> None:
        """Only the counters one error changes (a storm rewrites two files per error)."""
        dimms = [d for d in self.dimms if d.mc == dimm.mc]
        base = f"sys/devices/system/edac/mc/mc{dimm.mc}"
        n = dimms.index(dimm)
        self._write(f"{base}/ce_count", f"{sum(self._ce[d.index] for d in dimms)}\n")
        self._write(f"{base}/ue_count", f"{sum(self._ue[d.index] for d in dimms)}\n")
        self._write(f"{base}/dimm{n}/dimm_ce_count", f"{self._ce[dimm.index]}\n")
        self._write(f"{base}/dimm{n}/dimm_ue_count", f"{self._ue[dimm.index]}\n")

    def corrected_error(self, ts: float, addr: DramAddress, count: int = 1) -> None:
        with self._lock:
            self._ce[addr.dimm.index] += count
        self._write_dimm_counters(addr.dimm)
        self.emit(self.mc_event_line(ts, addr, count=count))

    def uncorrected_error(self, ts: float, addr: DramAddress) -> int:
        """A UE the kernel handles with memory_failure(): reported, counted, page poisoned."""
        pfn = self.phys_addr_of(addr) >> PAGE_SHIFT
        with self._lock:
            self._ue[addr.dimm.index] += 1
            self._node_mf["total"] += 1
            self._node_mf["recovered"] += 1
        self._write_dimm_counters(addr.dimm)
        self._write_node_stats()
        self.emit(self.mc_event_line(ts, addr, uncorrected=True))
        self.poison(pfn)
        self.emit(self.memory_failure_line(ts, pfn, "dirty LRU page", "Recovered"))
        return pfn

    def emit(self, line: str) -> None:
        """Write one line into every instance's trace_pipe that has a reader (like the kernel's
        per-instance ring buffers, a line no one reads is lost when the reader never comes)."""
        instances = self.root / TRACING / "instances"
        for inst in sorted(instances.iterdir()) if instances.is_dir() else []:
            if not (inst / "events/ras/mc_event/enable").is_file():
                continue
            if (inst / "events/ras/mc_event/enable").read_text().strip() != "1":
                continue  # nobody enabled the event in this instance
            self._write_pipe(inst / "trace_pipe", (line + "\n").encode())

    def _write_pipe(self, pipe: Path, data: bytes) -> None:
        key = str(pipe)
        fd = self._pipe_fds.get(key)
        if fd is None:
            try:
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return  # no reader (ENXIO) or the instance was removed
            self._pipe_fds[key] = fd
        # A full pipe means the reader lags: wait for room (a storm must not lose lines), but
        # give up after a minute so a reader that hangs cannot hang the simulation forever.
        deadline = time.monotonic() + 60.0
        while data:
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.lines_dropped += 1
                    return
                select.select([], [fd], [], 0.05)
            except BrokenPipeError:
                os.close(fd)
                del self._pipe_fds[key]
                return

    def close_pipes(self) -> None:
        for fd in self._pipe_fds.values():
            os.close(fd)
        self._pipe_fds.clear()


class SimKernelFS(KernelFS):
    """The kernel filesystem object over a `SimMachine`: reads are the tree's files, writes to
    the offline files run the simulated kernel, and `mkdir instances/NAME` makes an instance."""

    def __init__(self, machine: SimMachine) -> None:
        super().__init__(machine.root)
        self.machine = machine

    def write_text(self, kpath: str, text: str) -> None:
        rel = self._normalise(kpath)
        if rel == SOFT_OFFLINE:
            self.machine.offline("soft", text)
            return
        if rel == HARD_OFFLINE:
            self.machine.offline("hard", text)
            return
        super().write_text(kpath, text)

    def mkdir(self, kpath: str) -> None:
        super().mkdir(kpath)
        rel = self._normalise(kpath)
        if rel.startswith(f"{TRACING}/instances/"):
            self.machine.populate_instance(rel)

    def rmdir(self, kpath: str) -> None:
        rel = self._normalise(kpath)
        if rel.startswith(f"{TRACING}/instances/"):
            # instance_rmdir removes the instance's files with it.
            base = self.path(kpath, "rmdir")
            for path in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir():
                    path.rmdir()
                else:
                    path.unlink()
        super().rmdir(kpath)
