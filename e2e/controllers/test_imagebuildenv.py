"""ImageBuildEnv controller on the real control plane (apiserver, garbage collector, deployment
controller, kwok pods): REFERENCE-BEHAVIOUR §10.2 item 5, the seed's example, rotation, invalid and
missing inputs, redis on/off, deletion, steady state, and migration from the original operator.

One operator process (`--controllers=imagebuildenv`, all namespaces) serves the module; each test
has its own namespace.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator

import pytest
import yaml

from e2e.controllers.imagebuildenv_support import (
    API_VERSION,
    CA_PEM,
    FINALIZER,
    GC_TIMEOUT,
    SEED_BUILD_ENV,
    apply,
    auth_of,
    b64,
    build_env,
    conf,
    controller_metric,
    get,
    must_get,
    plain,
    push_format_secret,
    ready_condition,
    reconcile_total,
    redis_objects,
    wait_for,
    wait_ready,
)
from e2e.support.operator import OperatorProcess
from registry_operator.controllers.resources import DEPLOYMENTS, IMAGE_BUILD_ENVS, SECRETS, SERVICES
from registry_operator.devenv.cluster import LocalCluster
from registry_operator.kube.client import Client
from registry_operator.kube.resources import EVENTS, Resource


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        cluster, tmp_path_factory.mktemp("imagebuildenv"), controllers="imagebuildenv", name="operator"
    )
    process.start()
    try:
        yield process
        # A reconcile that raised something unexpected is a bug even if the tests recovered from it.
        assert controller_metric(process, "controller_runtime_reconcile_panics_total") == 0, process.log()[
            -5000:
        ]
    finally:
        process.stop()
        print(f"\noperator log: {process.process.log_path}")


# --- tests -----------------------------------------------------------------------------------------
def test_seed_example_with_redis_then_switching_redis_off(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    host = f"registry.{namespace}.svc.cluster.local"
    apply(cluster, namespace, push_format_secret("imagepushsecret-example", host, "push.x.example.1", "pw1"))
    started = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", str(SEED_BUILD_ENV))  # verbatim, as the seed says
    wait_ready(api, namespace, "example")
    print(
        f"\nseed ImageBuildEnv with redis Ready {time.monotonic() - started:.2f}s after kubectl apply began"
    )

    merged = conf(api, namespace, "example")
    assert auth_of(merged[".dockerconfigjson"], host) == "push.x.example.1:pw1"
    assert merged["config.json"] == merged[".dockerconfigjson"]
    assert (merged["registry"], merged["ca.crt"], merged["username"], merged["password"]) == (
        host,
        CA_PEM,
        "push.x.example.1",
        "pw1",
    )
    makisu = yaml.safe_load(merged["makisu.yaml"])
    assert makisu[host][".*"]["security"] == {
        "basic": {"username": "push.x.example.1", "password": "pw1"},
        "tls": {"ca": {"cert": {"path": "/makisu-internal/config/ca-0.crt"}}},
    }
    assert merged["ca-0.crt"] == CA_PEM
    deployment, service, redis_secret = redis_objects(api, namespace, "example")
    assert deployment is not None and service is not None and redis_secret is not None
    # Ready followed the Deployment controller's real status (pods made Ready by kwok).
    assert deployment["status"]["availableReplicas"] == 1
    assert merged["redis"] == "imagebuildenv-example-redis:6379"
    assert merged["redis_password"] == plain(redis_secret)["redis_password"]
    env = must_get(api, IMAGE_BUILD_ENVS, namespace, "example")
    for child in (
        deployment,
        service,
        redis_secret,
        must_get(api, SECRETS, namespace, "imagebuildenv-example-conf"),
    ):
        (owner,) = child["metadata"]["ownerReferences"]
        assert (owner["uid"], owner["controller"]) == (env["metadata"]["uid"], True)
    assert service["spec"]["ports"][0]["port"] == 6379
    assert service["spec"]["type"] == "ClusterIP"
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert pod_spec["containers"][0]["image"] == "docker.io/library/redis:7.4.2-alpine"
    assert "ownerReferences" not in must_get(api, SECRETS, namespace, "imagepushsecret-example")["metadata"]

    cluster.kubectl(
        "patch", "-n", namespace, "imagebuildenv", "example", "--type=merge", "-p", '{"spec":{"redis":false}}'
    )
    wait_ready(api, namespace, "example")
    wait_for(lambda: redis_objects(api, namespace, "example") == [None, None, None], 10, "redis removed")
    merged = conf(api, namespace, "example")
    assert "redis" not in merged and "redis_password" not in merged
    assert auth_of(merged["config.json"], host) == "push.x.example.1:pw1"


def test_reference_behaviour_with_and_without_redis(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    """REFERENCE-BEHAVIOUR §10.2 item 5."""
    host = f"registry.{namespace}.svc.cluster.local"
    push = push_format_secret("imagepushsecret-my-push-secret-cr", host, "push.x.my-push-secret-cr.1", "pw")
    apply(
        cluster,
        namespace,
        push,
        build_env("test-buildenv-true", "imagepushsecret-my-push-secret-cr", redis=True),
        build_env("test-buildenv-false", "imagepushsecret-my-push-secret-cr", redis=False),
    )
    for name, redis in (("test-buildenv-true", True), ("test-buildenv-false", False)):
        wait_ready(api, namespace, name)
        merged = conf(api, namespace, name)
        assert merged["registry"] == host
        assert json.loads(merged[".dockerconfigjson"]) == json.loads(plain(push)[".dockerconfigjson"])
        assert yaml.safe_load(merged["makisu.yaml"])[host]
        assert ("redis" in merged, "redis_password" in merged) == (redis, redis)
        assert all((obj is not None) is redis for obj in redis_objects(api, namespace, name))


def test_rotated_input_is_merged_within_seconds(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    host = f"registry.{namespace}.svc.cluster.local"
    apply(
        cluster,
        namespace,
        push_format_secret("imagepushsecret-app", host, "push.x.app.1", "pw-1"),
        build_env("app", "imagepushsecret-app"),
    )
    wait_ready(api, namespace, "app")
    latencies = []
    for rotation in range(2, 7):
        user, password = f"push.x.app.{rotation}", f"pw-{rotation}"
        rotated = push_format_secret("imagepushsecret-app", host, user, password)
        rotated["metadata"]["namespace"] = namespace
        expected = f"{user}:{password}"
        # Timed from just before the write (one API request, as the ImagePushSecret controller's).
        started = time.monotonic()
        api.apply(SECRETS, rotated, field_manager="e2e-rotation", force=True)

        def merged_rotation(expected: str = expected) -> bool:
            return auth_of(conf(api, namespace, "app")["config.json"], host) == expected

        wait_for(merged_rotation, 10, f"rotation {rotation} merged", interval=0.02)
        latencies.append(time.monotonic() - started)
        merged = conf(api, namespace, "app")
        assert (merged["username"], merged["password"]) == (user, password)
        assert yaml.safe_load(merged["makisu.yaml"])[host][".*"]["security"]["basic"]["password"] == password
    print(
        f"\nrotated input in the conf secret after median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms ({len(latencies)} rotations)"
    )
    assert max(latencies) < 5


def test_two_inputs_merge_and_deleting_the_env_leaves_them_untouched(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    own = f"registry.{namespace}.svc.cluster.local"
    external = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "some-external-registry"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {
            ".dockerconfigjson": b64(
                json.dumps(
                    {
                        "auths": {
                            "ghcr.io": {"username": "bot", "password": "token"},
                            own: {"auth": b64("x:y")},
                        }
                    }
                )
            )
        },
    }
    apply(
        cluster,
        namespace,
        push_format_secret("imagepushsecret-example", own, "push.x.example.1", "pw"),
        external,
        build_env("example", "imagepushsecret-example", "some-external-registry", redis=True),
    )
    wait_ready(api, namespace, "example")
    merged = conf(api, namespace, "example")
    assert auth_of(merged[".dockerconfigjson"], "ghcr.io") == "bot:token"  # username/password entry kept
    assert auth_of(merged[".dockerconfigjson"], own) == "x:y"  # the later input wins the host
    assert merged["username"] == "push.x.example.1"  # from the first input that has it
    inputs_before = {
        name: must_get(api, SECRETS, namespace, name)["metadata"]
        for name in ("imagepushsecret-example", "some-external-registry")
    }
    assert all("ownerReferences" not in metadata for metadata in inputs_before.values())

    cluster.kubectl("delete", "-n", namespace, "imagebuildenv", "example", "--wait=true", "--timeout=30s")
    # The garbage collector removes what the env controlled ...
    wait_for(
        lambda: (
            get(api, SECRETS, namespace, "imagebuildenv-example-conf") is None
            and redis_objects(api, namespace, "example") == [None, None, None]
        ),
        GC_TIMEOUT,
        "the env's own objects garbage-collected",
        interval=0.5,
    )
    # ... and never the inputs, which nobody wrote to.
    for name, metadata in inputs_before.items():
        after = must_get(api, SECRETS, namespace, name)["metadata"]
        assert after["resourceVersion"] == metadata["resourceVersion"], name


@pytest.mark.parametrize(
    ("secret_type", "data", "message"),
    [
        (
            "kubernetes.io/tls",
            {"tls.crt": "x", "tls.key": "y"},
            "secret bad-input has unsupported type kubernetes.io/tls",
        ),
        ("Opaque", {"registry": "x"}, 'secret bad-input does not specify key "config.json"'),
        ("Opaque", {"config.json": "{nope"}, 'secret bad-input key "config.json": invalid JSON'),
        # (The apiserver itself refuses malformed JSON in a kubernetes.io/dockerconfigjson Secret.)
        (
            "kubernetes.io/dockerconfigjson",
            {".dockerconfigjson": '{"auths": {"ghcr.io": {"auth": "not base64!"}}}'},
            "secret bad-input key \".dockerconfigjson\": auths['ghcr.io']: basic auth",
        ),
    ],
)
def test_invalid_input_names_the_secret_and_key_and_recovers(
    cluster: LocalCluster,
    namespace: str,
    api: Client,
    operator: OperatorProcess,
    secret_type: str,
    data: dict[str, str],
    message: str,
) -> None:
    host = f"registry.{namespace}.svc.cluster.local"
    bad = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "bad-input"},
        "type": secret_type,
        "data": {key: b64(value) for key, value in data.items()},
    }
    apply(
        cluster,
        namespace,
        push_format_secret("good-input", host, "u", "p"),
        bad,
        build_env("example", "good-input", "bad-input"),
    )
    wait_ready(api, namespace, "example", reason="InvalidSecret")
    condition = ready_condition(must_get(api, IMAGE_BUILD_ENVS, namespace, "example"))
    assert condition["status"] == "False"
    assert condition["message"].startswith(message), condition["message"]
    assert get(api, SECRETS, namespace, "imagebuildenv-example-conf") is None

    cluster.kubectl("delete", "-n", namespace, "secret", "bad-input")
    apply(cluster, namespace, push_format_secret("bad-input", "ghcr.io", "fixed", "p"))
    wait_ready(api, namespace, "example", timeout=10)
    assert auth_of(conf(api, namespace, "example")["config.json"], "ghcr.io") == "fixed:p"


def test_missing_input_is_reported_and_its_creation_recovers_at_once(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    apply(cluster, namespace, build_env("example", "later"))
    wait_ready(api, namespace, "example", reason="MissingSecret")
    condition = ready_condition(must_get(api, IMAGE_BUILD_ENVS, namespace, "example"))
    assert (condition["status"], condition["message"]) == ("False", 'secrets "later" not found')

    def warned() -> bool:  # events are written in the background
        events = api.list(EVENTS, namespace, field_selector="involvedObject.name=example")["items"]
        return any(event["reason"] == "MissingSecret" and event["type"] == "Warning" for event in events)

    wait_for(warned, 5, "a MissingSecret warning event")

    apply(cluster, namespace, push_format_secret("later", "ghcr.io", "u", "p"))
    seconds = wait_ready(api, namespace, "example")
    print(f"\nmissing input created: Ready after {seconds:.2f}s")
    # The watch on inputs triggers the merge, not the 30 s safety requeue.
    assert seconds < 10


def test_no_writes_at_steady_state(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    host = f"registry.{namespace}.svc.cluster.local"
    apply(
        cluster,
        namespace,
        push_format_secret("imagepushsecret-example", host, "u", "p"),
        build_env("example", "imagepushsecret-example", redis=True),
    )
    wait_ready(api, namespace, "example")
    watched: list[tuple[Resource, str]] = [
        (IMAGE_BUILD_ENVS, "example"),
        (SECRETS, "imagebuildenv-example-conf"),
        (SECRETS, "imagebuildenv-example-redis-conf"),
        (DEPLOYMENTS, "imagebuildenv-example-redis"),
        (SERVICES, "imagebuildenv-example-redis"),
    ]

    def versions() -> dict[str, str]:
        return {
            f"{resource.plural}/{name}": must_get(api, resource, namespace, name)["metadata"][
                "resourceVersion"
            ]
            for resource, name in watched
        }

    time.sleep(1)  # let the deployment controller finish its status updates
    before = versions()
    reconciles_before = reconcile_total(operator)
    # An input change that changes nothing relevant still makes the controller reconcile ...
    cluster.kubectl("annotate", "-n", namespace, "secret", "imagepushsecret-example", "touched=1")
    wait_for(lambda: reconcile_total(operator) > reconciles_before, 10, "a reconcile after the touch")
    time.sleep(3)
    # ... which, like the steady state around it, writes nothing.
    assert versions() == before
    print(f"\nsteady state: {len(before)} objects unchanged over 4 s including one no-op reconcile")


def test_migration_from_the_original_operator_releases_user_secrets(
    cluster: LocalCluster, namespace: str, api: Client, operator: OperatorProcess
) -> None:
    """The original put an ownerReference to the env on every input and a finalizer on the env;
    the operator removes both, so the garbage collector can never take a user's secret with it."""
    host = f"registry.{namespace}.svc.cluster.local"
    apply(
        cluster,
        namespace,
        push_format_secret("imagepushsecret-example", host, "u", "p"),
        push_format_secret("formerly-listed", "ghcr.io", "u", "p"),
        build_env("example", "imagepushsecret-example"),
    )
    wait_ready(api, namespace, "example")
    env = must_get(api, IMAGE_BUILD_ENVS, namespace, "example")
    back_reference = {
        "apiVersion": API_VERSION,
        "kind": "ImageBuildEnv",
        "name": "example",
        "uid": env["metadata"]["uid"],
        "controller": False,
        "blockOwnerDeletion": False,
    }
    # What the original left behind: back-references on inputs (also on one no longer listed),
    # its finalizer and status.secretRefs.
    for name in ("imagepushsecret-example", "formerly-listed"):
        cluster.kubectl(
            "patch", "-n", namespace, "secret", name, "--type=merge",
            "-p", json.dumps({"metadata": {"ownerReferences": [back_reference]}}),
        )  # fmt: skip
    cluster.kubectl(
        "patch", "-n", namespace, "imagebuildenv", "example", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {"secretRefs": ["imagepushsecret-example", "formerly-listed"]}}),
    )  # fmt: skip
    cluster.kubectl(
        "patch", "-n", namespace, "imagebuildenv", "example", "--type=merge",
        "-p", json.dumps({"metadata": {"finalizers": [FINALIZER]}}),
    )  # fmt: skip

    def migrated() -> bool:
        current = must_get(api, IMAGE_BUILD_ENVS, namespace, "example")
        return (
            not current["metadata"].get("finalizers")
            and "secretRefs" not in (current.get("status") or {})
            and all(
                not must_get(api, SECRETS, namespace, name)["metadata"].get("ownerReferences")
                for name in ("imagepushsecret-example", "formerly-listed")
            )
        )

    wait_for(migrated, 10, "back-references, finalizer and secretRefs removed")
    cluster.kubectl("delete", "-n", namespace, "imagebuildenv", "example", "--wait=true", "--timeout=30s")
    wait_for(
        lambda: get(api, SECRETS, namespace, "imagebuildenv-example-conf") is None,
        GC_TIMEOUT,
        "the env's conf secret garbage-collected",
        interval=0.5,
    )
    assert get(api, SECRETS, namespace, "imagepushsecret-example") is not None
    assert get(api, SECRETS, namespace, "formerly-listed") is not None
