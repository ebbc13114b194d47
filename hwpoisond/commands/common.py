"""Helpers the subcommands share: loading the config and reporting its problems.

Rule: turns CLI arguments into validated objects or an exit code; starts nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hwpoisond import config as config_mod
from hwpoisond import exitcodes


def report_config_error(err: config_mod.ConfigError) -> int:
    for problem in err.problems:
        print(f"hwpoisond: {err.source}: {problem}", file=sys.stderr)
    return exitcodes.CONFIG


def load_config(args: argparse.Namespace) -> config_mod.Config | int:
    """The validated config, or the exit code after reporting every problem on stderr."""
    try:
        return config_mod.load(args.config)
    except config_mod.ConfigError as e:
        return report_config_error(e)


def state_dir(args: argparse.Namespace, cfg: config_mod.Config) -> Path:
    return Path(args.state_dir or cfg.daemon.state_dir)
