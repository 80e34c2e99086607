"""The seed README's examples, end to end with the real controllers: caroot + imageregistry (its
StatefulSet becomes Ready through kwok) + imagesecret + imageregistryaccount.

Users copy these commands; they must work unchanged (ARCHITECTURE §1):
    kubectl apply -f <ImageRegistry registry>, <ImagePushSecret example>, <ImagePullSecret example>
    kubectl get secret imagepushsecret-example -o jsonpath='{.data.\\.dockerconfigjson}' | base64 -d
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from e2e.controllers.imagesecret_support import SETTLE_SECONDS, accounts, api_client, secret_values
from e2e.support.operator import OperatorProcess
from registry_operator.controllers.imagesecret_desired import PULL, PUSH
from registry_operator.controllers.resources import IMAGE_REGISTRIES, SECRETS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.dockerconfig import decode_auth
from registry_operator.kube.resources import Resource

SEED = Path(__file__).resolve().parents[1] / "testdata" / "seed"
PERSISTENT_VOLUMES = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)


def seed_jsonpath_command(cluster: LocalCluster, namespace: str, secret: str) -> str:
    """The README's command verbatim, plus the kubeconfig and namespace of the test cluster."""
    kubectl = f"{shlex.quote(str(cluster.kubectl_path))} --kubeconfig {shlex.quote(str(cluster.kubeconfig))}"
    seed = f"kubectl get secret {secret} -o jsonpath='{{.data.\\.dockerconfigjson}}' | base64 -d"
    return seed.replace("kubectl", f"{kubectl} -n {namespace}", 1)


def test_seed_examples_give_working_docker_configs_with_the_real_registry_controller(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    operator: OperatorProcess = start_operator(
        controllers="caroot,imageregistry,imagesecret,imageregistryaccount"
    )
    # No storage provisioner here: a static volume pre-bound to the seed registry's claim.
    api.create(
        PERSISTENT_VOLUMES,
        {
            "metadata": {"name": f"pv-{namespace}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "standard",
                "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": f"/tmp/pv-{namespace}"},
                "claimRef": {"namespace": namespace, "name": "imageregistry-registry-pvc"},
            },
        },
    )
    try:
        cluster.kubectl("apply", "-n", namespace, "-f", str(SEED / "imageregistry.yaml"))
        waited = cluster.kubectl(
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            "imageregistry/registry",
            "--timeout=90s",
            check=False,
        )
        assert waited.returncode == 0, waited.stderr + operator.log()[-3000:]
        started = time.monotonic()
        cluster.kubectl("apply", "-n", namespace, "-f", str(SEED / "imagepushsecret.yaml"))
        cluster.kubectl("apply", "-n", namespace, "-f", str(SEED / "imagepullsecret.yaml"))
        for resource in ("imagepushsecret/example", "imagepullsecret/example"):
            waited = cluster.kubectl(
                "wait", "-n", namespace, "--for=condition=Ready", resource, "--timeout=30s", check=False
            )
            assert waited.returncode == 0, waited.stderr + operator.log()[-3000:]
        print(f"\nseed push and pull secrets Ready {time.monotonic() - started:.2f}s after kubectl apply")
        time.sleep(SETTLE_SECONDS)

        registry = api.get(IMAGE_REGISTRIES, "registry", namespace)
        hostname = registry["status"]["hostname"]
        assert hostname == f"registry.{namespace}.svc.cluster.local"
        registry_ca = secret_values(api, namespace, registry["status"]["tlsSecretName"])["ca.crt"]

        for kind in (PUSH, PULL):
            secret_name = kind.secret_name("example")
            shown = subprocess.run(
                seed_jsonpath_command(cluster, namespace, secret_name),
                shell=True,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            config = json.loads(shown)
            assert list(config) == ["auths"]
            assert list(config["auths"]) == [hostname]
            user, password = decode_auth(config["auths"][hostname]["auth"])
            data = secret_values(api, namespace, secret_name)
            assert (user, password) == (data["username"], data["password"])
            assert user == f"{kind.mode}.{namespace}.example.1"
            assert data["registry"] == hostname
            assert data["ca.crt"] == registry_ca  # the CA clients need to trust the registry
            secret = api.get(SECRETS, secret_name, namespace)
            if kind is PUSH:
                assert secret["type"] == "Opaque"
                assert base64.b64decode(secret["data"]["config.json"]).decode() == shown
            else:
                assert secret["type"] == "kubernetes.io/dockerconfigjson"
        assert {"push." + namespace + ".example.1", "pull." + namespace + ".example.1"} == set(
            accounts(api, namespace)
        )
    finally:
        cluster.kubectl("delete", "persistentvolume", f"pv-{namespace}", "--wait=false", check=False)
