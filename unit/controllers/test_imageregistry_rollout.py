"""When a registry's StatefulSet counts as rolling, and when applying a template rolls it."""

from __future__ import annotations

from typing import Any

import pytest

from registry_operator.controllers.imageregistry.rollout import is_rolling, would_roll


def statefulset(generation: int = 2, replicas: int = 2, **status: Any) -> dict[str, Any]:
    base = {"observedGeneration": 2, "updatedReplicas": 2, "currentRevision": "r2", "updateRevision": "r2"}
    return {
        "metadata": {"name": "r", "namespace": "n", "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "authn", "image": "a"}]}},
        },
        "status": {**base, **status},
    }


@pytest.mark.parametrize(
    ("sts", "rolling"),
    [
        (statefulset(), False),
        (statefulset(generation=3), True),  # the new template is not observed yet
        (statefulset(updateRevision="r3"), True),  # pods of the old revision remain
        (statefulset(updatedReplicas=1), True),
        (statefulset(readyReplicas=0), False),  # not ready at the current revision is no rollout
    ],
)
def test_is_rolling(sts: dict[str, Any], rolling: bool) -> None:
    assert is_rolling(sts) is rolling


def test_would_roll_only_on_a_changed_pod_template() -> None:
    current = statefulset()
    same = {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "authn", "image": "a"}]}}}}
    changed = {"spec": {"template": {"spec": {"containers": [{"name": "authn", "image": "b"}]}}}}
    assert not would_roll(current, same)
    assert would_roll(current, changed)
    assert not would_roll(None, changed)  # creating the StatefulSet is no roll of running pods
