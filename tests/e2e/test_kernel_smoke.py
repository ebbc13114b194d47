"""Kernel smoke: the guest kernel really does what hwpoisond relies on (one boot, no daemon).

Rule: asserts facts the guest observed about its own kernel; hwpoisond is not involved, so a
failure here is the harness or the kernel, never the daemon.

With HWPOISOND_E2E_SAVE_CAPTURES=1 the raw kernel text of the run is saved under
tests/e2e/captures/ with the kernel version in a header, as fixtures for the parsers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e import harness

pytestmark = pytest.mark.e2e

CAPTURES_DIR = harness.E2E_DIR / "captures"


@dataclass(frozen=True)
class Smoke:
    facts: dict[str, str]  # smoke.env, key=value lines written by the guest
    trace: str  # the private tracefs instance's trace file
    dmesg: str  # the guest's kernel ring buffer after the injections

    def int(self, key: str) -> int:
        return int(self.facts[key])


@pytest.fixture(scope="module")
def smoke(guest_kernel: harness.GuestKernel, tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    out = tmp_path_factory.mktemp("smoke")
    run = harness.boot(guest_kernel, out, harness.scenario_script('. "$GUEST/smoke.sh"'))
    assert run.exit_code == 0, run.scenario_log.read_text()
    print(f"smoke boot: {run.boot_seconds:.1f}s to scenario, {run.total_seconds:.1f}s in all")
    facts = dict(
        line.split("=", 1) for line in (out / "smoke.env").read_text().splitlines() if line
    )
    result = Smoke(
        facts=facts,
        trace=(out / "trace.txt").read_text(),
        dmesg=(out / "smoke-dmesg.txt").read_text(),
    )
    if os.environ.get("HWPOISOND_E2E_SAVE_CAPTURES") == "1":
        _save_captures(guest_kernel, out)
    return result


def test_soft_offline_page_raises_hardware_corrupted_by_4kb(smoke: Smoke) -> None:
    assert smoke.facts["soft_write"] == "ok"
    assert smoke.int("hc_after_soft_kb") - smoke.int("hc_before_kb") == 4
    assert smoke.int("soft_hwpoison") == 1  # KPF_HWPOISON in /proc/kpageflags


def test_corrupt_pfn_emits_memory_failure_event_and_kmsg(smoke: Smoke) -> None:
    pfn = smoke.int("corrupt_pfn")
    # include/ras/ras_event.h, memory_failure_event TP_printk (6.1).
    trace_line = (
        f"memory_failure_event: pfn {pfn:#x}: recovery action for free buddy page: Recovered"
    )
    assert trace_line in smoke.trace
    # mm/memory-failure.c action_result(): pr_err("%#lx: recovery action for %s: %s\n"), pr_fmt
    # "Memory failure: ".
    assert f"Memory failure: {pfn:#x}: recovery action for free buddy page: Recovered" in (
        smoke.dmesg
    )
    assert smoke.int("corrupt_hwpoison") == 1
    assert smoke.int("hc_after_corrupt_kb") - smoke.int("hc_after_soft_kb") == 4


def test_mce_inject_emits_mce_record_trace_line_and_kmsg(smoke: Smoke) -> None:
    records = [line for line in smoke.trace.splitlines() if "mce_record:" in line]
    assert len(records) == 1, smoke.trace
    # arch/x86 include/trace/events/mce.h TP_printk: bank, status, then ADDR/MISC/SYND.
    assert "MC7: 9c0000000008009f" in records[0]
    assert "ADDR/MISC/SYND: 0000000007654000/0000000000000086/" in records[0]
    # X86_VENDOR_INTEL is 0: the guest CPU must be Intel for bank 7 to decode as a memory error.
    assert "PROCESSOR: 0:" in records[0]
    # arch/x86/kernel/cpu/mce/core.c __print_mce().
    assert re.search(
        r"mce: \[Hardware Error\]: CPU 0: Machine Check: 0 Bank 7: 9c0000000008009f", smoke.dmesg
    )
    assert re.search(r"mce: \[Hardware Error\]: TSC [0-9a-f]+ ADDR 7654000 MISC 86", smoke.dmesg)


def _save_captures(kernel: harness.GuestKernel, out: Path) -> None:
    header = (
        f"# Captured from Debian 12 {kernel.package} {kernel.package_version} "
        f"(uname -r {kernel.release}) under qemu TCG -cpu max,vendor=GenuineIntel\n"
        "# by tests/e2e/test_kernel_smoke.py (guest/smoke.sh): soft_offline_page, hwpoison-inject\n"
        "# corrupt-pfn on a free page, mce-inject of a corrected memory read error\n"
        "# (status 0x9c0000000008009f, addr 0x7654000, misc 0x86, bank 7, software injection).\n"
    )
    target = CAPTURES_DIR / kernel.release
    target.mkdir(parents=True, exist_ok=True)
    for name, src in (
        ("trace.txt", "trace.txt"),
        ("dmesg.txt", "smoke-dmesg.txt"),
        ("memory_failure_event.format", "memory_failure_event.format"),
        ("mce_record.format", "mce_record.format"),
    ):
        (target / name).write_text(header + (out / src).read_text())
