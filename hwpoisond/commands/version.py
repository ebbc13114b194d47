"""`hwpoisond version`: prints the version and the runtime it runs on."""

from __future__ import annotations

import argparse
import platform

from hwpoisond import __version__, exitcodes


def main(args: argparse.Namespace) -> int:
    print(f"hwpoisond {__version__} (Python {platform.python_version()})")
    return exitcodes.OK
