"""Command line: argument parsing and dispatch only.

Rule: this module parses arguments and hands them to one `hwpoisond.commands.<name>.main(args)`;
it holds no behaviour of its own, so every subcommand can be tested without a shell.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hwpoisond import __version__, exitcodes

# Subcommand → module under hwpoisond.commands. Imported lazily: `parse` must not pay for
# prometheus-client or systemd, and `status` must not start anything.
_COMMANDS = {
    "run": "run",
    "status": "status",
    "parse": "parse",
    "replay": "replay",
    "check-config": "check_config",
    "simulate": "simulate",
    "version": "version",
}

LOG_LEVELS = ("debug", "info", "warning", "error")


YEAR_HELP = (
    "year of the first timestamp that has none (syslog, journalctl -o short); default: derived "
    "from the file's modification time (now, for stdin)"
)


def _common() -> argparse.ArgumentParser:
    """Options every subcommand accepts after its name (DESIGN.md, "Contracts")."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="resolve every kernel path (sys/…, proc/…, tracefs) under DIR (default: /)",
    )
    common.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="directory of the state database (default: from the config, /var/lib/hwpoisond)",
    )
    common.add_argument("--config", default=None, metavar="FILE", help="TOML configuration file")
    common.add_argument(
        "--log-level", default=None, choices=LOG_LEVELS, help="override the configured log level"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="hwpoisond",
        description="Watch memory for hardware errors and retire failing pages before they crash "
        "the machine.",
    )
    parser.add_argument("--version", action="version", version=f"hwpoisond {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("run", parents=[common], help="run the daemon")

    p = sub.add_parser("status", parents=[common], help="show what the daemon saw and did")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("parse", parents=[common], help="parse kernel text into JSON events")
    p.add_argument("files", nargs="*", metavar="FILE", help="input files (default: stdin)")
    p.add_argument("--stats", action="store_true", help="print counts to stderr at the end")
    p.add_argument("--year", type=int, default=None, help=YEAR_HELP)

    p = sub.add_parser(
        "replay", parents=[common], help="run historical logs through the policy (no kernel writes)"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="input files ('-' is stdin)")
    p.add_argument("--year", type=int, default=None, help=YEAR_HELP)
    p.add_argument(
        "--policy",
        default=None,
        choices=(
            "default",
            "rasdaemon",
            "mcelog",
            "kernel-cec",
            "kernel-cec-amd",
            "none",
            "first-ce",
        ),
        help="policy preset alone, ignoring the config's [policy] keys (default: the config's "
        "policy); presets other than default run without a budget unless the config sets "
        "[budget]",
    )
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument(
        "--fail-rate",
        type=float,
        default=0.0,
        metavar="P",
        help="fraction of offline attempts that fail (deterministic, seeded by pfn)",
    )
    p.add_argument("--per-file", action="store_true", help="treat each file as a separate host")
    p.add_argument(
        "--total-ram",
        default=None,
        metavar="SIZE",
        help="RAM of the replayed host, for budget.max_retired_fraction (default: 256GiB)",
    )

    p = sub.add_parser("check-config", parents=[common], help="validate a configuration file")
    p.add_argument("file", nargs="?", metavar="FILE", help="the file (default: --config)")

    p = sub.add_parser(
        "simulate", parents=[common], help="run the real daemon against a simulated faulty machine"
    )
    p.add_argument("scenario", nargs="?", default=None, metavar="SCENARIO")
    p.add_argument("--speed", type=float, default=None, metavar="N")
    p.add_argument("--duration", default=None, metavar="D")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object")

    sub.add_parser("version", parents=[common], help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code) if isinstance(e.code, int) else exitcodes.USAGE
    module = importlib.import_module(f"hwpoisond.commands.{_COMMANDS[args.command]}")
    try:
        code: int = module.main(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `hwpoisond parse big.log | head`: the reader left; that is not our failure.
        sys.stderr.close()
        return exitcodes.OK
    return code
