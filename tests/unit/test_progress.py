"""Progress lines go to a terminal only, at a bounded rate."""

from __future__ import annotations

import io
import os
import pty

from hwpoisond.progress import Progress


def test_silent_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("parse", total=100, unit="B", stream=out, interval_seconds=0)
    p.update(50)
    p.done()
    assert out.getvalue() == ""


def test_draws_a_bar_on_a_terminal_and_clears_it() -> None:
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        p = Progress("replay", total=200, unit="B", stream=tty, interval_seconds=0)
        p.update(100, "3 events")
        p.done()
    text = os.read(master, 4096).decode()
    os.close(master)
    assert "replay [" in text and " 50.0%" in text and "3 events" in text
    assert text.endswith("\r\x1b[K")


def test_rate_limited() -> None:
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        p = Progress("x", total=10, stream=tty, interval_seconds=3600)
        p._next = 0.0  # the first update may print; the next ones are within the interval
        for i in range(10):
            p.update(i)
    text = os.read(master, 4096).decode()
    os.close(master)
    assert text.count("\r") == 1
