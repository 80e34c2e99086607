"""The merged build configuration: docker configs, makisu.yaml with per-input CAs, copied keys."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml

from registry_operator.controllers.imagebuildenv_config import (
    MAKISU_CONFIG_DIR,
    merged_config,
    missing_inputs_message,
)
from registry_operator.dockerconfig import DockerConfigError

OWN = "registry.infra.svc.cluster.local"
HUB = "docker.io"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def auth_config(**hosts: tuple[str, str]) -> str:
    return json.dumps({"auths": {host: {"auth": b64(f"{user}:{pw}")} for host, (user, pw) in hosts.items()}})


def secret(name: str, secret_type: str = "Opaque", **data: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "type": secret_type,
        "data": {key.replace("_", "."): b64(value) for key, value in data.items()},
    }


def push_secret(name: str, host: str, user: str, password: str, ca: str = "") -> dict[str, Any]:
    """The format the ImagePushSecret controller writes (ARCHITECTURE §1)."""
    config = json.dumps({"auths": {host: {"auth": b64(f"{user}:{password}")}}})
    data = {
        "config.json": config,
        ".dockerconfigjson": config,
        "registry": host,
        "username": user,
        "password": password,
    }
    if ca:
        data["ca.crt"] = ca
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "type": "Opaque",
        "data": {key: b64(value) for key, value in data.items()},
    }


def docker_auths(data: dict[str, bytes]) -> dict[str, str]:
    config = json.loads(data[".dockerconfigjson"])
    return {host: base64.b64decode(entry["auth"]).decode() for host, entry in config["auths"].items()}


def test_later_inputs_win_per_host_and_both_docker_keys_hold_the_union() -> None:
    first = secret(
        "a", config_json=json.dumps({"auths": {OWN: {"auth": b64("old:1")}, HUB: {"auth": b64("hub:2")}}})
    )
    second = secret(
        "b", "kubernetes.io/dockerconfigjson", _dockerconfigjson=auth_config(**{OWN: ("new", "3")})
    )
    data = merged_config([first, second])
    assert docker_auths(data) == {OWN: "new:3", HUB: "hub:2"}
    assert data["config.json"] == data[".dockerconfigjson"]
    makisu = yaml.safe_load(data["makisu.yaml"])
    assert makisu[OWN][".*"]["security"]["basic"] == {"username": "new", "password": "3"}
    assert makisu[HUB][".*"]["security"]["basic"] == {"username": "hub", "password": "2"}


def test_username_password_entries_are_kept() -> None:
    config = json.dumps({"auths": {HUB: {"username": "me", "password": "pw:with:colons"}}})
    data = merged_config([secret("a", config_json=config)])
    assert docker_auths(data) == {HUB: "me:pw:with:colons"}
    assert yaml.safe_load(data["makisu.yaml"])[HUB][".*"]["security"]["basic"]["password"] == "pw:with:colons"


def test_registry_ca_username_password_come_from_the_first_input_that_has_each() -> None:
    external = secret("external", config_json=auth_config(**{HUB: ("hub", "x")}), username="hubuser")
    push = push_secret("imagepushsecret-example", OWN, "push.ns.example.1", "pw", ca="CA-PEM")
    data = merged_config([external, push])
    assert data["username"] == b"hubuser"  # the first input has it
    assert data["registry"] == OWN.encode()  # only the second has these
    assert data["password"] == b"pw"
    assert data["ca.crt"] == b"CA-PEM"


def test_each_inputs_ca_is_its_own_key_and_makisu_trusts_it_only_for_that_inputs_hosts() -> None:
    other = "registry.other.svc.cluster.local"
    first = push_secret("one", OWN, "u1", "p1", ca="CA-ONE")
    hub = secret("hub", config_json=auth_config(**{HUB: ("hub", "x")}))
    third = push_secret("three", other, "u3", "p3", ca="CA-THREE")
    data = merged_config([first, hub, third])
    assert data["ca-0.crt"] == b"CA-ONE"
    assert data["ca-2.crt"] == b"CA-THREE"
    assert "ca-1.crt" not in data
    makisu = yaml.safe_load(data["makisu.yaml"])
    assert makisu[OWN][".*"]["security"]["tls"] == {"ca": {"cert": {"path": f"{MAKISU_CONFIG_DIR}/ca-0.crt"}}}
    assert makisu[other][".*"]["security"]["tls"]["ca"]["cert"]["path"] == "/makisu-internal/config/ca-2.crt"
    # A public registry keeps makisu's default trust bundle.
    assert "tls" not in makisu[HUB][".*"]["security"]


def test_a_later_input_without_ca_takes_the_host_and_its_ca_away() -> None:
    first = push_secret("one", OWN, "u1", "p1", ca="CA-ONE")
    override = secret("override", config_json=auth_config(**{OWN: ("u2", "p2")}))
    data = merged_config([first, override])
    makisu = yaml.safe_load(data["makisu.yaml"])
    assert makisu[OWN][".*"]["security"] == {"basic": {"username": "u2", "password": "p2"}}
    assert data["ca-0.crt"] == b"CA-ONE"  # still there for builds that mount it explicitly


def test_no_inputs_gives_an_empty_config() -> None:
    data = merged_config([])
    assert json.loads(data[".dockerconfigjson"]) == {"auths": {}}
    assert yaml.safe_load(data["makisu.yaml"]) == {}
    assert set(data) == {".dockerconfigjson", "config.json", "makisu.yaml"}


def test_opaque_inputs_may_use_dockerconfigjson() -> None:
    data = merged_config([secret("a", _dockerconfigjson=auth_config(**{OWN: ("u", "p")}))])
    assert docker_auths(data) == {OWN: "u:p"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            secret("tls", "kubernetes.io/tls", tls_crt="x"),
            "secret tls has unsupported type kubernetes.io/tls",
        ),
        (secret("opaque", other="x"), 'secret opaque does not specify key "config.json"'),
        (
            secret("pull", "kubernetes.io/dockerconfigjson", config_json="{}"),
            'secret pull does not specify key ".dockerconfigjson"',
        ),
        (secret("broken", config_json="{not json"), 'secret broken key "config.json": invalid JSON'),
    ],
)
def test_invalid_inputs_name_the_secret_and_key(bad: dict[str, Any], message: str) -> None:
    good = push_secret("good", OWN, "u", "p")
    with pytest.raises(DockerConfigError) as raised:
        merged_config([good, bad])
    assert str(raised.value).startswith(message)


def test_missing_inputs_message_uses_the_apiservers_wording() -> None:
    assert missing_inputs_message(["x"]) == 'secrets "x" not found'
    assert missing_inputs_message(["a", "b"]) == 'secrets "a", "b" not found'
