"""The collector renders a snapshot into the exposition we document, and nothing else."""

from __future__ import annotations

import pytest

from hwpoisond.metrics import (
    MAX_LABEL_VALUE_CHARS,
    Budget,
    DimmErrors,
    EdacDimmCounts,
    EdacMcCounts,
    Exporter,
    LatencyHistogram,
    MetricsSnapshot,
    SourceHealth,
)
from tests.unit.metrics.samples import Samples, populated_snapshot, samples_of, value


def scrape(snapshot: MetricsSnapshot) -> Samples:
    return samples_of(Exporter(snapshot=snapshot).render().decode())


def test_populated_snapshot_values_and_labels() -> None:
    s = scrape(populated_snapshot())
    assert (
        value(s, "hwpoisond_memory_errors_total", source="mc_event", error_severity="corrected")
        == 41
    )
    assert (
        value(s, "hwpoisond_memory_errors_total", source="mce_record", error_severity="deferred")
        == 2
    )
    dimm0 = "CPU_SrcID#0_MC#0_Chan#0_DIMM#0"
    assert (
        value(
            s, "hwpoisond_dimm_memory_errors_total", mc="0", dimm=dimm0, error_severity="corrected"
        )
        == 40
    )
    # Unattributed errors keep a bounded "unknown" label instead of vanishing.
    assert (
        value(
            s,
            "hwpoisond_dimm_memory_errors_total",
            mc="unknown",
            dimm="unknown",
            error_severity="corrected",
        )
        == 7
    )
    assert value(s, "hwpoisond_edac_corrected_errors_total", mc="1") == 5
    assert value(s, "hwpoisond_edac_noinfo_uncorrected_errors_total", mc="1") == 1
    assert value(s, "hwpoisond_edac_csrow_corrected_errors_total", mc="1", csrow="0") == 4
    assert (
        value(
            s,
            "hwpoisond_edac_csrow_channel_corrected_errors_total",
            mc="1",
            csrow="0",
            channel="1",
            dimm="DIMM_B1",
        )
        == 1
    )
    assert (
        value(
            s,
            "hwpoisond_edac_dimm_corrected_errors_total",
            mc="0",
            entry="dimm0",
            dimm=dimm0,
            location="channel 0 slot 0",
        )
        == 37
    )
    assert value(s, "hwpoisond_edac_mc_size_bytes", mc="0") == 32 * 1024**3
    assert (
        value(s, "hwpoisond_edac_mc_info", mc="0", mc_name="Skylake Socket#0 IMC#0", layout="dimm")
        == 1
    )
    assert value(s, "hwpoisond_edac_mc_info", mc="1", mc_name="i5000", layout="csrow") == 1
    assert value(s, "hwpoisond_hardware_corrupted_bytes") == 12288
    assert value(s, "hwpoisond_node_memory_failure_pages_total", node="1", result="ignored") == 2
    # The kernel prints results capitalised ("Recovered"); the label is lower case.
    assert (
        value(
            s,
            "hwpoisond_kernel_uncorrected_errors_total",
            result="recovered",
            page_type="free buddy page",
        )
        == 1
    )
    assert value(s, "hwpoisond_offline_actions_total", action="soft", result="failed") == 2
    assert value(s, "hwpoisond_retired_pages") == 3
    assert value(s, "hwpoisond_retired_bytes") == 3 * 4096
    assert value(s, "hwpoisond_tracked_pages") == 120
    assert value(s, "hwpoisond_pages_over_threshold") == 2
    assert value(s, "hwpoisond_dimm_escalations_total", mc="0", dimm=dimm0) == 2
    assert value(s, "hwpoisond_dimm_replacement_recommended", mc="0", dimm=dimm0) == 1
    assert value(s, "hwpoisond_dimm_replacement_recommended", mc="1", dimm="DIMM_B1") == 0
    assert value(s, "hwpoisond_budget_remaining_bytes") == 256 * 1024**2 - 3 * 4096
    assert value(s, "hwpoisond_budget_exhausted") == 0
    assert value(s, "hwpoisond_source_up", source="journald") == 0
    assert value(s, "hwpoisond_source_available", source="memory_state") == 0
    assert value(s, "hwpoisond_parse_failures_total", source="tracefs") == 1
    assert value(s, "hwpoisond_last_event_timestamp_seconds", source="tracefs") == 1_700_000_090
    assert ("hwpoisond_last_event_timestamp_seconds", frozenset({("source", "journald")})) not in s
    assert (
        value(
            s,
            "hwpoisond_kernel_settings_info",
            early_kill="0",
            recovery="1",
            enable_soft_offline="unknown",
            cec_present="1",
            cec_threshold="2",
        )
        == 1
    )
    assert value(s, "hwpoisond_database_corruption_recoveries_total") == 1
    assert value(s, "hwpoisond_dimm_fingerprint_changes_total") == 2
    assert value(s, "hwpoisond_snapshot_timestamp_seconds") == 1_700_000_100.5
    assert value(s, "hwpoisond_start_time_seconds") == 1_700_000_000


