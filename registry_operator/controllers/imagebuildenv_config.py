"""The merged build configuration of an ImageBuildEnv (`imagebuildenv-<name>-conf`); pure.

Merge rule (also in the CRD's description of `spec.secrets`):
* `.dockerconfigjson` and `config.json`: the union of the inputs' docker configs, the same JSON under
  both keys (docker/buildah read `config.json`, kubelet-style tools `.dockerconfigjson`). For a host
  several inputs have, the later input wins. `username`/`password` entries are kept (normalised to
  `auth`), unlike the original, which dropped them.
* `makisu.yaml`: the same credentials in makisu's registry config. When the input a host's
  credentials come from has a `ca.crt`, that host trusts `<MAKISU_CONFIG_DIR>/ca-<i>.crt`.
* `ca-<i>.crt`: the `ca.crt` of input i (position in `spec.secrets`, from 0). One file per input,
  because makisu takes one CA file per host and different registries may have different CAs.
* `registry`, `ca.crt`, `username`, `password`: each from the first input that has the key (the
  original copied every key of the first input only, so a second push secret's keys never showed).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Final

from registry_operator.api import constants as c
from registry_operator.dockerconfig import (
    Auths,
    docker_config_from_secret,
    merge,
    render_docker_config,
    render_makisu_yaml,
)

# Where the makisu wrapper (and the original's example jobs) mount `imagebuildenv-<name>-conf`.
MAKISU_CONFIG_DIR: Final = "/makisu-internal/config"

# Keys copied from the first input that has them (push/pull secrets carry all four).
PASSTHROUGH_KEYS: Final = (
    c.SECRET_KEY_REGISTRY,
    c.SECRET_KEY_CA_CERT,
    c.SECRET_KEY_USERNAME,
    c.SECRET_KEY_PASSWORD,
)


def input_ca_key(index: int) -> str:
    """Data key of the CA of input `index` in the merged secret."""
    return f"ca-{index}.crt"


def input_ca_path(index: int) -> str:
    """Where a build pod that mounts the merged secret at MAKISU_CONFIG_DIR finds that CA."""
    return f"{MAKISU_CONFIG_DIR}/{input_ca_key(index)}"


def _plain_value(secret: Mapping[str, Any], key: str) -> bytes:
    """A data value decoded; b"" when absent or not base64 (the API only ever returns base64)."""
    value = (secret.get("data") or {}).get(key)
    if not value:
        return b""
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return b""


def merged_config(inputs: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """Plain (not base64) data of the merged secret from the input Secrets, in `spec.secrets` order.

    Raises `DockerConfigError` (message names the secret and key) for an unusable input.
    """
    configs: list[Auths] = []
    ca_path_of_host: dict[str, str] = {}
    data: dict[str, bytes] = {}
    for index, secret in enumerate(inputs):
        auths = docker_config_from_secret(secret)
        configs.append(auths)
        ca_cert = _plain_value(secret, c.SECRET_KEY_CA_CERT)
        if ca_cert:
            data[input_ca_key(index)] = ca_cert
        for host in auths:
            # The host's credentials now come from this input, so does its CA (or none).
            if ca_cert:
                ca_path_of_host[host] = input_ca_path(index)
            else:
                ca_path_of_host.pop(host, None)
        for key in PASSTHROUGH_KEYS:
            value = _plain_value(secret, key)
            if value and key not in data:
                data[key] = value
    auths = merge(configs)
    docker_config = render_docker_config(auths).encode()
    data[c.SECRET_KEY_DOCKER_CONFIG_JSON] = docker_config
    data[c.SECRET_KEY_CONFIG_JSON] = docker_config
    data[c.SECRET_KEY_MAKISU_YAML] = render_makisu_yaml(auths, ca_path_of_host).encode()
    return data


def missing_inputs_message(names: Sequence[str]) -> str:
    """The Ready message for absent inputs, in the apiserver's NotFound wording."""
    quoted = ", ".join(f'"{name}"' for name in names)
    return f"secrets {quoted} not found"
