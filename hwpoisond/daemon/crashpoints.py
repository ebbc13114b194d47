"""Named crash points for the kill -9 tests: the daemon's crash-safe ordering, made testable.

Rule: a no-op unless HWPOISOND_CRASH_AT names a point (`name` or `name:N`, the N-th time it is
reached, counting from 1); then the process SIGKILLs itself there, exactly as `kill -9` from
outside would, so a test can land a kill between any two side effects. Read once at import; the
cost on the hot path is one set lookup.
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("HWPOISOND_CRASH_AT", "")
_NAME, _, _NTH = _SPEC.partition(":")
_TARGET = int(_NTH) if _NTH.isdigit() else 1
_ARMED = frozenset({_NAME}) if _NAME else frozenset()
_seen = 0

#: Every point the daemon passes, in the order of one start and one step (tests iterate it).
POINTS = (
    "startup.store_opened",
    "startup.restored",
    "startup.reconciled",
    "startup.owed_written",
    "step.decided",
    "step.intents_recorded",
    "act.written",
    "act.results_recorded",
)


def crash_point(name: str) -> None:
    global _seen  # noqa: PLW0603 - one counter per process, by design
    if name in _ARMED:
        _seen += 1
        if _seen >= _TARGET:
            os.kill(os.getpid(), signal.SIGKILL)