def test_histogram_buckets_are_cumulative() -> None:
    s = scrape(populated_snapshot())
    name = "hwpoisond_event_decision_latency_seconds"
    # Observations 0.0004, 0.003, 0.003, 0.2, 30.0.
    assert value(s, name + "_bucket", le="0.0005") == 1
    assert value(s, name + "_bucket", le="0.005") == 3
    assert value(s, name + "_bucket", le="0.25") == 4
    assert value(s, name + "_bucket", le="10.0") == 4
    assert value(s, name + "_bucket", le="+Inf") == 5
    assert value(s, name + "_count") == 5
    assert value(s, name + "_sum") == pytest.approx(30.2064)


def test_observe_puts_a_value_on_a_bound_into_that_bucket() -> None:
    h = LatencyHistogram(bounds_seconds=(0.1, 1.0), counts=(0, 0, 0))
    h = h.observe(0.1).observe(0.1000001).observe(1.0).observe(5.0)
    assert h.counts == (1, 2, 1)
    assert h.sum_seconds == pytest.approx(6.2000001)


@pytest.mark.parametrize(
    ("bounds", "counts"), [((0.1, 1.0), (0, 0)), ((1.0, 0.1), (0, 0, 0)), ((0.1, 0.1), (0, 0, 0))]
)
def test_histogram_rejects_malformed_buckets(
    bounds: tuple[float, ...], counts: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError):
        LatencyHistogram(bounds_seconds=bounds, counts=counts)


def test_empty_snapshot_leaves_out_unknowns_instead_of_zeros() -> None:
    s = scrape(MetricsSnapshot())
    names = {name for name, _ in s}
    assert "hwpoisond_hardware_corrupted_bytes" not in names
    assert "hwpoisond_budget_remaining_bytes" not in names
    assert "hwpoisond_snapshot_timestamp_seconds" not in names
    assert not any(n.startswith("hwpoisond_kernel_settings") for n in names)
    assert value(s, "hwpoisond_retired_pages") == 0
    assert value(s, "hwpoisond_event_decision_latency_seconds_count") == 0
    assert ("hwpoisond_build_info", frozenset()) not in s  # it carries version labels
    assert any(n == "hwpoisond_build_info" for n in names)


def test_duplicate_label_sets_are_summed_into_one_series() -> None:
    snap = MetricsSnapshot(
        errors_by_dimm=(
            DimmErrors(None, None, "corrected", 2),
            DimmErrors(None, "", "corrected", 3),
            DimmErrors(2, "A1", "corrected", 1),
        )
    )
    s = scrape(snap)
    labels = {"mc": "unknown", "dimm": "unknown", "error_severity": "corrected"}
    assert value(s, "hwpoisond_dimm_memory_errors_total", **labels) == 5
    assert value(
        s, "hwpoisond_dimm_memory_errors_total", mc="2", dimm="A1", error_severity="corrected"
    )


