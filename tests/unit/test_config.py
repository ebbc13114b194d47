"""Config validation: every bad input names its key, value and expected form."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from hwpoisond import config as config_mod
from hwpoisond.cli import main as cli_main

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "hwpoisond.toml"


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    return info.value.problems


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("[policy]\nbogus = 1\n", "policy.bogus", "unknown key"),
        ("surprise = true\n", "surprise", "unknown key"),
        ("[policy]\nce_threshold = 'three'\n", "policy.ce_threshold", "'three'"),
        ("[policy]\nce_threshold = -1\n", "policy.ce_threshold", "greater than 0"),
        ("[policy]\naction = 'explode'\n", "policy.action", "expected one of"),
        ("[policy]\nwindow = '24x'\n", "policy.window", "expected a duration"),
        ("[policy]\nwindow = '0s'\n", "policy.window", "greater than zero"),
        ("[budget]\nmax_retired_bytes = 'lots'\n", "budget.max_retired_bytes", "expected a size"),
        ("[budget]\nmax_retired_fraction = 2.0\n", "budget.max_retired_fraction", "1"),
        ("[metrics]\nport = 70000\n", "metrics.port", "65535"),
        ("[metrics]\ntls_cert_file = '/x'\n", "metrics", "set together"),
        ("[triggers]\npage_retired = 'relative/script'\n", "triggers.page_retired", "absolute"),
        ("[daemon]\nlog_level = 'loud'\n", "daemon.log_level", "expected one of"),
        # Strict types: TOML says what it is; true is not 1, "9862" is not a port.
        ("[policy]\nce_threshold = true\n", "policy.ce_threshold", "valid integer"),
        ("[metrics]\nport = '9862'\n", "metrics.port", "valid integer"),
        ("[sources]\ntracefs = 1\n", "sources.tracefs", "valid boolean"),
        # Timers: zero fires in a loop, ten years and more cannot be armed.
        ("[daemon]\npoll_interval = 0\n", "daemon.poll_interval", "greater than zero"),
        ("[daemon]\nhousekeeping_interval = '0s'\n", "daemon.housekeeping_interval", "zero"),
        ("[triggers]\ntimeout = 0\n", "triggers.timeout", "greater than zero"),
        ("[store]\nevent_retention = '0d'\n", "store.event_retention", "greater than zero"),
        ("[policy]\nwindow = '3651d'\n", "policy.window", "at most 3650d"),
        ("[daemon]\npoll_interval = 1e300\n", "daemon.poll_interval", "at most 3650d"),
        ("[daemon]\nstate_dir = ''\n", "daemon.state_dir", "not an empty string"),
    ],
)
def test_bad_value_names_key_value_and_expectation(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{key}:"), problems
    assert fragment in problems[0]


def test_every_problem_is_reported_not_just_the_first(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "[policy]\nce_threshold = 0\nwindow = 'x'\nnope = 1\n")
    assert sorted(p.split(":")[0] for p in problems) == [
        "policy.ce_threshold",
        "policy.nope",
        "policy.window",
    ]


def test_toml_syntax_error_carries_line_number(tmp_path: Path) -> None:
    problems = _problems(tmp_path, "[daemon]\nlog_level = 'info'\n[policy\n")
    assert "TOML syntax error" in problems[0]
    assert "line 3" in problems[0]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(tmp_path / "missing.toml")
    assert "cannot read file" in info.value.problems[0]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"[daemon]\nlog_level = '\xff'\n")
    with pytest.raises(config_mod.ConfigError) as info:
        config_mod.load(path)
    assert "not UTF-8" in info.value.problems[0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert config_mod.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "24x", "h", "1h 30m", "-5s", "1.5.2s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        config_mod.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"), [("512MiB", 512 * 2**20), ("1GiB", 2**30), ("64k", 64000), (4096, 4096)]
)
def test_sizes(text: str | int, size: int) -> None:
    assert config_mod.parse_size(text) == size


def test_shipped_config_is_valid_and_equals_the_defaults() -> None:
    assert config_mod.load(SHIPPED) == config_mod.Config()


def test_shipped_config_documents_every_key() -> None:
    """Every key of every section appears in the shipped file (set, or commented out)."""
    text = SHIPPED.read_text()
    documented = tomllib.loads(text)
    for section_name, field in config_mod.Config.model_fields.items():
        assert f"[{section_name}]" in text, section_name
        section_model = field.annotation
        assert section_model is not None
        for key in section_model.model_fields:
            in_file = key in documented.get(section_name, {})
            assert in_file or f"# {key} =" in text, f"{section_name}.{key} is not documented"


def test_check_config_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[policy]\nce_threshold = 3\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\nce_threshold = -3\n")
    assert cli_main(["check-config", str(good)]) == 0
    assert cli_main(["check-config", str(bad)]) == 78
    err = capsys.readouterr().err
    assert "policy.ce_threshold: got -3" in err
    assert cli_main(["check-config", str(tmp_path / "nope.toml")]) == 78
