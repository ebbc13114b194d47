"""`hwpoisond status [--json]`: what the daemon saw and did, from the state database alone.

Rule: opens the database read-only (safe while the daemon runs), renders, exits; never reads
the kernel and never writes. Exit 1 with a clear message when there is no database.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hwpoisond import config as config_mod
from hwpoisond import exitcodes
from hwpoisond.store import Store, StoreError, StoreMissingError
from hwpoisond.store.report import collect_status


def _state_dir(args: argparse.Namespace) -> Path | int:
    if args.state_dir:
        return Path(args.state_dir)
    try:
        return Path(config_mod.load(args.config).daemon.state_dir)
    except config_mod.ConfigError as e:
        for problem in e.problems:
            print(f"hwpoisond: {e.source}: {problem}", file=sys.stderr)
        return exitcodes.CONFIG


def _when(t: Any) -> str:
    if not isinstance(t, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _ago(t: Any, now: float) -> str:
    if not isinstance(t, int | float):
        return "never"
    seconds = max(0, int(now - t))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{_when(t)} ({seconds // size}{unit} ago)"
    return f"{_when(t)} ({seconds}s ago)"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> list[str]:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    # Numbers right-aligned, text left-aligned: columns read at a glance.
    numeric = [
        all(r[i].lstrip("-").isdigit() or r[i] == "-" for r in cells) and bool(cells)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return (indent + "  ".join(parts)).rstrip()

    return [line(list(headers)), *(line(r) for r in cells)]


def render(s: dict[str, Any], now: float) -> str:
    out: list[str] = []
    daemon = s.get("daemon") or {}
    kernel = s.get("kernel") or {}
    budget = s.get("budget") or {}
    hw = s.get("hardware_corrupted_kb")
    out.append(f"hwpoisond status  ({s['database']})")
    out.append(
        f"  daemon: {'pid ' + str(daemon['pid']) if daemon.get('pid') else 'unknown'}"
        f", state updated {_ago(daemon.get('updated_at'), now)}"
    )
    out.append(f"  last memory event: {_ago(s.get('last_event_at'), now)}")
    unparsed = daemon.get("unparsed_candidate_lines") or {}
    if unparsed:
        shown = ", ".join(f"{name} {n}" for name, n in sorted(unparsed.items()))
        out.append(f"  ** lines about memory errors not understood **: {shown} (see the log)")
    triggers = daemon.get("triggers") or {}
    if triggers:
        shown = ", ".join(f"{key} {n}" for key, n in sorted(triggers.items()))
        bad = sum(n for key, n in triggers.items() if not key.endswith("/ok"))
        out.append(f"  triggers: {shown}{'  ** NOT ALL RAN **' if bad else ''}")
    out.append(f"  HardwareCorrupted: {hw if hw is not None else '?'} kB")
    if budget:
        used = budget.get("retired_bytes", 0) // 1024
        limit = budget.get("max_retired_bytes")
        out.append(
            f"  budget: {used} KiB retired of {limit // 1024 if limit else '?'} KiB"
            f", {budget.get('offlines_last_hour', 0)}/{budget.get('max_offlines_per_hour', '?')}"
            f" offlines in the last hour{'  ** EXHAUSTED **' if budget.get('exhausted') else ''}"
        )
    policy = s.get("policy") or {}
    if policy.get("untracked_events"):
        out.append(
            f"  policy: ** AT ITS BOUND ** {policy.get('pages_kept')} of "
            f"{policy.get('max_page_records')} pages kept, each with work owed or done; "
            f"{policy['untracked_events']} events on new pages counted, not decided"
        )
    if policy.get("not_offlinable_events"):
        out.append(
            f"  policy: {policy['not_offlinable_events']} corrected errors at page 0 (the "
            "driver did not know the address): counted for their DIMM, no page to offline"
        )
    fp = s.get("memory_fingerprint") or {}
    if fp:
        head, *devices = str(fp.get("description", "?")).split("; ")
        out.append(f"  memory: {head}")
        out += [f"    {d}" for d in devices]

    out.append("")
    out.append("DIMMs")
    dimms = s["dimms"]
    if dimms:
        out += _table(
            ("MC", "LABEL", "CE", "UE", "CE(events)", "UE(events)", "RETIRED"),
            [
                (
                    d.get("mc"),
                    d.get("label") or "(no label)",
                    d.get("ce_count"),
                    d.get("ue_count"),
                    d.get("events_ce"),
                    d.get("events_ue"),
                    d.get("pages_retired"),
                )
                for d in dimms
            ],
        )
    else:
        out.append("  no memory errors recorded")

    out.append("")
    out.append(f"Retired pages ({len(s['retired'])})")
    if s["retired"]:
        out += _table(
            ("PFN", "WHEN", "HOW", "VERIFIED", "DIMM", "WHY"),
            [
                (
                    f"{r['pfn']:#x}",
                    _when(r["retired_at"]),
                    r["action"] if r["result"] == "offlined" else "already poisoned",
                    r["verified"],
                    r["label"],
                    r["reason"],
                )
                for r in s["retired"]
            ],
        )
    else:
        out.append("  none")

    out.append("")
    out.append("Pages near threshold")
    if s["near_threshold"]:
        out += _table(
            ("PFN", "CE", "OF", "UE", "LAST SEEN", "STATE", "DIMM"),
            [
                (
                    f"{p['pfn']:#x}",
                    p["ce_count"],
                    p["threshold"],
                    p["ue_count"],
                    _when(p["last_seen"]),
                    p["state"],
                    p["label"],
                )
                for p in s["near_threshold"]
            ],
        )
    else:
        out.append("  none")

    if s["pending"]:
        out.append("")
        out.append(f"Offlines in progress ({len(s['pending'])})")
        out += _table(
            ("PFN", "SINCE", "ACTION"),
            [(f"{p['pfn']:#x}", _when(p["intent_at"]), p["action"]) for p in s["pending"]],
        )

    out.append("")
    out.append("Failures")
    if s["failures"]:
        out += _table(
            ("WHEN", "PFN", "RESULT", "ERRNO", "TRY", "DETAIL"),
            [
                (
                    _when(f["at"]),
                    f"{f['pfn']:#x}" if f["pfn"] is not None else None,
                    f["result"],
                    f["errno_name"],
                    f["attempt"],
                    f["detail"],
                )
                for f in s["failures"]
            ],
        )
    else:
        out.append("  none")

    out.append("")
    out.append("Escalations")
    if s["escalations"]:
        out += _table(
            ("WHEN", "KIND", "DIMM", "MC", "REASON"),
            [
                (_when(e["at"]), e["kind"], e["label"], e["mc"], e["reason"])
                for e in s["escalations"]
            ],
        )
    else:
        out.append("  none")

    out.append("")
    out.append("Sources")
    sources = s["sources"]
    if sources:
        out += _table(
            ("SOURCE", "STATE", "SINCE", "DETAIL"),
            [
                (name, v.get("state"), _when(v.get("since")), v.get("detail"))
                for name, v in sorted(sources.items())
            ],
        )
    else:
        out.append("  not recorded yet")

    out.append("")
    out.append("Kernel")
    cec = kernel.get("cec") or {}
    out.append(
        f"  RAS CEC: {'present' if cec.get('present') else 'absent'}"
        + (f", threshold {cec['threshold']}" if cec.get("threshold") is not None else "")
    )
    sysctls = kernel.get("sysctls") or {}
    if sysctls:
        out += _table(("SYSCTL", "VALUE"), sorted(sysctls.items()))
    for key in ("soft_offline", "kernel_release"):
        if key in kernel:
            out.append(f"  {key.replace('_', ' ')}: {kernel[key]}")

    notes = []
    for a in s["archives"]:
        notes.append(
            f"  {a['pages']} retired pages archived {_when(a['archived_at'])}: {a['why']}"
            f" (meta {a['key']})"
        )
    for r in s["db_recoveries"]:
        notes.append(f"  corrupt database moved aside {_when(r.get('at'))}: {r.get('moved_to')}")
    if notes:
        out.append("")
        out.append("Notes")
        out += notes
    return "\n".join(out) + "\n"


def main(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    if isinstance(state_dir, int):
        return state_dir
    try:
        with Store.open_readonly(state_dir) as store:
            data = collect_status(store)
    except StoreMissingError as e:
        print(
            f"hwpoisond status: {e}; is the daemon running with this --state-dir?", file=sys.stderr
        )
        return exitcodes.FAILURE
    except StoreError as e:
        print(f"hwpoisond status: {e}", file=sys.stderr)
        return exitcodes.FAILURE
    if getattr(args, "json", False):
        print(json.dumps(data, sort_keys=True))
    else:
        sys.stdout.write(render(data, time.time()))
    return exitcodes.OK
