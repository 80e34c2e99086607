"""manifests/monitoring's alerts with real Prometheus tooling: `promtool check rules` and
`promtool test rules` (unit/testdata/monitoring/alerts_test.yaml), plus the conventions every alert
keeps: a summary, a description naming the object, a runbook section that exists.

promtool is built from the Go module proxy by hack/build-deps.sh (cached; built on first use).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from registry_operator.devenv import monitoring
from registry_operator.devenv.binaries import REPO_ROOT, ensure

TESTS = Path(__file__).parent / "testdata" / "monitoring" / "alerts_test.yaml"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
ALERTS = [rule["alert"] for rule in monitoring.alert_rules()]


@pytest.fixture(scope="module")
def promtool() -> Path:
    return ensure("promtool")["promtool"].path("promtool")


@pytest.fixture
def rule_dir(tmp_path: Path) -> Path:
    """rules.yaml (the PrometheusRule's spec) beside a copy of the test file, as the test file expects."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": monitoring.rule_groups()}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return tmp_path


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False)


def test_promtool_check_rules_accepts_the_rules(promtool: Path, rule_dir: Path) -> None:
    result = _run(promtool, "check", "rules", "rules.yaml", cwd=rule_dir)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(monitoring.rule_expressions())} rules found" in result.stdout


def test_promtool_test_rules_passes(promtool: Path, rule_dir: Path) -> None:
    result = _run(promtool, "test", "rules", TESTS.name, cwd=rule_dir)
    print(result.stdout, result.stderr)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_an_expectation_is_wrong(promtool: Path, rule_dir: Path) -> None:
    # The suite can fail: flip one firing case to "silent" and promtool must report it.
    cases = yaml.safe_load((rule_dir / TESTS.name).read_text())
    first_firing = next(t for test in cases["tests"] for t in test["alert_rule_test"] if t["exp_alerts"])
    first_firing["exp_alerts"] = []
    (rule_dir / TESTS.name).write_text(yaml.safe_dump(cases))
    result = _run(promtool, "test", "rules", TESTS.name, cwd=rule_dir)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def _cases() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test["alert_rule_test"]:
            entry = counts.setdefault(case["alertname"], {"firing": 0, "silent": 0})
            entry["firing" if case.get("exp_alerts") else "silent"] += 1
    return counts


@pytest.mark.parametrize("alert", ALERTS)
def test_every_alert_has_a_firing_and_a_silent_case(alert: str) -> None:
    counts = _cases().get(alert, {"firing": 0, "silent": 0})
    assert counts["firing"] >= 1, f"{alert}: no promtool case where it fires"
    assert counts["silent"] >= 1, f"{alert}: no promtool case where it stays silent"


def _runbook_anchors() -> set[str]:
    # GitHub's anchors: lower case, spaces to dashes, punctuation dropped.
    anchors = set()
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^a-z0-9 _-]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("rule", monitoring.alert_rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_has_summary_description_and_runbook_section(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    # The description names the object: every grouping label of the expression appears in it.
    grouping = re.search(r"by \(([^)]*)\)", rule["expr"])
    assert grouping, f"{rule['alert']}: expected an aggregation `by (...)` naming the object"
    for label in (name.strip() for name in grouping[1].split(",")):
        if label != "le":
            assert f"$labels.{label}" in annotations["description"], f"{rule['alert']}: {label} not named"
    url = annotations["runbook_url"]
    assert url.endswith("/docs/runbook.md#" + rule["alert"].lower())
    assert rule["alert"].lower() in _runbook_anchors(), f"docs/runbook.md has no section {rule['alert']}"


def test_dashboard_and_rules_are_valid_promql(promtool: Path) -> None:
    names_bin = promtool.parent / "promql-names"
    assert monitoring.metric_names(monitoring.rule_expressions(), names_bin)
    names = monitoring.metric_names(monitoring.dashboard_expressions(), names_bin)
    # The dashboard shows what the issue lists: reconciles, errors, queue, expiry, readiness.
    for needed in (
        "controller_runtime_reconcile_total",
        "controller_runtime_reconcile_errors_total",
        "workqueue_depth",
        "registry_operator_credential_expiry_timestamp_seconds",
        "registry_operator_ready",
    ):
        assert needed in names
    with pytest.raises(ValueError, match="cannot parse"):
        monitoring.metric_names(["sum(rate(foo[5m]"], names_bin)
