"""The seed's ImagePushSecret → ImageBuildEnv chain with the real imagesecret controller: the build
env merges the generated push secret, and a rotation of the push secret reaches the build config
within seconds. (The registry is stood in for by `make_registry`: an ImageRegistry with the status
the imageregistry controller writes.)
"""

from __future__ import annotations

import time
from typing import Any

import yaml

from e2e.controllers.imagebuildenv_support import (
    SEED_BUILD_ENV,
    auth_of,
    conf,
    must_get,
    plain,
    wait_for,
    wait_ready,
)
from e2e.controllers.imagesecret_support import api_client, make_registry
from e2e.support.operator import OperatorProcess
from registry_operator.api import constants as c
from registry_operator.controllers.resources import IMAGE_PUSH_SECRETS, SECRETS
from registry_operator.devenv.cluster import LocalCluster

SEED_PUSH_SECRET = SEED_BUILD_ENV.parent / "imagepushsecret.yaml"


def test_seed_push_secret_feeds_the_seed_build_env_and_its_rotation_is_merged(
    cluster: LocalCluster, namespace: str, start_operator: Any
) -> None:
    api = api_client(cluster)
    operator: OperatorProcess = start_operator(controllers="imagesecret,imagebuildenv")
    ca_pem = make_registry(api, namespace)
    host = f"registry.{namespace}.svc.cluster.local"
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED_PUSH_SECRET))
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED_BUILD_ENV))
    # Generous: a new operator may first wait for the previous one's leader lease.
    try:
        wait_ready(api, namespace, "example", timeout=60)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{operator.log()[-3000:]}") from None

    push = plain(must_get(api, SECRETS, namespace, "imagepushsecret-example"))
    merged = conf(api, namespace, "example")
    assert merged["registry"] == push["registry"] == host
    assert merged["username"] == push["username"] == f"push.{namespace}.example.1"
    assert merged["ca.crt"] == merged["ca-0.crt"] == ca_pem
    assert auth_of(merged[".dockerconfigjson"], host) == f"{push['username']}:{push['password']}"
    makisu = yaml.safe_load(merged["makisu.yaml"])[host][".*"]["security"]
    assert makisu["tls"]["ca"]["cert"]["path"] == "/makisu-internal/config/ca-0.crt"
    assert merged["redis"] == "imagebuildenv-example-redis:6379"
    # The generated secret belongs to its ImagePushSecret only, never to the build env.
    owners = must_get(api, SECRETS, namespace, "imagepushsecret-example")["metadata"]["ownerReferences"]
    assert [owner["kind"] for owner in owners] == ["ImagePushSecret"]

    started = time.monotonic()
    cluster.kubectl(
        "annotate", "-n", namespace, IMAGE_PUSH_SECRETS.plural, "example", f"{c.ANNOTATION_ROTATE}=1"
    )
    rotated_user = f"push.{namespace}.example.2"
    wait_for(lambda: conf(api, namespace, "example")["username"] == rotated_user, 10, "rotation merged", 0.02)
    seconds = time.monotonic() - started
    print(f"\nImagePushSecret rotation in the build config {seconds:.2f}s after kubectl annotate began")
    push = plain(must_get(api, SECRETS, namespace, "imagepushsecret-example"))
    merged = conf(api, namespace, "example")
    assert auth_of(merged["config.json"], host) == f"{rotated_user}:{push['password']}"
    assert (
        yaml.safe_load(merged["makisu.yaml"])[host][".*"]["security"]["basic"]["password"] == push["password"]
    )
