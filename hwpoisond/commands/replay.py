"""`hwpoisond replay`: historical logs through the real parsers and the real policy core.

Rule: reads the named files and prints; never touches a kernel interface. Every offline decision
is assumed to succeed unless `--fail-rate P` says otherwise: then an attempt fails (EBUSY) when a
hash of (pfn, action, attempt) falls below P, so runs are repeatable. Time is the events' own
clock: retries and rate-deferred offlines come out of the core's expire() as event time passes,
and expire() also runs every `daemon.housekeeping_interval` of event time, as in the daemon.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from hwpoisond import config, exitcodes
from hwpoisond.commands.parse import YEAR_RANGE, prime_year
from hwpoisond.commands.rasdb import RasdaemonDbError, is_sqlite, read_rasdaemon_db
from hwpoisond.core import policy
from hwpoisond.core.model import ActionResult, Decision, Event
from hwpoisond.core.params import BudgetParams, PolicyParams, with_overrides
from hwpoisond.core.state import PolicyState, new_state, next_due
from hwpoisond.parse.stream import UNPARSED_EXAMPLES_KEPT, LineParser
from hwpoisond.progress import Progress

#: Assumed RAM when --total-ram is not given (for budget.max_retired_fraction).
DEFAULT_TOTAL_RAM_BYTES = 256 * 1024**3
#: Bytes read per block handed to LineParser.feed_block (cut at a line end).
READ_BLOCK_BYTES = 1 << 20
#: End of input: due retries are drained, at most this many expire() rounds (each one advances
#: time to the next due item, so this only guards against a bug looping forever).
MAX_DRAIN_ROUNDS = 1_000_000
_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a fixed, well-spread hash for the deterministic failure draw."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def attempt_fails(pfn: int, action: str, attempt: int, fail_rate: float) -> bool:
    if fail_rate <= 0.0:
        return False
    draw = _mix64((pfn << 8) ^ (attempt << 2) ^ (1 if action == "hard" else 0))
    return draw / 2**64 < fail_rate


@dataclass
class Replay:
    """One host's replay: state, params and what came out."""

    params: PolicyParams
    fail_rate: float
    housekeeping_seconds: float
    state: PolicyState = field(default_factory=new_state)
    events: int = 0
    pages_offlined: list[int] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    budget_exhausted: bool = False
    #: Lines with a memory-error word that no parser accepted, and the first few of them.
    unparsed_candidates: int = 0
    unparsed_examples: list[str] = field(default_factory=list)
    #: "wall clock" and/or "seconds since boot": the time bases of the events fed.
    time_bases: set[str] = field(default_factory=set)
    _due: float | None = None
    _next_housekeeping: float | None = None

    def feed(self, events: list[Event]) -> None:
        params = self.params
        decide = policy.decide
        housekeeping_seconds = self.housekeeping_seconds
        self.events += len(events)
        for ev in events:
            t = ev.time
            if t is not None:
                # Due retries and the housekeeping tick, both in event time (rarely due: two
                # comparisons per event).
                due = self._due
                if due is not None and t >= due:
                    self._drain(t)
                nh = self._next_housekeeping
                if nh is None:
                    self._next_housekeeping = t + housekeeping_seconds
                elif t >= nh:
                    self._next_housekeeping = t + housekeeping_seconds
                    self.state, out = policy.expire(self.state, t, params)
                    if out:
                        self._handle(out)
            self.state, out = decide(self.state, ev, params)
            if out:
                self._handle(out)

    def finish(self) -> None:
        """End of input: let the remaining retries and deferred offlines come due."""
        for _ in range(MAX_DRAIN_ROUNDS):
            due = next_due(self.state)
            if due is None:
                break
            before = (len(self.state.retries), len(self.state.deferred), len(self.actions))
            self._drain(due)
            after = (len(self.state.retries), len(self.state.deferred), len(self.actions))
            if after == before:
                break  # nothing can move any more (e.g. deferred pages whose unit escalated)

    def _drain(self, until: float) -> None:
        due = self._due
        while due is not None and due <= until:
            self.state, out = policy.expire(self.state, due, self.params)
            if out:
                self._handle(out)
            new_due = next_due(self.state)
            if new_due == due and not out:
                break
            due = new_due
        self._due = next_due(self.state)

    def _handle(self, decisions: tuple[Decision, ...]) -> None:
        pending = list(decisions)
        while pending:
            d = pending.pop(0)
            if d.kind == "offline":
                assert d.pfn is not None and d.action is not None
                self.actions.append(
                    {"at": d.at, "pfn": d.pfn, "action": d.action, "reason": d.reason}
                )
                if d.action == "account":
                    result = ActionResult(d.pfn, "account", "accounted", d.at, attempt=d.attempt)
                elif attempt_fails(d.pfn, d.action, d.attempt, self.fail_rate):
                    result = ActionResult(
                        d.pfn, d.action, "failed", d.at, errno=errno.EBUSY, attempt=d.attempt
                    )
                else:
                    result = ActionResult(
                        d.pfn, d.action, "offlined", d.at, verified=True, attempt=d.attempt
                    )
                    self.pages_offlined.append(d.pfn)
                self.state, more = policy.on_result(self.state, result, self.params)
                pending.extend(more)
            elif d.kind == "escalate":
                self.escalations.append(
                    {"at": d.at, "label": d.label, "mc": d.mc, "reason": d.reason}
                )
            else:
                self.budget_exhausted = True
        self._due = next_due(self.state)

    def summary(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "pages_offlined": self.pages_offlined,
            "actions": self.actions,
            "escalations": self.escalations,
            "budget_exhausted": self.budget_exhausted,
            # Not in shared/DESIGN.md's list yet (issue 13 asks for it): an added key, so
            # consumers of the listed ones are unaffected.
            "unparsed_candidate_lines": self.unparsed_candidates,
        }


