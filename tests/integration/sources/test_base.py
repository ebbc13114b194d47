"""Every event source honours the daemon's contract (mypy checks the Protocol; this checks the
behaviour: open() on an empty root says why it is unavailable, and nothing raises)."""

from __future__ import annotations

from pathlib import Path

from hwpoisond.kernelfs import KernelFS
from hwpoisond.sources.base import EventSource, SourceStatus
from hwpoisond.sources.journald import JournaldSource
from hwpoisond.sources.tracefs import TracefsSource


def test_event_sources_on_an_empty_root_are_unavailable_with_a_reason(tmp_path: Path) -> None:
    kfs = KernelFS(tmp_path)
    sources: list[EventSource] = [TracefsSource(kfs), JournaldSource(kfs)]
    for src in sources:
        assert src.status() == SourceStatus(src.name, False, "not opened yet")
        st = src.open()
        assert st.name == src.name
        assert not st.available
        assert st.reason
        assert src.status() == st
        assert src.fileno() is None
        assert src.read_events() == []
        src.close()
        assert src.status() == SourceStatus(src.name, False, "closed")
    assert sorted(s.name for s in sources) == ["journald", "tracefs"]
