"""Guest-side daemon scenarios: inject real errors, run the real hwpoisond, record what happened.

Rule: runs INSIDE the guest only (its kernel is the one being poisoned); stdlib only; treats
hwpoisond as a black box through its CLI, `/metrics` and `status --json`, and asserts nothing:
each scenario writes $E2E_OUT/results/<name>.json with the facts it observed (kernel state,
metrics, status), and tests/e2e/test_daemon_scenarios.py judges them. A scenario that raises
records its traceback instead, so one failure does not hide the others.

Usage (from the repository root): python -m tests.e2e.guest.scenarios first-boot | second-boot
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.guest import pagetool

OUT = Path(os.environ.get("E2E_OUT", "/run/hwpoisond-e2e/out"))
RESULTS = OUT / "results"
PY = os.environ.get("PY", sys.executable)
METRICS_PORT = 19862
#: How long any wait in a scenario may take. The guest runs under TCG on a machine that may be
#: busy with other work: a condition that normally holds in a second may take a minute, and a
#: wait must never fail for slowness alone (issue 12, 17). Waits return as soon as it holds.
PATIENCE_SECONDS = 240.0
PAGE_SHIFT = 12
#: Corrected memory-controller read error (MCACOD 0x9f: memory read, channel unspecified) with
#: VAL|EN|MISCV|ADDRV; misc 0x86 = address valid from bit 6, physical address mode (Intel SDM
#: vol. 3B 16.3.2 / 17.3.2.3). The same record the smoke test proves reaches mce_record.
MCE_CE_STATUS = 0x9C0000000008009F
MCE_CE_MISC = 0x86
MCE_BANK = 7

Metrics = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- the guest kernel ------------------------------------------------------------------------------


def inject_ce(phys_addr: int) -> None:
    """One corrected memory error at phys_addr through mce-inject's software path
    (arch/x86/kernel/cpu/mce/inject.c: writing `bank` raises the record)."""
    d = Path("/sys/kernel/debug/mce-inject")
    (d / "flags").write_text("sw\n")
    (d / "status").write_text(f"{MCE_CE_STATUS:#x}\n")
    (d / "addr").write_text(f"{phys_addr:#x}\n")
    (d / "misc").write_text(f"{MCE_CE_MISC:#x}\n")
    (d / "cpu").write_text("0\n")
    (d / "bank").write_text(f"{MCE_BANK}\n")


def corrupt_pfn(pfn: int) -> None:
    """memory_failure() on pfn, as for an uncorrected error (mm/hwpoison-inject.c), but only if
    the pfn is still a free buddy page: poisoning a page that some process got meanwhile would
    kill it (the filter makes hwpoison_inject() skip anything else)."""
    d = Path("/sys/kernel/debug/hwpoison")
    (d / "corrupt-filter-enable").write_text("1\n")
    (d / "corrupt-filter-flags-mask").write_text(f"{1 << pagetool.KPF_BUDDY}\n")
    (d / "corrupt-filter-flags-value").write_text(f"{1 << pagetool.KPF_BUDDY}\n")
    try:
        (d / "corrupt-pfn").write_text(f"{pfn}\n")
    finally:
        # The filter is global and soft_offline_page() obeys it too (EOPNOTSUPP for any page it
        # filters out, mm/memory-failure.c): leave it on and the daemon's offlines fail.
        (d / "corrupt-filter-enable").write_text("0\n")


def fresh_free_pfn(avoid: set[int]) -> int:
    """A free buddy page right now (pages found free at the start may be in use by now)."""
    return next(p for p in pagetool.free_pfns(len(avoid) + 1, 0x1000) if p not in avoid)


def poison_free_page(avoid: set[int], attempts: int = 20) -> tuple[int, int]:
    """memory_failure() on a page that is free when the kernel looks: (pfn, attempts taken).

    Between finding a free page and injecting, a busy guest may allocate it; the buddy filter
    then skips the injection without a word (hwpoison_inject() returns 0) and no memory_failure
    event ever comes. The page's HWPOISON flag says whether the kernel really took it.
    """
    for attempt in range(1, attempts + 1):
        pfn = fresh_free_pfn(avoid)
        corrupt_pfn(pfn)
        if pagetool.flags(pfn) >> pagetool.KPF_HWPOISON & 1:
            return pfn, attempt
        avoid = avoid | {pfn}
    raise RuntimeError(f"no free page took the injected poison in {attempts} attempts")


def kernel_reserved_pfn() -> int:
    """A pfn in System RAM that the kernel's own text occupies (/proc/iomem "Kernel code"): real
    memory that soft offline must refuse."""
    for line in Path("/proc/iomem").read_text().splitlines():
        if line.strip().endswith(": Kernel code"):
            start = int(line.strip().split("-")[0], 16)
            return (start >> PAGE_SHIFT) + 16
    raise RuntimeError("no 'Kernel code' range in /proc/iomem")


def page_facts(pfns: dict[str, int]) -> dict[str, Any]:
    return {
        "hardware_corrupted_kb": pagetool.hardware_corrupted_kb(),
        "hwpoison": {
            name: (pagetool.flags(pfn) >> pagetool.KPF_HWPOISON) & 1 for name, pfn in pfns.items()
        },
    }


# -- hwpoisond, black box -------------------------------------------------------------------------


def parse_metrics(text: str) -> Metrics:
    """Prometheus text exposition → {(name, labels): value}; comments skipped."""
    out: Metrics = {}
    line_re = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)")
    label_re = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        m = line_re.match(line)
        if m and not line.startswith("#"):
            labels = frozenset(label_re.findall(m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric_sum(metrics: Metrics, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


class Daemon:
    """`hwpoisond run --root /` on the guest kernel, with its own state dir, config and log."""

    def __init__(self, name: str, port: int, config_toml: str) -> None:
        self.name = name
        self.port = port
        self.dir = OUT / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.dir / "state"
        self.config = self.dir / "hwpoisond.toml"
        self.config.write_text(config_toml)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def argv(self, command: str, *extra: str) -> list[str]:
        return [
            PY,
            "-m",
            "hwpoisond",
            command,
            "--root",
            "/",
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(self.config),
            *extra,
        ]

    def start(self, timeout_seconds: float = PATIENCE_SECONDS) -> float:
        """Starts the daemon and waits for /metrics to answer; returns the seconds it took."""
        self.starts += 1
        log = (self.dir / f"daemon-{self.starts}.log").open("wb")
        began = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv("run", "--log-level", "debug"), stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(
            f"{self.name} metrics endpoint",
            lambda: self.scrape() is not None,
            timeout_seconds,
            alive=self.proc,
        )
        return time.monotonic() - began

    def stop(self, timeout_seconds: float = PATIENCE_SECONDS) -> int:
        """SIGTERM, as systemd stops it; returns its exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_seconds)
        self.proc = None
        return code

    def scrape(self) -> Metrics | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        (self.dir / "metrics.txt").write_text(text)
        return parse_metrics(text)

    def metrics(self) -> Metrics:
        m = self.scrape()
        if m is None:
            raise RuntimeError(f"{self.name}: /metrics did not answer")
        return m

    def status(self) -> dict[str, Any]:
        res = subprocess.run(
            self.argv("status", "--json"), capture_output=True, text=True, timeout=120, check=False
        )
        (self.dir / "status.json").write_text(res.stdout)
        if res.returncode != 0:
            raise RuntimeError(f"status --json exit {res.returncode}: {res.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(res.stdout)
        return result

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(
    what: str,
    predicate: Callable[[], bool],
    timeout_seconds: float,
    alive: subprocess.Popen[bytes] | None = None,
) -> float:
    """Polls until predicate() holds; returns seconds waited; raises with `what` on timeout."""
    began = time.monotonic()
    while not predicate():
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"daemon exited with {alive.returncode} while waiting for {what}")
        if time.monotonic() - began > timeout_seconds:
            raise TimeoutError(f"timed out after {timeout_seconds:.0f}s waiting for {what}")
        time.sleep(0.5)
    return time.monotonic() - began


