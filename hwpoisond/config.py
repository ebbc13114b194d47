"""Configuration: TOML in, validated and frozen pydantic v2 models out.

Rule: this module validates and converts; it starts nothing. Every problem becomes one line
naming the key path, the value and the expected form (`ConfigError.problems`), and callers exit
78 (EX_CONFIG). Durations are strings like "30s", "15m", "24h", "7d", "1h30m"; sizes are bytes
(int) or strings like "512MiB".
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hwpoisond.core.params import BudgetParams, PolicyParams, preset_params, with_overrides

DEFAULT_STATE_DIR = "/var/lib/hwpoisond"
DEFAULT_METRICS_PORT = 9862

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(Exception):
    """The configuration cannot be used. `problems` holds one human line per defect."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


#: The longest duration any key accepts: ten years.
MAX_DURATION_SECONDS = 3650 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from "30s", "1h30m", "7d" (or a bare non-negative number of seconds)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', '15m', '24h', '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(text):
            if m.start() != pos:
                break
            seconds += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise ValueError("expected a duration like '30s', '15m', '24h', '7d' or '1h30m'")
    else:
        raise ValueError("expected a duration like '30s', '15m', '24h', '7d'")
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError("expected a non-negative duration")
    if seconds > MAX_DURATION_SECONDS:
        # Beyond this a timer cannot be armed (threading.TIMEOUT_MAX, time_t arithmetic) and
        # would crash the daemon long after check-config said yes.
        raise ValueError("expected a duration of at most 3650d (ten years)")
    return seconds


def _positive_duration(v: float) -> float:
    if v <= 0:
        raise ValueError("expected a duration greater than zero")
    return v


