"""Progress lines go to a terminal only, at a bounded rate."""

from __future__ import annotations

import errno
import io
import os
import pty
import select

from hwpoisond.progress import Progress


def _read_to_hangup(master: int, limit_seconds: float = 10.0) -> str:
    """Everything written to the pty, read until the closed slave side hangs up.

    One os.read() may return only part of what was written (the tty layer hands data over in
    chunks), so a test that reads once sees a truncated text on a busy machine. With the slave
    closed, Linux returns the buffered bytes and then EIO: that is the end, not a timer.
    """
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], limit_seconds)
        assert ready, f"pty gave no end within {limit_seconds} s; read so far: {b''.join(chunks)!r}"
        try:
            chunk = os.read(master, 4096)
        except OSError as e:
            assert e.errno == errno.EIO, e
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode()


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
    text = _read_to_hangup(master)
    assert "replay [" in text and " 50.0%" in text and "3 events" in text
    assert text.endswith("\r\x1b[K")


def test_rate_limited() -> None:
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        p = Progress("x", total=10, stream=tty, interval_seconds=3600)
        p._next = 0.0  # the first update may print; the next ones are within the interval
        for i in range(10):
            p.update(i)
    text = _read_to_hangup(master)
    assert text.count("\r") == 1
