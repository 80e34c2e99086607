"""ImagePullSecret.spec.serviceAccounts on the real control plane (issue 11): the pull Secret is
attached to the named ServiceAccounts (and, with `*`, to ones created later), other entries and
their order survive, deleting the CR or editing the list removes exactly its entry, and a pod of
such a ServiceAccount gets the Secret from the ServiceAccount admission plugin, as kubelet then
uses it.
"""

from __future__ import annotations

import time
from typing import Any

from e2e.controllers.imagesecret_support import api_client, make_registry, secret_values, wait_for, wait_ready
from registry_operator.controllers.imagesecret_desired import PULL
from registry_operator.controllers.resources import IMAGE_PULL_SECRETS, PODS, SERVICE_ACCOUNTS
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.dockerconfig import parse_docker_config
from registry_operator.kube.client import Client


def entries(api: Client, namespace: str, name: str) -> list[str]:
    service_account = api.get(SERVICE_ACCOUNTS, name, namespace)
    return [entry["name"] for entry in service_account.get("imagePullSecrets") or []]


def create_pull_secret(api: Client, namespace: str, name: str, service_accounts: list[str]) -> None:
    api.create(
        IMAGE_PULL_SECRETS,
        {
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"registryRef": {"name": "registry"}, "serviceAccounts": service_accounts},
        },
    )


def test_pull_secrets_are_attached_to_service_accounts_and_detached_exactly(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    make_registry(api, namespace)
    wait_for(lambda: api.get(SERVICE_ACCOUNTS, "default", namespace), 30, "the default ServiceAccount")
    api.create(
        SERVICE_ACCOUNTS,
        {
            "metadata": {"name": "builder", "namespace": namespace},
            "imagePullSecrets": [{"name": "unrelated"}],
        },
    )
    start_operator(controllers="imagesecret,serviceaccounts")
    create_pull_secret(api, namespace, "app", ["default", "builder"])
    create_pull_secret(api, namespace, "all", ["*"])
    wait_ready(api, PULL, namespace, "app")

    wait_for(
        lambda: (
            entries(api, namespace, "builder") == ["unrelated", "imagepullsecret-all", "imagepullsecret-app"]
            or entries(api, namespace, "builder")
            == ["unrelated", "imagepullsecret-app", "imagepullsecret-all"]
        ),
        20,
        "both pull secrets on builder, after its own entry",
    )
    wait_for(
        lambda: sorted(entries(api, namespace, "default")) == ["imagepullsecret-all", "imagepullsecret-app"],
        20,
        "both pull secrets on default",
    )

    # A ServiceAccount created later gets the `*` secret, and only that one.
    created = time.monotonic()
    api.create(SERVICE_ACCOUNTS, {"metadata": {"name": "later", "namespace": namespace}})
    wait_for(lambda: entries(api, namespace, "later") == ["imagepullsecret-all"], 20, "the * secret on later")
    print(f"\nnew ServiceAccount got its pull secret after {time.monotonic() - created:.2f}s")

    # Kubelet's view: the pod's ServiceAccount → imagePullSecrets → a docker config for the registry.
    pod = api.create(
        PODS,
        {
            "metadata": {"name": "puller", "namespace": namespace},
            "spec": {
                "serviceAccountName": "builder",
                "automountServiceAccountToken": False,
                "containers": [{"name": "app", "image": f"registry.{namespace}.svc.cluster.local/app:1"}],
            },
        },
    )
    pod_secrets = [entry["name"] for entry in pod["spec"].get("imagePullSecrets") or []]
    assert "imagepullsecret-app" in pod_secrets
    host = f"registry.{namespace}.svc.cluster.local"
    auths = parse_docker_config(secret_values(api, namespace, "imagepullsecret-app")[".dockerconfigjson"])
    assert host in auths and auths[host].username.startswith(f"pull.{namespace}.app.")

    # Deleting a CR removes exactly its entry; editing the list detaches where it no longer selects.
    api.delete(IMAGE_PULL_SECRETS, "app", namespace)
    wait_for(
        lambda: entries(api, namespace, "builder") == ["unrelated", "imagepullsecret-all"],
        20,
        "app's entry gone from builder, the rest kept",
    )
    wait_for(
        lambda: entries(api, namespace, "default") == ["imagepullsecret-all"], 20, "app gone from default"
    )
    cr = api.get(IMAGE_PULL_SECRETS, "all", namespace)
    cr["spec"]["serviceAccounts"] = ["builder"]
    api.update(IMAGE_PULL_SECRETS, cr)
    wait_for(lambda: entries(api, namespace, "default") == [], 20, "all's entry gone from default")
    wait_for(lambda: entries(api, namespace, "later") == [], 20, "all's entry gone from later")
    assert entries(api, namespace, "builder") == ["unrelated", "imagepullsecret-all"]
