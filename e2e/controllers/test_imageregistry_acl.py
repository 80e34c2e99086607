"""Custom ACLs that cannot fail open, on the real apiserver with the operator running.

An unknown `match` key is kept by the apiserver (not pruned to `match: {}`, which would match every
request) whatever field validation the client asks for, and the operator refuses it by name with
Ready=False/InvalidSpec, keeping the last good docker_auth config. The same for regular expressions
docker_auth (Go RE2) would not compile.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import yaml

from e2e.api.kube import apply
from e2e.controllers.imageregistry_support import condition, merge_patch, registry_manifest, wait_condition
from e2e.support.operator import OperatorProcess
from registry_operator.controllers.resources import CONFIGMAPS, IMAGE_REGISTRIES
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client

GOOD_ACL = [{"match": {"account": "/.+/", "name": "${labels:namespace}/*"}, "actions": ["push", "pull"]}]


def _auth_acl(api: Client, namespace: str, name: str) -> object:
    data = api.get(CONFIGMAPS, f"imageregistry-{name}-auth-config", namespace)["data"]
    return yaml.safe_load(data["auth_config.yml"])["acl"]


@pytest.mark.parametrize("validate", ["strict", "warn", "ignore"])
def test_unknown_match_key_is_kept_whatever_the_field_validation(
    cluster: LocalCluster, namespace: str, api: Client, validate: str
) -> None:
    manifest = json.loads(
        json.dumps(
            yaml.safe_load(
                registry_manifest(
                    "typo", auth={"acl": [{"match": {"repository": "a/*"}, "actions": ["push"]}]}
                )
            )
        )
    )
    cluster.kubectl(
        "create", "-n", namespace, f"--validate={validate}", "-f", "-", input=json.dumps(manifest)
    )  # fmt: skip
    stored = api.get(IMAGE_REGISTRIES, "typo", namespace)
    assert stored["spec"]["auth"]["acl"] == [{"match": {"repository": "a/*"}, "actions": ["push"]}]


def test_invalid_acls_are_refused_naming_the_problem_and_keep_the_good_config(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    volumes: Callable[..., str],
    start_operator: Callable[..., OperatorProcess],
) -> None:
    start_operator(controllers="caroot,imageregistry")
    name = "acl"
    volumes(namespace, f"imageregistry-{name}-pvc", access_modes=("ReadWriteMany",))
    apply(cluster, namespace, registry_manifest(name, auth={"acl": GOOD_ACL}))
    wait_condition(api, namespace, name, status="True", reason="Available")
    assert _auth_acl(api, namespace, name) == GOOD_ACL

    cases = [
        ({"repository": "team-a/*"}, "acl[0].match: unknown key 'repository'"),
        ({"name": "/^(?!admin/).*$/"}, "invalid perl operator: (?!"),
        ({"name": "/\\Z/"}, "invalid escape sequence: \\Z"),
        ({"labels": {"team": "/a{1001}/"}}, "invalid repetition size: {1001}"),
    ]
    for match, message in cases:
        merge_patch(
            cluster, namespace, name, {"spec": {"auth": {"acl": [{"match": match, "actions": ["push"]}]}}}
        )
        registry = wait_condition(api, namespace, name, status="False", reason="InvalidSpec")
        ready = condition(registry, "Ready")
        print(f"{match}: {ready['message']}")
        assert message in ready["message"]
        assert _auth_acl(api, namespace, name) == GOOD_ACL  # the last good config stays
