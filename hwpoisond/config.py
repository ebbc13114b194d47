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
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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
    return seconds


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
Size = Annotated[int, BeforeValidator(parse_size)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class DaemonConfig(_Section):
    #: Where the SQLite state lives; `--state-dir` overrides.
    state_dir: str = DEFAULT_STATE_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: How often counter sources (EDAC sysfs, meminfo, node stats, sysctls) are sampled.
    poll_interval: Duration = 30.0
    #: How often policy windows are expired and state is checkpointed, even when idle.
    housekeeping_interval: Duration = 60.0
    #: Identical log messages within this interval are collapsed into one with a count.
    log_rate_limit_interval: Duration = 60.0


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
    #: Start from a preset; keys set here override it.
    preset: Preset = "default"
    #: What to do with a page whose corrected errors recur.
    action: Action = "soft"
    #: Corrected errors on one 4 KiB page within `window` that trigger the action.
    ce_threshold: PositiveInt = 2
    window: Duration = 86400.0
    #: Distinct bad pages in one DRAM row (same mc/rank/bank/row) that make the row the unit.
    row_pages_threshold: PositiveInt = 2
    #: Distinct bad pages on one DIMM beyond which retiring pages is futile: escalate instead.
    dimm_pages_limit: PositiveInt = 64
    #: Corrected errors per hour on one DIMM/controller without page locality that count as a
    #: storm (a channel or controller fault): escalate, do not retire.
    storm_ce_per_hour: PositiveInt = 5000
    #: Failed soft offlines are retried this many times with exponential back-off.
    retry_max: NonNegativeInt = 4
    retry_backoff: Duration = 60.0
    #: Pages tracked at once; the least useful sub-threshold pages are evicted beyond it.
    max_tracked_pages: PositiveInt = 100_000

    @field_validator("window", "retry_backoff")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("expected a duration greater than zero")
        return v


class BudgetConfig(_Section):
    #: Never retire more than this much memory in total...
    max_retired_bytes: Size = 256 * 1024**2
    #: ...nor more than this fraction of RAM (whichever is smaller).
    max_retired_fraction: Annotated[float, Field(ge=0, le=1)] = 0.001
    #: Offline actions per rolling hour.
    max_offlines_per_hour: PositiveInt = 64


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
    event_retention: Duration = 90 * 86400.0
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
    timeout: Duration = 30.0

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
