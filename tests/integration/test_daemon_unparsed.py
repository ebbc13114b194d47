"""A kernel line about memory errors that no parser understands is never dropped without a word
(issue 13): the real daemon reads it from a real journal file, counts it per source in the
metrics, says so once in its log, and `hwpoisond status` shows it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.daemonproc import DaemonProcess
from tests.integration.sources.test_journald import BOOT, EDAC_LINE, Journal

# Real lines the parsers do not read yet: drivers/edac/mce_amd.c's decoder output (a capture
# quoted at serverdevworker.com/926365abc) and a 2.6-era console machine check without
# "[Hardware Error]" (serverdevworker.com/6966c0587).
NOT_UNDERSTOOD = (
    "[Hardware Error]: Northbridge Error (node 0): DRAM ECC error detected on the NB.",
    "[Hardware Error]: cache level: L3/GEN, mem/io: MEM, mem-tx: RD, part-proc: SRC (no timeout)",
    "CPU 0: Machine Check Exception: 0 Bank 5: 8c00004000010090",
)
# Lines it does read, from tests/fixtures/parse (real captures): a CPER memory-error block and
# the process the error killed.
UNDERSTOOD = (
    "{1}[Hardware Error]: Hardware error from APEI Generic Hardware Error Source: 8",
    "{1}[Hardware Error]: event severity: recoverable",
    "{1}[Hardware Error]:  Error 0, type: recoverable",
    "{1}[Hardware Error]:   section_type: memory error",
    "{1}[Hardware Error]:   physical_address: 0x0000000040fa6000",
    "{1}[Hardware Error]:   error_type: 0, unknown",
    "Memory failure: 0x40fa6: Killing mca-recover:1296 due to hardware memory corruption",
)
UNPARSED = re.compile(
    r'^hwpoisond_parse_candidate_lines_unparsed_total\{source="journald"\} (\S+)$', re.M
)


def _wait_for_count(prom: Path, want: int, limit_seconds: float = 30.0) -> float | None:
    """The unparsed count once it reaches `want` (or the last one seen after the limit)."""
    deadline = time.monotonic() + limit_seconds
    seen = None
    while time.monotonic() < deadline:
        found = UNPARSED.search(prom.read_text()) if prom.exists() else None
        seen = float(found[1]) if found else None
        if seen is not None and seen >= want:
            return seen
        time.sleep(0.1)
    return seen


def test_lines_nobody_parses_are_counted_logged_once_and_shown(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc/sys/kernel/random").mkdir(parents=True)
    (root / "proc/sys/kernel/random/boot_id").write_text(f"{BOOT}\n")
    (root / "sys").mkdir()
    journal = Journal(root)
    journal.write([EDAC_LINE, *NOT_UNDERSTOOD, "usb 1-1: new high-speed USB device", *UNDERSTOOD])
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    cfg = tmp_path / "hwpoisond.toml"
    cfg.write_text(
        "[daemon]\npoll_interval = '1s'\n[sources]\ntracefs = false\n"
        f"[metrics]\nport = 0\ntextfile_dir = '{textfile}'\n"
    )
    state = tmp_path / "state"
    with DaemonProcess(tmp_path, root, state, config=cfg) as d:
        d.wait_ready(20)
        prom = textfile / "hwpoisond.prom"
        assert _wait_for_count(prom, len(NOT_UNDERSTOOD)) == len(NOT_UNDERSTOOD)
        journal.write([NOT_UNDERSTOOD[2]])  # one more: counted, not logged again
        assert _wait_for_count(prom, len(NOT_UNDERSTOOD) + 1) == len(NOT_UNDERSTOOD) + 1
        text = prom.read_text()
        assert d.stop() == 0
        err = d.stderr()
    assert err.count("a line about memory errors that no parser understands") == 1, err
    assert "Northbridge Error (node 0)" in err
    assert re.search(r'^hwpoisond_processes_killed_total\{action="killed"\} 1\.0$', text, re.M)
    cper = re.search(
        r'^hwpoisond_memory_errors_total\{error_severity="uncorrected",source="kmsg_cper"\} (\S+)$',
        text,
        re.M,
    )
    assert cper is not None and float(cper[1]) >= 1, text
    assert "the kernel killed mca-recover (pid 1296): it used poisoned page 0x40fa6" in err
    status = subprocess.run(
        [sys.executable, "-m", "hwpoisond", "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "lines about memory errors not understood **: journald 4" in status.stdout, status
