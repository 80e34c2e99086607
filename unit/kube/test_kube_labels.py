"""Label selector semantics as metav1.LabelSelector defines them."""

from __future__ import annotations

import pytest

from registry_operator.kube.labels import describe_selector, selector_matches

LABELS = {"env": "prod", "team": "a"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"env": "prod"}}, True),
        ({"matchLabels": {"env": "dev"}}, False),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, False),
        ({"matchLabels": {"env": "prod"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}, False),
    ],
)
def test_selector_matches(selector: dict[str, object], matches: bool) -> None:
    assert selector_matches(selector, LABELS) is matches


def test_describe_selector_reads_like_kubectl() -> None:
    selector = {
        "matchLabels": {"env": "prod"},
        "matchExpressions": [{"key": "team", "operator": "In", "values": ["b", "a"]}],
    }
    assert describe_selector(selector) == "env=prod,team in (a,b)"