def parse_size(value: object) -> int:
    """Bytes from an int or "512MiB", "1GiB", "64k"."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes or like '512MiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _SIZE_UNITS:
            raise ValueError("expected a size in bytes or like '512MiB', '1GiB'")
        size = int(float(m.group(1)) * _SIZE_UNITS[unit])
    else:
        raise ValueError("expected a size in bytes or like '512MiB'")
    if size < 0:
        raise ValueError("expected a non-negative size")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
#: An interval a timer waits for: zero would make it fire in a loop (or once), never periodically.
Interval = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    # strict: TOML has real types, so `ce_threshold = true` or `port = "9862"` is a mistake to
    # name, not a value to coerce (true would become 1).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DaemonConfig(_Section):
    #: Where the SQLite state lives; `--state-dir` overrides.
    state_dir: str = DEFAULT_STATE_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: How often counter sources (EDAC sysfs, meminfo, node stats, sysctls) are sampled.
    poll_interval: Interval = 30.0
    #: How often policy windows are expired and state is checkpointed, even when idle.
    housekeeping_interval: Interval = 60.0
    #: Identical log messages within this interval are collapsed into one with a count.
    log_rate_limit_interval: Duration = 60.0

    @field_validator("state_dir")
    @classmethod
    def _a_directory(cls, v: str) -> str:
        # "" would be the working directory, which the daemon then chmods to 0700.
        if not v.strip() or "\0" in v:
            raise ValueError("expected a directory path, not an empty string")
        return v


class SourcesConfig(_Section):
    tracefs: bool = True
    journald: bool = True
    edac_sysfs: bool = True
    memory_state: bool = True
    #: On first start, read kernel messages already in the journal (this boot) once.
    journal_backfill: bool = True


Action = Literal["off", "account", "soft", "hard", "soft-then-hard"]
Preset = Literal[
    "default", "rasdaemon", "mcelog", "kernel-cec", "kernel-cec-amd", "none", "first-ce"
]


class PolicyConfig(_Section):
    """[policy]: a preset, then any key set explicitly in the file overrides the preset's value.
    The defaults shown are the `default` preset's (hwpoisond.core.params explains each choice).
    A limit or rule set to 0 is disabled."""

    #: Start from a preset: default | rasdaemon | mcelog | kernel-cec | kernel-cec-amd | none |
    #: first-ce. Keys set explicitly below override the preset's values.
    preset: Preset = "default"
    #: What to do with a page over threshold: off | account (record, never write) | soft |
    #: hard (kills processes using the page) | soft-then-hard (hard only when soft keeps failing).
    action: Action = "soft"
    #: Corrected errors (count) on one 4 KiB page within `window` that make the page bad.
    ce_threshold: PositiveInt = 2
    #: Duration of the per-page recurrence window (for the rasdaemon/mcelog presets: their
    #: bucket's refresh cycle; for kernel-cec: the CEC decay interval).
    window: Interval = 86400.0
    #: Duration: a report of the same page from another source (mc_event and mce_record, trace
    #: and dmesg) within this time is the same error and counts once.
    dedupe: Duration = 1.0
    #: Distinct erroring pages (count) in one DRAM row (same DIMM/rank/bank/row) that make the
    #: row the unit: its known pages are retired, the others on their first corrected error.
    #: 0 (the default) disables it: each page of a row is retired at the page threshold.
    row_pages_threshold: NonNegativeInt = 0
    #: Distinct erroring DRAM rows (count) in one bank beyond which the fault is a bank or column
    #: fault: stop retiring there and recommend replacing the DIMM.
    bank_rows_limit: NonNegativeInt = 2
    #: Distinct erroring pages (count) on one DIMM beyond which retiring pages is futile: stop
    #: retiring there and recommend replacing the DIMM.
    dimm_pages_limit: NonNegativeInt = 64
    #: Corrected errors (count) in one clock hour on one memory controller (or DIMM when the
    #: controller is unknown) that, spread over at least `storm_distinct_pages` pages, are a
    #: channel or controller fault: escalate, stop retiring there.
    storm_ce_per_hour: NonNegativeInt = 5000
    #: Distinct pages (count) the storm's errors must cover (no page locality).
    storm_distinct_pages: NonNegativeInt = 256
    #: Failed offlines are retried this many times (count), waiting `retry_backoff`, then twice
    #: that, and so on.
    retry_max: NonNegativeInt = 4
    #: Duration before the first retry of a failed offline.
    retry_backoff: Interval = 60.0
    #: Sub-threshold pages (count) tracked at once; beyond it the least recently seen is
    #: forgotten. Pages over threshold, retired or poisoned are never forgotten.
    max_tracked_pages: PositiveInt = 100_000
    #: DRAM rows, banks, DIMMs and controllers (count, each) tracked for the row and futility
    #: rules; beyond it the least recently added one that is not flagged is forgotten.
    max_tracked_units: PositiveInt = 16_384


class BudgetConfig(_Section):
    """[budget]: limits on what the policy may retire, whatever its rules say."""

    #: Turn the budget off (false: no limit at all).
    enabled: bool = True
    #: Size: never hold more than this much memory offlined in total ...
    max_retired_bytes: Size = 256 * 1024**2
    #: ... nor more than this fraction (0..1) of RAM, whichever is smaller.
    max_retired_fraction: Annotated[float, Field(ge=0, le=1)] = 0.001
    #: Soft/hard offline actions (count, retries included) per rolling hour.
    max_offlines_per_hour: PositiveInt = 64


#: [policy] keys → hwpoisond.core.params.PolicyParams fields.
_POLICY_FIELDS = {
    "action": "action",
    "ce_threshold": "ce_threshold",
    "window": "window_seconds",
    "dedupe": "dedupe_seconds",
    "row_pages_threshold": "row_pages_threshold",
    "bank_rows_limit": "bank_rows_limit",
    "dimm_pages_limit": "dimm_pages_limit",
    "storm_ce_per_hour": "storm_ce_per_hour",
    "storm_distinct_pages": "storm_distinct_pages",
    "retry_max": "retry_max",
    "retry_backoff": "retry_backoff_seconds",
    "max_tracked_pages": "max_tracked_pages",
    "max_tracked_units": "max_tracked_units",
}


def policy_params(cfg: Config, total_ram_bytes: int | None) -> PolicyParams:
    """The core's parameters: the preset, the [policy] keys set explicitly, and the budget
    (absolute limit, lowered to `max_retired_fraction` of `total_ram_bytes` when known)."""
    pol = cfg.policy
    overrides: dict[str, object] = {
        _POLICY_FIELDS[key]: getattr(pol, key)
        for key in sorted(pol.model_fields_set)
        if key in _POLICY_FIELDS
    }
    if "window" in overrides and preset_params(pol.preset).counter == "cec":
        overrides["cec_decay_interval_seconds"] = overrides["window"]
    params = with_overrides(preset_params(pol.preset), **overrides)
    b = cfg.budget
    budget = BudgetParams()
    if b.enabled:
        limit = b.max_retired_bytes
        if total_ram_bytes is not None:
            limit = min(limit, int(total_ram_bytes * b.max_retired_fraction))
        budget = BudgetParams(limit, b.max_offlines_per_hour)
    return with_overrides(params, budget=budget)


class MetricsConfig(_Section):
    enabled: bool = True
    listen_address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = DEFAULT_METRICS_PORT
    #: Also write the exposition atomically into node_exporter's textfile directory.
    textfile_dir: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> MetricsConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        return self


class StoreConfig(_Section):
    #: Events older than this are deleted...
    event_retention: Interval = 90 * 86400.0
    #: ...and at most this many are kept (oldest go first).
    event_max_rows: PositiveInt = 1_000_000


class TriggersConfig(_Section):
    """Operator scripts (absolute paths, root-owned, not group/other-writable), run without a
    shell; event data reaches them only through HWPOISOND_* environment variables."""

    page_retired: str | None = None
    offline_failed: str | None = None
    uncorrected_error: str | None = None
    dimm_escalation: str | None = None
    budget_exhausted: str | None = None
    timeout: Interval = 30.0

    @field_validator(
        "page_retired",
        "offline_failed",
        "uncorrected_error",
        "dimm_escalation",
        "budget_exhausted",
    )
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_absolute():
            raise ValueError("expected an absolute path to an executable")
        return v


class RebootConfig(_Section):
    #: At start, offline again the pages this daemon retired before a reboot cleared them.
    reoffline: bool = True


class Config(_Section):
    daemon: DaemonConfig = DaemonConfig()
    sources: SourcesConfig = SourcesConfig()
    policy: PolicyConfig = PolicyConfig()
    budget: BudgetConfig = BudgetConfig()
    metrics: MetricsConfig = MetricsConfig()
    store: StoreConfig = StoreConfig()
    triggers: TriggersConfig = TriggersConfig()
    reboot: RebootConfig = RebootConfig()


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts) or "(top level)"


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors(include_url=False):
        key = _key_path(e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key (value {_describe(e['input'])})")
            continue
        msg = e["msg"]
        msg = msg.removeprefix("Value error, ")
        if e["type"] == "literal_error":
            msg = "expected one of " + msg.removeprefix("Input should be ")
        elif msg.startswith("Input should be"):
            msg = "expected " + msg.removeprefix("Input should be ")
        lines.append(f"{key}: got {_describe(e['input'])}; {msg}")
    return lines


def from_mapping(data: dict[str, Any], source: str = "<config>") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(source, _problems(e)) from None


def load(path: str | Path | None) -> Config:
    """The config in `path`, or the built-in defaults when `path` is None."""
    if path is None:
        return Config()
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(source, [f"cannot read file: {e.strerror or e}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(source, [f"not UTF-8 text (byte {e.start})"]) from None
    except tomllib.TOMLDecodeError as e:
        # The message carries "(at line N, column M)".
        raise ConfigError(source, [f"TOML syntax error: {e}"]) from None
    return from_mapping(data, source)
