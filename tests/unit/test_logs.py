"""Log rate limiting and the journald field mapping."""

from __future__ import annotations

import logging

from hwpoisond.logs import MESSAGE_IDS, RateLimitFilter, _JournalExtras


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("hwpoisond", logging.WARNING, __file__, 1, msg, None, None)


def test_repeats_are_dropped_then_counted() -> None:
    clock = _Clock()
    f = RateLimitFilter(60, clock=clock)
    assert f.filter(_record("tracefs unavailable"))
    assert not f.filter(_record("tracefs unavailable"))
    assert not f.filter(_record("tracefs unavailable"))
    assert f.filter(_record("another message"))
    clock.now = 61
    rec = _record("tracefs unavailable")
    assert f.filter(rec)
    assert rec.getMessage() == "tracefs unavailable (repeated 2 more times)"


def test_zero_interval_disables_limiting() -> None:
    f = RateLimitFilter(0)
    assert all(f.filter(_record("x")) for _ in range(5))


def test_key_table_is_bounded() -> None:
    f = RateLimitFilter(60, clock=_Clock(), max_keys=10)
    for i in range(100):
        f.filter(_record(f"m{i}"))
    assert len(f._seen) == 10


def test_journal_fields() -> None:
    rec = _record("page 0x7654 offlined")
    rec.message_id = "page_offlined"
    rec.fields = {"pfn": "0x7654", "label": None}
    assert _JournalExtras().filter(rec)
    assert getattr(rec, "MESSAGE_ID") == MESSAGE_IDS["page_offlined"].hex  # noqa: B009
    assert getattr(rec, "HWPOISOND_PFN") == "0x7654"  # noqa: B009
    assert getattr(rec, "HWPOISOND_LABEL") == ""  # noqa: B009