def _blocks(f: TextIO) -> Iterator[str]:
    """The file's text in blocks that end at a line end (the last one may not)."""
    rest = ""
    while True:
        chunk = f.read(READ_BLOCK_BYTES)
        if not chunk:
            if rest:
                yield rest
            return
        cut = chunk.rfind("\n")
        if cut < 0:
            rest += chunk
            continue
        yield rest + chunk[: cut + 1]
        rest = chunk[cut + 1 :]


def replay_file(
    run: Replay, f: TextIO, progress: Progress | None = None, year: int | None = None
) -> None:
    parser = LineParser()
    prime_year(parser, year, f)
    lineno = 1
    for block in _blocks(f):
        run.feed(parser.feed_block(block, lineno))
        lineno += block.count("\n")
        if progress is not None:
            progress.update(lineno, f"{parser.stats.lines} lines read")
    run.feed(parser.flush())
    run.time_bases |= parser.time_bases
    run.unparsed_candidates += parser.stats.unparsed_candidates
    room = UNPARSED_EXAMPLES_KEPT - len(run.unparsed_examples)
    run.unparsed_examples += parser.stats.unparsed_examples[: max(room, 0)]


def replay_db(run: Replay, path: str) -> bool:
    """Feed a rasdaemon database's events to `run`; False (after saying why) when it cannot be
    read. Rows that do not convert are reported on stderr, never dropped in silence."""
    try:
        db = read_rasdaemon_db(path)
    except (RasdaemonDbError, sqlite3.Error) as e:
        print(
            f"hwpoisond replay: {path}: cannot read it as rasdaemon's database: {e}",
            file=sys.stderr,
        )
        return False
    run.feed(db.events)
    if db.events:
        run.time_bases.add("wall clock")
    bad = sum(db.malformed.values())
    if bad:
        print(
            f"hwpoisond replay: warning: {path}: {bad} rasdaemon row(s) could not be read and "
            f"are not in this result (first: {db.first_malformed})",
            file=sys.stderr,
        )
    return True


