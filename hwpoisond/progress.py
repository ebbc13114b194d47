"""Progress for long work on a terminal: one self-overwriting stderr line, at most twice a second.

Rule: prints only when stderr is a terminal, never to stdout (so `--json` output stays clean),
and costs one clock read per update call when it is not time to print.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "",
        stream: TextIO | None = None,
        interval_seconds: float = 0.5,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.total = total
        self.unit = unit
        self.interval_seconds = interval_seconds
        self._started = time.monotonic()
        self._next = self._started + interval_seconds
        self._shown = False

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_seconds
        elapsed = now - self._started
        if self.total:
            pct = min(100.0, 100.0 * done / self.total)
            width = 24
            filled = int(width * pct / 100)
            head = f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {pct:5.1f}%"
        else:
            head = f"{self.label} {_human(done)}{self.unit}"
        rate = f" {_human(int(done / elapsed))}{self.unit}/s" if elapsed > 0 and self.unit else ""
        self.stream.write(f"\r{head}{rate}{' ' + detail if detail else ''}\x1b[K")
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _human(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)