def config(*, port: int, journald: bool = False, extra: str = "") -> str:
    return f"""
[daemon]
log_level = "debug"
poll_interval = "1s"
housekeeping_interval = "1s"

[sources]
tracefs = true
journald = {str(journald).lower()}
journal_backfill = false

[policy]
ce_threshold = 2
window = "1h"
retry_max = 2
retry_backoff = "2s"

[metrics]
port = {port}
{extra}
"""


# -- scenarios -------------------------------------------------------------------------------------


@contextmanager
def scenario(name: str) -> Iterator[dict[str, Any]]:
    """Collects one scenario's facts; writes them (or the traceback) to results/<name>.json."""
    facts: dict[str, Any] = {"name": name}
    began = time.monotonic()
    try:
        yield facts
    except Exception:
        facts["error"] = traceback.format_exc()
    facts["seconds"] = round(time.monotonic() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(facts, indent=1, sort_keys=True))


JOURNALD = Path("/lib/systemd/systemd-journald")


def start_journald() -> subprocess.Popen[bytes] | None:
    """The guest's own journald (volatile, /run/log/journal), reading the guest's /dev/kmsg."""
    if not JOURNALD.exists():
        return None
    Path("/run/systemd/journal").mkdir(parents=True, exist_ok=True)
    log = (OUT / "journald.log").open("wb")
    return subprocess.Popen([str(JOURNALD)], stdout=log, stderr=subprocess.STDOUT)


