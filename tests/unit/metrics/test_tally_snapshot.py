"""The daemon's tallies reach the exposition: store failures, events held and given up."""

from __future__ import annotations

from hwpoisond import config as config_mod
from hwpoisond.core import state as core_state
from hwpoisond.metrics import Exporter
from hwpoisond.sources.base import SourceStatus
from hwpoisond.tally import Tally
from tests.unit.metrics.samples import samples_of, value


def test_store_degradation_is_exported() -> None:
    tally = Tally(start_time_seconds=1_700_000_000.0)
    tally.store_write_failures = 3
    tally.events_unstored = 11
    snap = tally.snapshot(
        now=1_700_000_010.0,
        policy_state=core_state.new_state(),
        params=config_mod.policy_params(config_mod.Config(), None),
        sources=[SourceStatus("tracefs", True, "reading")],
        parse_failures={"tracefs": 2},
        edac=None,
        memstate=None,
        events_held=40,
    )
    s = samples_of(Exporter(snapshot=snap).render().decode())
    assert value(s, "hwpoisond_store_write_failures_total") == 3
    assert value(s, "hwpoisond_events_unstored") == 40
    assert value(s, "hwpoisond_events_unstored_dropped_total") == 11
    assert value(s, "hwpoisond_parse_failures_total", source="tracefs") == 2
    # Filled by the daemon once the policy and the parsers count them; 0 until then.
    assert value(s, "hwpoisond_policy_untracked_events_total") == 0
    assert value(s, "hwpoisond_policy_not_offlinable_events_total") == 0