def test_firmware_label_is_truncated_and_escaped() -> None:
    hostile = 'DIMM "A1"\\\n' + "x" * 500
    snap = MetricsSnapshot(
        edac=(
            EdacMcCounts(
                0, "skx", 1, 0, 0, 0, dimms=(EdacDimmCounts("rank0", hostile, "loc", 1, 0),)
            ),
        )
    )
    s = scrape(snap)
    ((_, labels),) = [k for k in s if k[0] == "hwpoisond_edac_dimm_corrected_errors_total"]
    dimm = dict(labels)["dimm"]
    assert dimm == hostile[:MAX_LABEL_VALUE_CHARS]
    assert value(s, "hwpoisond_edac_mc_info", mc="0", mc_name="skx", layout="rank") == 1


def test_budget_remaining_never_negative() -> None:
    over = Budget(
        used_bytes=10,
        limit_bytes=4,
        offlines_last_hour=0,
        offlines_per_hour_limit=1,
        exhausted=True,
    )
    s = scrape(MetricsSnapshot(budget=over))
    assert value(s, "hwpoisond_budget_remaining_bytes") == 0
    assert value(s, "hwpoisond_budget_exhausted") == 1


def test_publish_swaps_what_render_shows() -> None:
    exporter = Exporter(snapshot=MetricsSnapshot(tracked_pages=1))
    assert value(samples_of(exporter.render().decode()), "hwpoisond_tracked_pages") == 1
    exporter.publish(
        MetricsSnapshot(tracked_pages=9, sources=(SourceHealth("tracefs", True, True),))
    )
    s = samples_of(exporter.render().decode())
    assert value(s, "hwpoisond_tracked_pages") == 9
    assert value(s, "hwpoisond_source_up", source="tracefs") == 1


def test_tls_files_must_come_in_pairs() -> None:
    with pytest.raises(ValueError):
        Exporter(port=0, tls_cert_file="/x.pem")


def test_unreadable_edac_counters_are_left_out_not_zeroed() -> None:
    snap = MetricsSnapshot(
        edac=(
            EdacMcCounts(
                3,
                None,
                ce_count=None,
                ue_count=4,
                ce_noinfo_count=None,
                ue_noinfo_count=0,
                dimms=(EdacDimmCounts("dimm0", None, None, None, 2),),
            ),
        )
    )
    s = scrape(snap)
    assert value(s, "hwpoisond_edac_uncorrected_errors_total", mc="3") == 4
    assert not any(name == "hwpoisond_edac_corrected_errors_total" for name, _ in s)
    assert not any(name == "hwpoisond_edac_dimm_corrected_errors_total" for name, _ in s)
    dimm = {"mc": "3", "entry": "dimm0", "dimm": "unknown", "location": "unknown"}
    assert value(s, "hwpoisond_edac_dimm_uncorrected_errors_total", **dimm) == 2
    assert value(s, "hwpoisond_edac_mc_info", mc="3", mc_name="unknown", layout="dimm") == 1


def test_memory_state_converters() -> None:
    from hwpoisond.metrics import kernel_settings, node_memory_failure_counts
    from hwpoisond.sources.memstate import CecState, MemoryState, NodeMemoryFailure

    state = MemoryState(
        hardware_corrupted_bytes=8192,
        mem_total_bytes=1 << 30,
        nodes=(NodeMemoryFailure(1, total=5, ignored=1, failed=None, delayed=0, recovered=4),),
        memory_failure_early_kill=1,
        memory_failure_recovery=1,
        enable_soft_offline=None,
        cec=CecState(present=None),
    )
    s = scrape(
        MetricsSnapshot(
            node_memory_failure=node_memory_failure_counts(state),
            kernel_settings=kernel_settings(state),
        )
    )
    nodes = {k: v for k, v in s.items() if k[0] == "hwpoisond_node_memory_failure_pages_total"}
    # `total` is the sum of the others, and an unreadable count is left out.
    assert {dict(labels)["result"]: v for (_, labels), v in nodes.items()} == {
        "ignored": 1,
        "delayed": 0,
        "recovered": 4,
    }
    info = {
        "early_kill": "1",
        "recovery": "1",
        "enable_soft_offline": "unknown",
        "cec_present": "unknown",
        "cec_threshold": "unknown",
    }
    assert value(s, "hwpoisond_kernel_settings_info", **info) == 1
