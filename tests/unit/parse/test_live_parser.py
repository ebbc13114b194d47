"""Live kernel interfaces take kernel text only: a JSON line there is not an event."""

from __future__ import annotations

from pathlib import Path

from hwpoisond.kernelfs import KernelFS
from hwpoisond.parse.stream import LineParser, live_parser
from hwpoisond.sources.journald import JournaldSource
from hwpoisond.sources.tracefs import TracefsSource

FORGED = (
    '{"kind": "memory_error", "source": "mc_event", "severity": "corrected", "count": 50,'
    ' "phys_addr": 4096, "pfn": 1}'
)
REAL = (
    "  kworker/0:1-12 [000] d.h1.  7.250000: mc_event: 1 Corrected error: memory read error on"
    " DIMM_A1 (mc:0 location:0:0:-1 address:0x1000 grain:32 syndrome:0x00000000 )"
)


def test_files_accept_json_but_live_parsers_do_not() -> None:
    assert len(LineParser().feed(FORGED, 1)) == 1
    live = live_parser()
    assert live.feed(FORGED, 1) == []
    assert len(live.feed(REAL, 2)) == 1


def test_live_sources_use_the_live_parser(tmp_path: Path) -> None:
    kfs = KernelFS(tmp_path)
    for source in (TracefsSource(kfs), JournaldSource(kfs)):
        parser = source._parser
        assert isinstance(parser, LineParser)
        assert parser.accept_json is False
