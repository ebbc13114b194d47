"""The daemon process: `Daemon` (service.py) over the loop, start-up, pipeline and publishing.

Rule: this package sequences side effects and owns their order; it decides nothing (the core
does) and parses nothing (parse/ does).
"""

from hwpoisond.daemon.service import Daemon

__all__ = ["Daemon"]