def _line_count_hint(path: str) -> int | None:
    """An estimate of a file's lines for the progress bar (size / 150 bytes, a trace line's
    typical length); None for pipes and when the bar would not be shown."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    return max(1, size // 150) if size else None


def resolve_params(args: argparse.Namespace, cfg: config.Config) -> PolicyParams:
    total_ram = getattr(args, "total_ram", None)
    ram = config.parse_size(total_ram) if total_ram is not None else DEFAULT_TOTAL_RAM_BYTES
    if args.policy is None:
        return config.policy_params(cfg, ram)
    # --policy NAME: the preset alone, for comparison; our budget applies to the default preset,
    # and to the others only when the config file sets a [budget] section (the tools they
    # imitate have none).
    only_preset = cfg.model_copy(update={"policy": config.PolicyConfig(preset=args.policy)})
    params = config.policy_params(only_preset, ram)
    if args.policy != "default" and "budget" not in cfg.model_fields_set:
        params = with_overrides(params, budget=BudgetParams())
    return params


def _human(summary: dict[str, Any], unparsed_candidates: int, out: TextIO) -> None:
    if "file" in summary:
        print(f"{summary['file']}:", file=out)
    actions = summary["actions"]
    print(f"  events parsed:    {summary['events']}", file=out)
    print(f"  offline actions:  {len(actions)}", file=out)
    print(f"  pages offlined:   {len(summary['pages_offlined'])}", file=out)
    for a in actions[:20]:
        print(f"    t={a['at']:.6f} pfn={a['pfn']:#x} {a['action']}: {a['reason']}", file=out)
    if len(actions) > 20:
        print(f"    ... {len(actions) - 20} more (use --json)", file=out)
    print(f"  escalations:      {len(summary['escalations'])}", file=out)
    for e in summary["escalations"]:
        print(f"    t={e['at']:.6f} {e['reason']}", file=out)
    print(f"  budget exhausted: {'yes' if summary['budget_exhausted'] else 'no'}", file=out)
    if unparsed_candidates:
        print(f"  lines not understood: {unparsed_candidates}", file=out)


def main(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.config)
        params = resolve_params(args, cfg)
    except config.ConfigError as e:
        for problem in e.problems:
            print(f"hwpoisond replay: {e.source}: {problem}", file=sys.stderr)
        return exitcodes.CONFIG
    except ValueError as e:
        print(f"hwpoisond replay: --total-ram: {e}", file=sys.stderr)
        return exitcodes.USAGE
    if not 0.0 <= args.fail_rate <= 1.0:
        print("hwpoisond replay: --fail-rate must be between 0 and 1", file=sys.stderr)
        return exitcodes.USAGE
    year = getattr(args, "year", None)
    if year is not None and year not in YEAR_RANGE:
        print(f"hwpoisond replay: --year {year}: expected 1970 to 9999", file=sys.stderr)
        return exitcodes.USAGE
    if args.files.count("-") > 1:
        print("hwpoisond replay: '-' (stdin) can be given once", file=sys.stderr)
        return exitcodes.USAGE
    files: list[TextIO | None] = []  # None: a rasdaemon database, read by replay_db
    try:
        for path in args.files:
            if path != "-" and is_sqlite(path):
                files.append(None)
                continue
            if path == "-":
                fd = sys.stdin.fileno()
                files.append(open(fd, encoding="utf-8", errors="replace", closefd=False))  # noqa: SIM115
                continue
            try:
                files.append(open(path, encoding="utf-8", errors="replace"))  # noqa: SIM115
            except OSError as e:
                print(f"hwpoisond replay: {path}: {e.strerror or e}", file=sys.stderr)
                return exitcodes.NOINPUT
        housekeeping = cfg.daemon.housekeeping_interval

        def new_run() -> Replay:
            return Replay(params, args.fail_rate, housekeeping)

        runs: list[tuple[str | None, Replay]] = []
        run = new_run()
        for index, (path, f) in enumerate(zip(args.files, files, strict=True), 1):
            if args.per_file:
                run = new_run()
            # Lines are what a log is measured in; the bar is per file, with the file count.
            progress = Progress(
                f"replay {index}/{len(files)} {os.path.basename(path)}",
                total=_line_count_hint(path),
            )
            try:
                if f is None:
                    if not replay_db(run, path):
                        return exitcodes.NOINPUT
                else:
                    replay_file(run, f, progress, year)
            except OSError as e:
                print(f"hwpoisond replay: {path}: {e.strerror or e}", file=sys.stderr)
                return exitcodes.NOINPUT
            finally:
                progress.done()
            if args.per_file:
                run.finish()
                runs.append((path, run))
        if not args.per_file:
            run.finish()
            runs.append((None, run))
    finally:
        for f in files:
            if f is not None:
                f.close()
    for path, r in runs:
        if len(r.time_bases) > 1:
            # Seconds since boot and wall-clock seconds are not one timeline: the policy's
            # windows over them mean nothing.
            where = f"{path}: " if path is not None else ""
            print(
                f"hwpoisond replay: warning: {where}the input mixes wall-clock times with "
                "seconds since boot; windows across the two are not meaningful (replay the "
                "files separately, or use logs with wall-clock times such as journalctl -o "
                "short-iso)",
                file=sys.stderr,
            )
    unparsed = sum(r.unparsed_candidates for _, r in runs)
    if unparsed:
        # The one answer a post-mortem must not get silently: "nothing happened" from a log in
        # a form we do not read.
        example = next(e for _, r in runs for e in r.unparsed_examples)
        print(
            f"hwpoisond replay: warning: {unparsed} line(s) about memory errors were not "
            f"understood and are not in this result (first: {example[:160]!r}); "
            "`hwpoisond parse --stats` lists them",
            file=sys.stderr,
        )
    for path, r in runs:
        summary = r.summary()
        if path is not None:
            summary = {"file": path, **summary}
        if args.json:
            sys.stdout.write(json.dumps(summary, separators=(",", ":")) + "\n")
        else:
            _human(summary, r.unparsed_candidates, sys.stdout)
    return exitcodes.OK