def first_boot() -> None:
    # Started first, so it is settled by the time the two-sources daemon wants it.
    journald = start_journald()
    free = pagetool.free_pfns(9, 0x1000)
    pages = {"below": free[0], "recurring": free[1], "corrupt": free[2], "restart": free[3]}
    (OUT / "pages.json").write_text(json.dumps(pages))
    # Each daemon has its own port: one left running by a failed scenario must not answer for
    # the next.
    main = Daemon("main", METRICS_PORT, config(port=METRICS_PORT))
    running = [main]

    with scenario("start") as f:
        f["daemon_start_seconds"] = round(main.start(), 1)
        f["metrics"] = sorted(n for n, _ in main.metrics())

    with scenario("recurring_ce") as f:
        f["pages"] = {k: pages[k] for k in ("below", "recurring")}
        f["before"] = page_facts(pages)
        inject_ce((pages["below"] << PAGE_SHIFT) + 0x40)
        for offset in (0x80, 0xC0):
            inject_ce((pages["recurring"] << PAGE_SHIFT) + offset)
        f["offline_seconds"] = wait_for(
            "the recurring page to carry HWPOISON",
            lambda: pagetool.flags(pages["recurring"]) >> pagetool.KPF_HWPOISON & 1 == 1,
            PATIENCE_SECONDS,
        )
        # The later errors were acted on, so the earlier single error has been seen and judged.
        wait_for(
            "3 corrected errors in /metrics",
            lambda: (
                metric_sum(
                    main.metrics(), "hwpoisond_memory_errors_total", error_severity="corrected"
                )
                >= 3
            ),
            PATIENCE_SECONDS,
        )
        f["after"] = page_facts(pages)
        m = main.metrics()
        f["retired_pages_metric"] = metric_sum(m, "hwpoisond_retired_pages")
        f["offline_ok_metric"] = metric_sum(m, "hwpoisond_offline_actions_total", result="offlined")
        f["corrected_metric"] = metric_sum(
            m, "hwpoisond_memory_errors_total", error_severity="corrected"
        )

    with scenario("corrupt_pfn") as f:
        pages["corrupt"], f["poison_attempts"] = poison_free_page(set(pages.values()))
        (OUT / "pages.json").write_text(json.dumps(pages))
        f["pfn"] = pages["corrupt"]
        f["seen_seconds"] = wait_for(
            "a memory_failure in /metrics",
            lambda: metric_sum(main.metrics(), "hwpoisond_kernel_uncorrected_errors_total") >= 1,
            PATIENCE_SECONDS,
        )
        m = main.metrics()
        f["kernel_uncorrected"] = {
            json.dumps(dict(sorted(ls))): v
            for (n, ls), v in m.items()
            if n == "hwpoisond_kernel_uncorrected_errors_total"
        }
        f["after"] = page_facts(pages)

    with scenario("restart") as f:
        f["pfn"] = pages["restart"]
        inject_ce((pages["restart"] << PAGE_SHIFT) + 0x100)
        wait_for(
            "4 corrected errors in /metrics",
            lambda: (
                metric_sum(
                    main.metrics(), "hwpoisond_memory_errors_total", error_severity="corrected"
                )
                >= 4
            ),
            PATIENCE_SECONDS,
        )
        f["hwpoison_before_restart"] = pagetool.flags(pages["restart"]) >> pagetool.KPF_HWPOISON & 1
        f["stop_exit_code"] = main.stop()
        f["restart_seconds"] = round(main.start(), 1)
        inject_ce((pages["restart"] << PAGE_SHIFT) + 0x140)
        f["offline_seconds"] = wait_for(
            "the restart page to carry HWPOISON",
            lambda: pagetool.flags(pages["restart"]) >> pagetool.KPF_HWPOISON & 1 == 1,
            PATIENCE_SECONDS,
        )
        time.sleep(2)  # let anything replayed after the restart arrive, if it (wrongly) would
        f["after"] = page_facts(pages)
        f["status"] = main.status()
        f["daemon_alive"] = main.alive()
        f["final_stop_exit_code"] = main.stop()

    with scenario("budget_and_refusal") as f:
        # Budget: 2 pages. A refused offline (kernel text) is tried first, then 4 good pages.
        budget = Daemon(
            "budget",
            METRICS_PORT + 1,
            config(
                port=METRICS_PORT + 1,
                extra="""
[budget]
max_retired_bytes = 8192
max_offlines_per_hour = 64
""",
            ),
        )
        running.append(budget)
        f["daemon_start_seconds"] = round(budget.start(), 1)
        refused = kernel_reserved_pfn()
        good = free[4:8]
        f["refused_pfn"] = refused
        f["good_pfns"] = good
        f["before"] = page_facts({"refused": refused, **{str(p): p for p in good}})
        for offset in (0x40, 0x80):
            inject_ce((refused << PAGE_SHIFT) + offset)
        f["first_failure_seconds"] = wait_for(
            "a failed offline in /metrics",
            lambda: (
                metric_sum(budget.metrics(), "hwpoisond_offline_actions_total")
                - metric_sum(budget.metrics(), "hwpoisond_offline_actions_total", result="offlined")
                >= 1
            ),
            PATIENCE_SECONDS,
        )
        # Its retries hold a budget reservation until they give up (core/policy.py); let them
        # finish first so the budget below is the good pages' alone.
        f["refusal_done_seconds"] = wait_for(
            "3 failed attempts in /metrics",
            lambda: (
                metric_sum(budget.metrics(), "hwpoisond_offline_actions_total")
                - metric_sum(budget.metrics(), "hwpoisond_offline_actions_total", result="offlined")
                >= 3
            ),
            PATIENCE_SECONDS,
        )
        time.sleep(1)
        for pfn in good:
            for offset in (0x40, 0x80):
                inject_ce((pfn << PAGE_SHIFT) + offset)
        wait_for(
            "10 corrected errors in /metrics",
            lambda: (
                metric_sum(
                    budget.metrics(), "hwpoisond_memory_errors_total", error_severity="corrected"
                )
                >= 10
            ),
            PATIENCE_SECONDS,
        )
        # retry_max 2 x retry_backoff 2s (doubling): every retry is due within ~10 s; wait
        # longer to see that attempts stop.
        time.sleep(15)
        m = budget.metrics()
        f["offline_actions"] = {
            json.dumps(dict(sorted(ls))): v
            for (n, ls), v in m.items()
            if n == "hwpoisond_offline_actions_total"
        }
        f["budget_exhausted_metric"] = metric_sum(m, "hwpoisond_budget_exhausted")
        f["after"] = page_facts({"refused": refused, **{str(p): p for p in good}})
        f["daemon_alive"] = budget.alive()
        f["status"] = budget.status()
        f["stop_exit_code"] = budget.stop()

    with scenario("two_sources") as f:
        # One corrected error and one memory_failure, each reported by tracefs AND by kmsg
        # through the journal: counted once each. One CE is below the threshold of 2, so a
        # double count would also show as a wrong soft offline.
        f["journald"] = journald is not None and journald.poll() is None
        if not f["journald"]:
            raise RuntimeError(f"no running {JOURNALD} in the guest")
        both = Daemon("two_sources", METRICS_PORT + 2, config(port=METRICS_PORT + 2, journald=True))
        running.append(both)
        f["daemon_start_seconds"] = round(both.start(), 1)
        inject_ce((free[8] << PAGE_SHIFT) + 0x40)
        ue_pfn, f["poison_attempts"] = poison_free_page(set(free) | set(pages.values()))
        f["pfns"] = {"ce": free[8], "ue": ue_pfn}
        wait_for(
            "a corrected error and a memory_failure in /metrics",
            lambda: (
                metric_sum(both.metrics(), "hwpoisond_memory_errors_total") >= 1
                and metric_sum(both.metrics(), "hwpoisond_kernel_uncorrected_errors_total") >= 1
            ),
            PATIENCE_SECONDS,
        )
        # The journal's copy of the memory_failure follows the trace's and is dropped as a
        # duplicate; the CE was injected first, so its kernel-log copy (if the kernel printed
        # one) is earlier in the journal and has been read by then too.
        f["dedupe_seconds"] = wait_for(
            "the journal's copy of the memory_failure, dropped as a duplicate",
            lambda: (
                metric_sum(
                    both.metrics(), "hwpoisond_events_deduplicated_total", family="memory_failure"
                )
                >= 1
            ),
            PATIENCE_SECONDS,
        )
        m = both.metrics()
        f["source_up"] = {
            dict(ls).get("source", ""): v for (n, ls), v in m.items() if n == "hwpoisond_source_up"
        }
        f["memory_errors"] = {
            json.dumps(dict(sorted(ls))): v
            for (n, ls), v in m.items()
            if n == "hwpoisond_memory_errors_total"
        }
        f["kernel_uncorrected"] = metric_sum(m, "hwpoisond_kernel_uncorrected_errors_total")
        f["deduplicated"] = metric_sum(m, "hwpoisond_events_deduplicated_total")
        f["after"] = page_facts(f["pfns"])
        f["status"] = both.status()
        f["stop_exit_code"] = both.stop()

    for daemon in running:  # those a failed scenario left behind
        if daemon.alive():
            daemon.stop()


def second_boot() -> None:
    pages = json.loads((OUT / "pages.json").read_text())
    main = Daemon("main", METRICS_PORT, config(port=METRICS_PORT))
    with scenario("reboot") as f:
        f["before"] = page_facts(pages)
        f["daemon_start_seconds"] = round(main.start(), 1)
        f["reoffline_seconds"] = wait_for(
            "the pages retired in the first boot to carry HWPOISON again",
            lambda: all(
                pagetool.flags(pages[k]) >> pagetool.KPF_HWPOISON & 1
                for k in ("recurring", "restart")
            ),
            PATIENCE_SECONDS,
        )
        time.sleep(3)  # anything else it would (wrongly) offline has time to show
        f["after"] = page_facts(pages)
        f["status"] = main.status()
        f["stop_exit_code"] = main.stop()


if __name__ == "__main__":
    {"first-boot": first_boot, "second-boot": second_boot}[sys.argv[1]]()
