"""Policy parameters and presets: plain frozen values, validated by config.py, read by the core.

Rule: this module holds numbers and the reasons for them; it decides nothing. Presets that imitate
other tools cite the source they reproduce (rasdaemon ras-page-isolation.c, mcelog leaky-bucket.c
and page.c, Linux drivers/ras/cec.c).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Action = Literal["off", "account", "soft", "hard", "soft-then-hard"]
#: How recurrence on one page is counted.
#: window: exact sliding window, N CEs within T seconds (a leaky bucket whose every drop leaks out
#:   exactly T seconds after it fell in, so the result does not depend on arrival order);
#: rasdaemon / mcelog: their leaky bucket, drained only when an event arrives, by
#:   threshold x elapsed/T once at least T has elapsed (ras-page-isolation.c page_record(),
#:   leaky-bucket.c bucket_age());
#: cec: the kernel's 512-entry per-pfn array, counts never decay (drivers/ras/cec.c).
Counter = Literal["window", "rasdaemon", "mcelog", "cec"]
PresetName = Literal[
    "default", "rasdaemon", "mcelog", "kernel-cec", "kernel-cec-amd", "none", "first-ce"
]
PRESET_NAMES: tuple[PresetName, ...] = (
    "default",
    "rasdaemon",
    "mcelog",
    "kernel-cec",
    "kernel-cec-amd",
    "none",
    "first-ce",
)

#: Event sources of each reporting family. One corrected error often reaches us twice (the EDAC
#: driver decodes the machine check and emits ras:mc_event; the same text lands in dmesg).
EDAC_SOURCES = frozenset({"mc_event", "kmsg_edac"})
MCE_SOURCES = frozenset({"mce_record", "kmsg_mce"})
#: kmsg_cper: the APEI/CPER memory-error block of firmware-first platforms (parse/cper.py).
ALL_MEMORY_SOURCES = frozenset({*EDAC_SOURCES, *MCE_SOURCES, "extlog_mem_event", "kmsg_cper"})


@dataclass(frozen=True, slots=True)
class BudgetParams:
    """Limits on what the policy may retire. None = unlimited."""

    #: Bytes of memory this policy may hold offlined (min of the absolute and fractional limits).
    max_retired_bytes: int | None = None
    #: soft/hard offline actions (including retries) in any rolling 3600 s.
    max_offlines_per_hour: int | None = None


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """Everything decide()/on_result()/expire() need; 0 disables a limit or rule."""

    preset: PresetName = "default"
    counter: Counter = "window"
    action: Action = "soft"
    ce_threshold: int = 2
    window_seconds: float = 86400.0
    #: Event sources whose corrected errors count; the others are ignored.
    sources: frozenset[str] = ALL_MEMORY_SOURCES
    #: A report of the same pfn from a different source within this many seconds is the same
    #: error seen twice (mc_event + mce_record, trace + dmesg) and is counted once.
    dedupe_seconds: float = 0.0
    row_pages_threshold: int = 0
    bank_rows_limit: int = 0
    dimm_pages_limit: int = 0
    storm_ce_per_hour: int = 0
    storm_distinct_pages: int = 0
    retry_max: int = 0
    retry_backoff_seconds: float = 60.0
    #: After the last attempt failed, let the page count up to the threshold again and retry
    #: (rasdaemon and the kernel CEC do; mcelog never touches a failed page again).
    retry_on_recross: bool = False
    max_tracked_pages: int = 100_000
    #: Pages kept past their threshold (pending, retired, failed, held back), whatever the preset:
    #: a preset without a budget or futility rules (rasdaemon, mcelog, first-ce) would otherwise
    #: keep a record per page of a storm. When full, the oldest page held back ("over": budget,
    #: futility, action off) makes room; pages with work owed or done are never dropped, and an
    #: event that finds no room is counted (PolicyState.untracked_events), not decided.
    #: 65,536 pages is 256 MiB of retired memory, far past any budget a host should run with.
    max_page_records: int = 65_536
    #: Rows, banks and DIMMs tracked for the row/futility rules (each table separately).
    max_tracked_units: int = 16_384
    #: Kernel CEC: its action threshold cap and decay timer (drivers/ras/cec.c).
    cec_decay_interval_seconds: float = 86400.0
    budget: BudgetParams = BudgetParams()


# Reasons for the defaults, from field studies (Schroeder et al. SIGMETRICS'09; Hwang et al.
# ASPLOS'12 "Cosmic rays don't strike twice"; Sridharan & Liberty SC'12; Meza et al. DSN'15):
# - most faults are permanent and recur on the same cells, and a page that saw two CEs is very
#   likely to see more, so 2 CEs per 24 h (the kernel's Intel CEC threshold, chosen because
#   "Intel systems may avoid uncorrectable errors if pages with corrected errors are aggressively
#   taken offline", cec.c) retires single-cell faults early; a 4 KiB page costs nothing;
# - the row rule (row_pages_threshold: a row with N distinct erroring pages becomes the unit, its
#   pages retired on their first CE) is OFF by default: a faulty row spreads over ~16 pages and
#   the rule retires each one that errs, which on the policy suite (BENCHMARKS_POLICY.md) cost
#   more memory than the kernel CEC retires in total while avoiding few UEs; a row's pages are
#   retired as each one reaches the page threshold instead;
# - column, bank and chip faults spread over many rows and pages, where per-page retirement
#   cannot keep up and only a DIMM replacement helps: a THIRD distinct erroring row in one bank
#   (one row is a cell or row fault; two independent faults in one bank of 512 per host are
#   rare; three rows is a column or bank structure), or 64 distinct erroring pages on one DIMM
#   (more than a whole faulty row), mean escalate and stop; escalating at the third row rather
#   than the ninth is what lets the escalation come before the UE of a slow bank fault;
# - a CE storm spread over many pages is a channel/controller fault: same answer;
# - ~6% of soft offlines fail (kernel or pinned pages, huge pages, migration races): EBUSY is
#   often transient, so retry 4 times with back-off 60 s x 2^k, then give up (hard offline kills
#   processes, so it is never the default);
# - the budget (config.BudgetConfig) keeps a storm from eating memory whatever the rules say.
_DEFAULT = PolicyParams(
    preset="default",
    counter="window",
    action="soft",
    ce_threshold=2,
    window_seconds=86400.0,
    sources=ALL_MEMORY_SOURCES,
    dedupe_seconds=1.0,
    row_pages_threshold=0,
    bank_rows_limit=2,
    dimm_pages_limit=64,
    storm_ce_per_hour=5000,
    storm_distinct_pages=256,
    retry_max=4,
    retry_backoff_seconds=60.0,
    retry_on_recross=False,
)

_PRESETS: dict[PresetName, PolicyParams] = {
    "default": _DEFAULT,
    # rasdaemon ras-page-isolation.c: PAGE_CE_THRESHOLD "50", PAGE_CE_REFRESH_CYCLE "24h",
    # PAGE_CE_ACTION default soft; counts ev.error_count of "Corrected" ras:mc_event only
    # (ras-mc-handler.c); a failed page is tried again at its next threshold crossing
    # (page_offline() skips only PAGE_OFFLINE pages); soft-then-hard tries hard at once.
    "rasdaemon": PolicyParams(
        preset="rasdaemon",
        counter="rasdaemon",
        ce_threshold=50,
        window_seconds=86400.0,
        sources=EDAC_SOURCES,
        retry_on_recross=True,
    ),
    # mcelog page.c account_page_error(): per-page bucket (leaky-bucket.c) fed 1 per corrected
    # machine check with ADDRV; mcelog.conf ships "memory-ce-threshold = 10 / 24h" and
    # memory-ce-action soft; after one attempt (mp->offlined != PAGE_ONLINE) the page is never
    # acted on again, failed or not: there is no retry or back-off in upstream page.c.
    "mcelog": PolicyParams(
        preset="mcelog",
        counter="mcelog",
        ce_threshold=10,
        window_seconds=86400.0,
        sources=MCE_SOURCES,
        retry_on_recross=False,
    ),
    # drivers/ras/cec.c: action_threshold = 2 on Intel (cec_init()), COUNT_MASK = 1023 otherwise;
    # eats corrected memory machine checks with a usable address; a pfn reaching the threshold
    # is soft-offlined and dropped from the array, so it may be counted and offlined again.
    "kernel-cec": PolicyParams(
        preset="kernel-cec",
        counter="cec",
        ce_threshold=2,
        sources=MCE_SOURCES,
        retry_on_recross=True,
    ),
    "kernel-cec-amd": PolicyParams(
        preset="kernel-cec-amd",
        counter="cec",
        ce_threshold=1023,
        sources=MCE_SOURCES,
        retry_on_recross=True,
    ),
    "none": PolicyParams(preset="none", action="off"),
    # The naive policy: retire every page on its first corrected error.
    "first-ce": PolicyParams(preset="first-ce", ce_threshold=1, dedupe_seconds=1.0),
}

#: Kernel CEC constants (drivers/ras/cec.c): 512 u64 per 4 KiB page, 10 count bits.
CEC_MAX_ELEMS = 512
CEC_COUNT_MASK = (1 << 10) - 1


def preset_params(name: PresetName) -> PolicyParams:
    """The parameters of preset `name` (unlimited budget; config.policy_params adds one)."""
    return _PRESETS[name]


def with_overrides(base: PolicyParams, **overrides: object) -> PolicyParams:
    """`base` with some fields replaced (config keys the operator set explicitly)."""
    return replace(base, **overrides)  # type: ignore[arg-type]
