"""The shipped Prometheus rules and Grafana dashboard: promtool accepts them, the rule unit tests
pass, and every metric they query is one the exporter actually produces."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hwpoisond.metrics import Exporter, MetricsSnapshot, snapshot_families
from tests.unit.metrics.samples import populated_snapshot, samples_of

REPO = Path(__file__).resolve().parents[3]
PROM_DIR = REPO / "config" / "prometheus"
RULE_FILES = [PROM_DIR / "hwpoisond.rules.yml", PROM_DIR / "hwpoisond.alerts.yml"]
RULE_TESTS = sorted((PROM_DIR / "tests").glob("*.yml"))
DASHBOARD = REPO / "config" / "grafana" / "hwpoisond-dashboard.json"
METRICS_DOC = REPO / "docs" / "METRICS.md"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)
#: Series that come from Prometheus itself, not from the exporter.
PROMETHEUS_OWN = {"up"}

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric (and recorded-series) names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"'(?:[^'\\]|\\.)*'", "''", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors, subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w$.:])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", expr):
        if m.group(1).lower() not in _KEYWORDS:
            names.add(m.group(1))
    return names


def test_metric_names_extracts_selectors_only() -> None:
    expr = (
        'sum by (instance, mc) (rate(a_total{x="b_total", y=~"$dimm"}[$__rate_interval])) '
        "/ ignoring (severity) group_left (dimm) c:rule:rate5m offset 15m > 1e3 "
        "and on (instance) histogram_quantile(0.9, d_bucket) unless time() - e_seconds"
    )
    assert metric_names(expr) == {"a_total", "c:rule:rate5m", "d_bucket", "e_seconds"}


def exported_names() -> set[str]:
    return {
        name for name, _ in samples_of(Exporter(snapshot=populated_snapshot()).render().decode())
    }


def _scalar(lines: list[str], i: int, value: str) -> tuple[str, int]:
    """The YAML scalar that starts as `value` on line i: plain, quoted, or a `|` block."""
    if value not in ("|", "|-", ">"):
        return json.loads(value) if value.startswith('"') else value.strip("'"), i + 1
    indent = len(lines[i]) - len(lines[i].lstrip())
    body, j = [], i + 1
    while j < len(lines) and (
        not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
    ):
        body.append(lines[j].strip())
        j += 1
    return "\n".join(body), j


def load_rules() -> list[dict[str, str]]:
    """`record`/`alert` and `expr` of every rule. (The rule files use a plain subset of YAML:
    this reads that subset without adding a YAML library to the project.)"""
    rules: list[dict[str, str]] = []
    for path in RULE_FILES:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"\s*(?:- )?(record|alert|expr):\s*(.*)$", lines[i])
            if m is None:
                i += 1
                continue
            value, i = _scalar(lines, i, m.group(2).strip())
            if m.group(1) == "expr":
                rules[-1]["expr"] = value
            else:
                rules.append({m.group(1): value})
    return rules


def rule_test_cases() -> list[tuple[str, bool]]:
    """(alertname, expects some alert) for every alert_rule_test case in the promtool tests."""
    cases = []
    for path in RULE_TESTS:
        text = path.read_text()
        for m in re.finditer(r"alertname: (\w+)\n\s+exp_alerts:(.*)", text):
            cases.append((m.group(1), m.group(2).strip() != "[]"))
    return cases


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            # label_values(<selector>, label): the selector is the part that must exist.
            m = re.fullmatch(r"label_values\((.*),\s*\w+\)", v["query"]["query"])
            assert m, v["query"]
            exprs.append(m.group(1))
    return exprs


def test_the_populated_sample_shows_every_family() -> None:
    # The name check below is only as good as this sample: every family must have samples.
    empty = [f.name for f in snapshot_families(populated_snapshot()) if not f.samples]
    assert empty == []


def test_every_metric_the_rules_query_is_exported() -> None:
    rules = load_rules()
    recorded = {r["record"] for r in rules if "record" in r}
    known = exported_names() | recorded | PROMETHEUS_OWN
    queried = set().union(*(metric_names(r["expr"]) for r in rules))
    assert queried, "no metric names found in the rules"
    assert queried - known == set()
    # Every recording rule is used by an alert or the dashboard.
    used = queried | set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert recorded - used == set()


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    recorded = {r["record"] for r in load_rules() if "record" in r}
    known = exported_names() | recorded
    queried = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert len(queried) > 10
    assert queried - known == set()


def test_dashboard_shape() -> None:
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"instance", "dimm"} <= variables.keys()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        # Every query goes through the datasource variable, never a hard-coded datasource.
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


def test_every_exported_family_is_documented() -> None:
    doc = METRICS_DOC.read_text()
    families = {f.name for f in snapshot_families(populated_snapshot())}
    missing = set()
    for f in snapshot_families(populated_snapshot()):
        shown = f.name + ("_total" if f.type == "counter" else "")
        shown += "_info" if f.type == "info" else ""
        if f"`{shown}`" not in doc:
            missing.add(shown)
    assert families and missing == set()


@needs_promtool
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULE_FILES)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    assert PROMTOOL is not None and RULE_TESTS
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", *map(str, RULE_TESTS)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROM_DIR / "tests",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout + proc.stderr


@needs_promtool
def test_rule_unit_tests_cover_every_alert_firing_and_not() -> None:
    alerts = {r["alert"] for r in load_rules() if "alert" in r}
    firing = {name for name, fires in rule_test_cases() if fires}
    silent = {name for name, fires in rule_test_cases() if not fires}
    assert alerts - firing == set()
    assert alerts - silent == set()


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool has no offline "check expression"; a recording rule per query makes it parse them.
    rules = [
        {
            "record": f"dashboard:q{i}",
            "expr": e.replace("$__rate_interval", "5m").replace("$__range", "1d"),
        }
        for i, e in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard.rules.yml"
    # JSON is YAML: promtool reads it as a rule file.
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_an_empty_snapshot_exports_a_subset_of_the_populated_one() -> None:
    empty = {name for name, _ in samples_of(Exporter(snapshot=MetricsSnapshot()).render().decode())}
    assert empty <= exported_names()
