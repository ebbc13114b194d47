"""systemd notification (sd_notify) and watchdog timing.

Rule: speaks the sd_notify protocol through systemd-python and nothing else; without
NOTIFY_SOCKET every call is a cheap no-op, so the daemon runs the same outside systemd.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import systemd.daemon as sd_daemon


class Notifier:
    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval_seconds = _watchdog_interval(environ)
        self._last_status: str | None = None

    def _send(self, message: str) -> None:
        if self.enabled:
            sd_daemon.notify(message)

    def ready(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        # STATUS= is cheap but not free (one datagram): send only when the line changes.
        if status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def reloaded(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC in seconds (sd_watchdog_enabled(3) recommends pinging at half the
    timeout), or None when no watchdog is configured for this process."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2 / 1_000_000 if value > 0 else None
