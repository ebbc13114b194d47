"""`hwpoisond check-config FILE`: validate a configuration file; exit 0 or 78.

Rule: reads and validates only; one line per problem on stderr, naming the key path.
"""

from __future__ import annotations

import argparse
import sys

from hwpoisond import config as config_mod
from hwpoisond import exitcodes
from hwpoisond.commands.common import report_config_error


def main(args: argparse.Namespace) -> int:
    path = args.file or args.config
    if path is None:
        print("hwpoisond check-config: name a FILE (or --config FILE)", file=sys.stderr)
        return exitcodes.USAGE
    try:
        config_mod.load(path)
    except config_mod.ConfigError as e:
        return report_config_error(e)
    print(f"{path}: ok")
    return exitcodes.OK
