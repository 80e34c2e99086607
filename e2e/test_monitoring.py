"""The operations pack against the real control plane and the real operator process:

- every metric name the alert rules and the Grafana dashboard query (parsed out of their PromQL by
  Prometheus' parser, no hand-kept list) is on the running operator's /metrics after a rotation;
- `make bundle`'s output applies (server-side dry-run) and yields exactly what `kubectl apply -k`
  of the kustomize directories yields, with the image set by one variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.controllers.imagesecret_support import api_client, create_cr, make_registry, wait_for, wait_ready
from e2e.support.operator import OPERATOR_NAMESPACE, OperatorProcess
from registry_operator.api import constants as c
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.devenv import monitoring
from registry_operator.devenv.binaries import REPO_ROOT, ensure
from registry_operator.devenv.cluster import LocalCluster

MANIFESTS = REPO_ROOT / "manifests"


def test_every_metric_used_by_rules_and_dashboard_is_exposed_after_a_rotation(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    operator: OperatorProcess = start_operator(controllers="imagesecret,imageregistryaccount")
    create_cr(api, PULL, namespace, "pull", {"name": "registry", "namespace": namespace})
    wait_ready(api, PULL, namespace, "pull", timeout=30)
    api.patch(PULL.resource, "pull", {"metadata": {"annotations": {c.ANNOTATION_ROTATE: "now"}}}, namespace)

    def rotated() -> bool:
        return int(api.get(PULL.resource, "pull", namespace)["status"].get("rotation") or 0) >= 2

    wait_for(rotated, 30, "the forced rotation")
    wait_ready(api, PULL, namespace, "pull", timeout=30)

    names_bin = ensure("promtool")["promtool"].path("promql-names")
    used_by_rules = monitoring.metric_names(monitoring.rule_expressions(), names_bin)
    used_by_dashboard = monitoring.metric_names(monitoring.dashboard_expressions(), names_bin)
    print(f"\nrules use {len(used_by_rules)} metric names, the dashboard {len(used_by_dashboard)}")

    def missing() -> set[str]:
        return (used_by_rules | used_by_dashboard) - monitoring.exposed_sample_names(operator.metrics())

    # The series appear as the controllers run; give a loaded machine a moment before failing.
    deadline = time.monotonic() + 20
    while missing() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not missing(), f"used by rules/dashboard but not exposed by the operator: {sorted(missing())}"

    # The values behind the alerts are about the right objects.
    ready = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(operator.metrics())
        for s in family.samples
    }
    pull_labels = (("kind", "ImagePullSecret"), ("name", "pull"), ("namespace", namespace))
    registry_labels = (("kind", "ImageRegistry"), ("name", "registry"), ("namespace", namespace))
    assert ready[("registry_operator_ready", pull_labels)] == 1.0
    assert ready[("registry_operator_ready", registry_labels)] == 1.0
    expiry = ready[("registry_operator_credential_expiry_timestamp_seconds", pull_labels)]
    assert 23 * 3600 < expiry - time.time() <= 24 * 3600 + 60  # the fresh rotation's 24 h
    assert ready[("registry_operator_rotations_total", (("kind", "ImagePullSecret"),))] >= 2


# --- the install bundle ---------------------------------------------------------------------------
def _default_image() -> str:
    deployment = yaml.safe_load((MANIFESTS / "operator" / "deployment.yaml").read_text())
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _bundle(tmp_path: Path, image: str) -> Path:
    dist = tmp_path / "dist"
    subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO_ROOT), "bundle", f"IMAGE={image}", f"DIST={dist}"],
        check=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    return dist


def _dry_run(
    cluster: LocalCluster, *source: str, namespace: str | None = None
) -> dict[tuple[str, str, str], Any]:
    args = ["apply", "--server-side", "--force-conflicts", "--dry-run=server", "-o", "json", *source]
    if namespace:
        args += ["-n", namespace]
    result = cluster.kubectl(*args)
    loaded = json.loads(result.stdout)
    items = loaded["items"] if loaded.get("kind") == "List" else [loaded]
    objects = {}
    for item in items:
        metadata = item["metadata"]
        for volatile in ("managedFields", "uid", "resourceVersion", "creationTimestamp", "generation"):
            metadata.pop(volatile, None)
        objects[(item["kind"], metadata.get("namespace", ""), metadata["name"])] = item
    return objects


def _ensure_namespace(cluster: LocalCluster, name: str) -> None:
    def active() -> bool:
        phase = cluster.kubectl("get", "namespace", name, "-o", "jsonpath={.status.phase}", check=False)
        if phase.returncode != 0:
            cluster.kubectl("create", "namespace", name, check=False)
            return False
        return phase.stdout == "Active"

    wait_for(active, 120, f"namespace {name} to be Active", interval=0.5)


def _operator_image_fields(objects: dict[tuple[str, str, str], Any]) -> tuple[str, str]:
    (deployment,) = [obj for key, obj in objects.items() if key[0] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    return container["image"], env["OPERATOR_IMAGE_OPERATOR"]


def _replace_image(
    objects: dict[tuple[str, str, str], Any], old: str, new: str
) -> dict[tuple[str, str, str], Any]:
    return {key: json.loads(json.dumps(obj).replace(old, new)) for key, obj in objects.items()}


def test_bundle_applies_and_matches_kubectl_apply_k(
    cluster: LocalCluster, namespace: str, tmp_path: Path
) -> None:
    image = "registry.example.com/team/registry-operator:9.9.9"
    dist = _bundle(tmp_path, image)
    default = _default_image()

    # cluster-wide: CRDs + operator in namespace registry-operator (the dry run needs the namespace)
    _ensure_namespace(cluster, OPERATOR_NAMESPACE)
    bundle = _dry_run(cluster, "-f", str(dist / "install.yaml"))
    kustomized = _dry_run(cluster, "-k", str(MANIFESTS / "cluster-wide"))
    assert _operator_image_fields(bundle) == (image, image)
    assert _operator_image_fields(kustomized) == (default, default)
    assert sorted(bundle) == sorted(kustomized)
    assert len([k for k in bundle if k[0] == "CustomResourceDefinition"]) == 5
    assert _replace_image(bundle, image, default) == kustomized

    # namespaced: applied with -n into any namespace, like `kubectl apply -k manifests/operator -n NS`
    bundle = _dry_run(cluster, "-f", str(dist / "install-namespaced.yaml"), namespace=namespace)
    kustomized = {
        **_dry_run(cluster, "-k", str(MANIFESTS / "crds")),
        **_dry_run(cluster, "-k", str(MANIFESTS / "operator"), namespace=namespace),
    }
    assert _operator_image_fields(bundle) == (image, image)
    assert {key[1] for key in bundle} == {"", namespace}
    assert _replace_image(bundle, image, default) == kustomized
