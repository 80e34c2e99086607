"""Proof that the local control plane is real: version, CRDs, Deployments, garbage collection."""

from __future__ import annotations

import json
import time

from registry_operator.devenv import binaries
from registry_operator.devenv.cluster import LocalCluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.example.com}
spec:
  group: e2e.example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer, minimum: 1}}}
"""


def test_version_is_the_pinned_kubernetes(cluster: LocalCluster) -> None:
    version = cluster.api_get("/version")
    pinned = binaries.versions()["KUBERNETES_VERSION"]
    assert version["gitVersion"] == pinned
    assert (version["major"], version["minor"]) == ("1", pinned.split(".")[1])


def test_applied_crd_becomes_served_and_validates(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.e2e.example.com")
    good = '{"apiVersion":"e2e.example.com/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"size":2}}'
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=good)
    assert cluster.kubectl("get", "widget", "w", "-n", namespace, "-o", "jsonpath={.spec.size}").stdout == "2"
    bad = good.replace('"size":2', '"size":0')
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=bad.replace('"w"', '"w2"'), check=False
    )
    assert result.returncode != 0
    assert "spec.size" in result.stderr


def test_deployment_becomes_available(cluster: LocalCluster, namespace: str) -> None:
    # Needs kube-controller-manager (Deployment -> ReplicaSet -> Pods), the scheduler (binding) and
    # kwok (pods Running and Ready on the fake node).
    cluster.kubectl(
        "create", "deployment", "web", "--image=example.invalid/web:1", "--replicas=2", "-n", namespace
    )
    cluster.kubectl("wait", "--for=condition=Available", "--timeout=90s", "deployment/web", "-n", namespace)
    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    assert len(pods) == 2
    assert all(p["status"]["phase"] == "Running" and p["spec"]["nodeName"] for p in pods)


def test_owned_configmap_is_garbage_collected(cluster: LocalCluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    uid = cluster.kubectl(
        "get", "configmap", "owner", "-n", namespace, "-o", "jsonpath={.metadata.uid}"
    ).stdout
    child = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "child",
            "namespace": namespace,
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(child))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "configmap", "child", "-n", namespace, check=False).returncode == 0:
        assert time.monotonic() < deadline, "the garbage collector did not delete the owned ConfigMap"
        time.sleep(0.5)


def test_dev_cluster_provisions_volumes_for_the_seed_storage_class() -> None:
    # `make run`'s cluster: the seed's ImageRegistry asks for storageClassName `standard`; without a
    # provisioner its claim (and so the registry) would stay Pending forever.
    with LocalCluster(storage_provisioner=True, with_scheduler=False, with_kwok=False) as dev:
        claim = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {
                "storageClassName": "standard",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        dev.kubectl("apply", "-f", "-", input=json.dumps(claim))
        dev.kubectl("wait", "--for=jsonpath={.status.phase}=Bound", "--timeout=60s", "pvc/data")
        default_class = dev.kubectl(
            "get", "storageclass", "standard", "-o", "jsonpath={.metadata.annotations}"
        ).stdout
        assert '"storageclass.kubernetes.io/is-default-class":"true"' in default_class
