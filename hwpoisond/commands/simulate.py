"""`hwpoisond simulate`: not yet implemented (see the open issues)."""

from __future__ import annotations

import argparse
import sys

from hwpoisond import exitcodes


def main(args: argparse.Namespace) -> int:
    print("hwpoisond simulate: not yet implemented", file=sys.stderr)
    return exitcodes.USAGE
