"""`python -m bench policy_memory`: the policy core's memory over a storm of distinct pages, per
preset, with and without the page-record bound (issue 19, "Bounded under storms").

Rule: drives the real pure core in a child process per (preset, bound) and reports that child's
peak RSS (VmHWM); it reads nothing else and writes nothing but its report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PRESETS = ("default", "first-ce", "rasdaemon", "mcelog", "kernel-cec")


def _child(preset: str, pages: int, bound: int | None) -> None:
    from hwpoisond.core import policy
    from hwpoisond.core.model import ActionResult, Event, EventSource
    from hwpoisond.core.params import preset_params, with_overrides
    from hwpoisond.core.state import new_state

    params = preset_params(preset)  # type: ignore[arg-type]
    if bound is not None:
        params = with_overrides(params, max_page_records=bound)
    mce = params.counter in ("mcelog", "cec")
    per_page = params.ce_threshold if mce else 1
    count = 1 if mce else params.ce_threshold
    source: EventSource = "mce_record" if mce else "mc_event"
    state = new_state()
    t = 0.0
    for pfn in range(1, pages + 1):
        for _ in range(per_page):
            t += 0.001
            ev = Event("memory_error", source, "corrected", count, pfn << 12, pfn, t, mc=0)
            state, out = policy.decide(state, ev, params)
            for d in out:
                if d.kind == "offline" and d.pfn is not None and d.action is not None:
                    r = ActionResult(d.pfn, d.action, "offlined", t, verified=True, attempt=1)
                    state, _ = policy.on_result(state, r, params)
    with open("/proc/self/status") as f:
        hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {
                "peak_rss_mb": hwm_kb / 1024,
                "records": len(state.pages),
                "untracked": state.untracked_events,
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=int, default=150_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        preset, pages, bound = a.child
        _child(preset, int(pages), None if bound == "none" else int(bound))
        return 0
    print(f"| preset | bound | pages kept | untracked events | peak RSS MB (median of {a.runs}) |")
    print("|---|---|---|---|---|")
    for preset in PRESETS:
        for bound in ("none", "default"):
            arg = str(10**9) if bound == "none" else "65536"
            runs = []
            for _ in range(a.runs):
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.policy_memory",
                        "--child",
                        preset,
                        str(a.pages),
                        arg,
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                runs.append(json.loads(out))
            rss = statistics.median(r["peak_rss_mb"] for r in runs)
            last = runs[-1]
            print(f"| {preset} | {bound} | {last['records']} | {last['untracked']} | {rss:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
