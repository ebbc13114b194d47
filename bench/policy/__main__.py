"""`python -m bench policy`: generate the seeded suite, replay it per policy, print the table.

Rule: this is the only part that touches files and processes; generation and scoring stay pure.
Replay is the real `hwpoisond replay FILE… --policy NAME --per-file --json --fail-rate P`,
run as a subprocess of this interpreter, one per policy (`--jobs` at once).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from bench.policy import model
from bench.policy.generator import SuiteParams, truth_path, write_suite
from bench.policy.scorer import (
    HostScore,
    ReplayResult,
    SuiteScore,
    aggregate,
    dominates,
    markdown_table,
    score_host,
)
from bench.policy.truth import HostTruth

POLICIES = ("default", "none", "rasdaemon", "mcelog", "kernel-cec", "kernel-cec-amd", "first-ce")


class ReplayError(RuntimeError):
    pass


def run_replay(
    files: list[Path], policy: str, fail_rate: float, config: str | None
) -> dict[str, ReplayResult]:
    """One `hwpoisond replay --per-file` over all hosts; results keyed by file path."""
    cmd = [sys.executable, "-m", "hwpoisond", "replay", *map(str, files)]
    cmd += ["--policy", policy, "--per-file", "--json", "--fail-rate", repr(fail_rate)]
    # The simulated host's RAM, so budget.max_retired_fraction applies as on the real machine.
    cmd += ["--total-ram", str(model.HOST_RAM_BYTES)]
    if config is not None:
        cmd += ["--config", config]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ReplayError(
            f"replay --policy {policy} exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )
    results: dict[str, ReplayResult] = {}
    for line in proc.stdout.splitlines():
        if line.strip():
            data = json.loads(line)
            results[str(data["file"])] = ReplayResult.from_json(data)
    missing = [str(f) for f in files if str(f) not in results]
    if missing:
        raise ReplayError(f"replay --policy {policy} printed no result for {missing[:3]}")
    return results


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench policy", description=__doc__)
    p.add_argument("--hosts", type=int, default=200, help="simulated faulty hosts per seed")
    p.add_argument("--seeds", default="1", help="comma-separated seeds (default: 1)")
    p.add_argument("--days", type=float, default=90.0, help="simulated horizon per host")
    p.add_argument("--fail-rate", type=float, default=0.06, help="replay --fail-rate")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument(
        "--repair-lead-hours",
        type=float,
        default=0.0,
        help="an escalation avoids a UE only if it came this long before it (default 0)",
    )
    p.add_argument("--cec-fraction", type=float, default=0.0, help="share of CEC hosts")
    p.add_argument(
        "--edac-only",
        action="store_true",
        help="no mce_record line for CEs on EDAC hosts (default: both, as a real trace has)",
    )
    p.add_argument("--config", default=None, help="hwpoisond config passed to replay")
    p.add_argument("--jobs", type=int, default=2, help="replays at once")
    p.add_argument("--out", default=None, help="keep traces and results here (default: temp)")
    p.add_argument("--json", dest="json_out", default=None, help="write scores as JSON here")
    p.add_argument("--big", action="store_true", help="the big run: 1000 hosts, seeds 1,2,3")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if args.big:
        args.hosts, args.seeds = 1000, "1,2,3"
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    policies = [p for p in args.policies.split(",") if p.strip()]
    with tempfile.TemporaryDirectory(prefix="hwpoisond-bench-policy-") as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        per_policy: dict[str, list[HostScore]] = {p: [] for p in policies}
        for seed in seeds:
            params = SuiteParams(
                hosts=args.hosts,
                seed=seed,
                days=args.days,
                cec_fraction=args.cec_fraction,
                all_mce_records=not args.edac_only,
            )
            out_dir = root / f"seed-{seed}"
            t0 = time.monotonic()
            files = write_suite(params, out_dir)
            lines = sum(1 for f in files for _ in f.open(encoding="ascii"))
            print(
                f"seed {seed}: {len(files)} hosts, {lines} trace lines, generated in "
                f"{time.monotonic() - t0:.1f} s",
                file=sys.stderr,
            )
            truths = [HostTruth.read(truth_path(out_dir, h)) for h in range(params.hosts)]
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                futures = {
                    p: pool.submit(run_replay, files, p, args.fail_rate, args.config)
                    for p in policies
                }
                for policy, fut in futures.items():
                    t1 = time.monotonic()
                    try:
                        results = fut.result()
                    except ReplayError as e:
                        print(f"bench policy: {e}", file=sys.stderr)
                        return 1
                    if args.out:
                        (out_dir / f"replay-{policy}.json").write_text(
                            json.dumps({str(k): asdict(v) for k, v in results.items()})
                        )
                    per_policy[policy] += [
                        score_host(t, results[str(f)], args.repair_lead_hours * 3600.0)
                        for t, f in zip(truths, files, strict=True)
                    ]
                    print(
                        f"seed {seed}: replayed {policy} (+{time.monotonic() - t1:.1f} s)",
                        file=sys.stderr,
                    )
    suite = [aggregate(p, per_policy[p]) for p in policies]
    print(
        f"Policy suite: seeds {','.join(map(str, seeds))}, {args.hosts} hosts per seed, "
        f"{args.days:g} days, replay --fail-rate {args.fail_rate}, "
        f"repair lead {args.repair_lead_hours:g} h, CEC hosts {args.cec_fraction:g}\n"
    )
    print(markdown_table(suite))
    _report_dominance(suite)
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps(
                {
                    "seeds": seeds,
                    "hosts": args.hosts,
                    "days": args.days,
                    "fail_rate": args.fail_rate,
                    "repair_lead_hours": args.repair_lead_hours,
                    "cec_fraction": args.cec_fraction,
                    "scores": [asdict(s) | {"mib_retired": s.mib_retired} for s in suite],
                },
                indent=2,
            )
        )
    return 0


def _report_dominance(suite: list[SuiteScore]) -> None:
    ref = next((s for s in suite if s.policy == "default"), None)
    if ref is None:
        return
    print()
    for s in suite:
        if s is ref:
            continue
        if dominates(ref, s):
            continue
        why = []
        if ref.ues_avoided < s.ues_avoided:
            why.append(f"avoids fewer UEs ({ref.ues_avoided} < {s.ues_avoided})")
        if ref.pages_retired > s.pages_retired:
            why.append(f"retires more ({ref.mib_retired:.2f} > {s.mib_retired:.2f} MiB)")
        if not why:
            why.append("ties on both UEs avoided and memory retired")
        print(f"default does NOT dominate {s.policy}: " + "; ".join(why))


if __name__ == "__main__":
    sys.exit(main())
