"""Logging set-up: structured journald records under systemd, readable stderr lines elsewhere.

Rule: configures handlers and carries the MESSAGE_IDs; it never decides what to log. Important
events carry a stable `MESSAGE_ID` (journalctl MESSAGE_ID=… finds them across versions) and
repeated identical messages are collapsed by `RateLimitFilter`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from systemd.journal import JournalHandler

# Stable identifiers for journalctl filtering (`journalctl MESSAGE_ID=<id>`); generated once for
# hwpoisond, never to change.
MESSAGE_IDS: Mapping[str, uuid.UUID] = {
    "page_offlined": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6071"),
    "offline_failed": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6072"),
    "uncorrected_error": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6073"),
    "dimm_escalation": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6074"),
    "budget_exhausted": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6075"),
    "database_recovered": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6076"),
    "memory_changed": uuid.UUID("6a3f1c2e8b7d4e0f9a1b2c3d4e5f6077"),
}

LOGGER_NAME = "hwpoisond"


def under_systemd(environ: Mapping[str, str] = os.environ) -> bool:
    """True when stderr is connected to the journal (systemd sets JOURNAL_STREAM for services)."""
    stream = environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        dev, ino = (int(x) for x in stream.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


class RateLimitFilter(logging.Filter):
    """Lets the first of a run of identical messages through, drops repeats within
    `interval_seconds`, and reports the number dropped on the next one that passes."""

    def __init__(
        self,
        interval_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1024,
    ) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval_seconds <= 0:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        prev = self._seen.get(key)
        if prev is not None and now - prev[0] < self.interval_seconds:
            self._seen[key] = (prev[0], prev[1] + 1)
            return False
        suppressed = prev[1] if prev is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        if suppressed:
            record.msg = f"{record.getMessage()} (repeated {suppressed} more times)"
            record.args = None
        return True


class _JournalExtras(logging.Filter):
    """Turns `extra={"message_id": "page_offlined", "fields": {...}}` into journald fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        message_id = str(getattr(record, "message_id", ""))
        if message_id in MESSAGE_IDS:
            record.MESSAGE_ID = MESSAGE_IDS[message_id].hex
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        for key, value in fields.items():
            setattr(record, f"HWPOISOND_{key.upper()}", "" if value is None else str(value))
        return True


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def setup(level: str, rate_limit_seconds: float, force_stderr: bool = False) -> logging.Logger:
    """Configure the `hwpoisond` logger; returns it. Safe to call again (SIGHUP)."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler: logging.Handler
    if under_systemd() and not force_stderr:
        handler = JournalHandler(SYSLOG_IDENTIFIER="hwpoisond")
        handler.addFilter(_JournalExtras())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_StderrFormatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(RateLimitFilter(rate_limit_seconds))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger
