"""The PromQL of manifests/monitoring (alert rules and the Grafana dashboard) for the tests.

Metric names are read out of the expressions with Prometheus' own parser (`promql-names`, built
with promtool by hack/build-deps.sh), never from a hand-kept list, so a query edited to use a
metric the operator does not expose fails the live check in e2e/test_monitoring.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from registry_operator.devenv.binaries import REPO_ROOT

MONITORING_DIR = REPO_ROOT / "manifests" / "monitoring"
PROMETHEUS_RULE = MONITORING_DIR / "prometheusrule.yaml"
DASHBOARD = MONITORING_DIR / "registry-operator-dashboard.json"

# Grafana's interval variables are not PromQL; any valid duration stands in for them.
_GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S)


def rule_groups() -> list[dict[str, Any]]:
    """`spec.groups` of the PrometheusRule: the content of a Prometheus rule file."""
    document = yaml.safe_load(PROMETHEUS_RULE.read_text())
    groups: list[dict[str, Any]] = document["spec"]["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def rule_expressions() -> list[str]:
    return [str(rule["expr"]) for group in rule_groups() for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _grafana_to_promql(expr: str) -> str:
    for variable, duration in _GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    return expr


def dashboard_expressions() -> list[str]:
    """Every panel target's expression and every query variable's `label_values(<expr>, label)`."""
    board = dashboard()
    found: list[str] = []
    for panel in board.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append(_grafana_to_promql(target["expr"]))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query)
        if match is None:
            raise ValueError(f"dashboard variable {variable['name']}: unsupported query {query!r}")
        found.append(_grafana_to_promql(match["expr"]))
    return found


def metric_names(expressions: list[str], promql_names: Path) -> set[str]:
    """The metric names the expressions select, parsed by Prometheus' PromQL parser."""
    one_per_line = "\n".join(" ".join(expr.split()) for expr in expressions) + "\n"
    result = subprocess.run(
        [str(promql_names)], input=one_per_line, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ValueError(f"PromQL that Prometheus cannot parse:\n{result.stderr}")
    return set(result.stdout.split())


def exposed_sample_names(exposition: str) -> set[str]:
    """Sample names of a /metrics text page (`x_total`, `x_bucket`, `x_sum`, ... as PromQL sees them)."""
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}
