"""Docker config JSON (`.dockerconfigjson` / `config.json`) and makisu registry config; pure.

Written format, byte-compatible with the original operator: compact JSON, keys sorted,
`{"auths":{"<host>":{"auth":"<base64(user:password)>"}}}` and nothing else.

Read format: entries with `auth`, or with `username` + `password` (docker writes those too; the
original dropped them). When both are present `auth` wins, as in the docker CLI. Entries with no
basic credentials at all (e.g. `{}` left by a credential helper, or an `identitytoken`) are skipped:
they carry nothing a build tool could use from a Secret.

Errors are `DockerConfigError` whose message names the input (`secret <name>`, key), so the
ImageBuildEnv controller can put it in a condition as it is. Messages never contain credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import yaml

DOCKERCONFIGJSON_TYPE = "kubernetes.io/dockerconfigjson"
OPAQUE_TYPE = "Opaque"
DOCKERCONFIGJSON_KEY = ".dockerconfigjson"
CONFIG_JSON_KEY = "config.json"


class DockerConfigError(ValueError):
    """An unusable docker config; the message names the input and is safe to show to users."""


class Credentials(NamedTuple):
    username: str
    password: str


Auths = dict[str, Credentials]
"""Registry host (as written in the config: no scheme, optional port) → basic credentials."""


def _prefix(source: str | None, message: str) -> str:
    return f"{source}: {message}" if source else message


def encode_auth(username: str, password: str) -> str:
    """base64 (standard, padded) of `username:password`; a colon in the user name is refused."""
    if ":" in username:
        raise DockerConfigError("user name must not contain ':' (basic auth splits at the first colon)")
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def decode_auth(auth: str, *, source: str | None = None) -> Credentials:
    """Split a docker `auth` value into user and password at the first colon."""
    try:
        raw = base64.b64decode(auth, validate=True)
    except (binascii.Error, ValueError):
        raise DockerConfigError(_prefix(source, "basic auth: auth value is not valid base64")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DockerConfigError(_prefix(source, "basic auth: auth value is not UTF-8")) from None
    username, colon, password = text.partition(":")
    if not colon:
        raise DockerConfigError(
            _prefix(source, "basic auth: auth value has no ':' between user and password")
        )
    if not username:
        raise DockerConfigError(_prefix(source, "basic auth: empty user name"))
    return Credentials(username, password)


def render_docker_config(auths: Mapping[str, Credentials | tuple[str, str]]) -> str:
    """The docker config JSON for `auths`: compact, sorted keys, one `auth` per host."""
    document = {
        "auths": {host: {"auth": encode_auth(*credentials)} for host, credentials in auths.items()},
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def docker_config_for(host: str, username: str, password: str) -> str:
    """The single-host docker config the push/pull secret controllers write."""
    return render_docker_config({host: Credentials(username, password)})


def parse_docker_config(raw: str | bytes, *, source: str | None = None) -> Auths:
    """Host → credentials from docker config JSON text; see the module doc for accepted entries."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        # The JSON error's position is useful; the text itself is not echoed (it holds secrets).
        raise DockerConfigError(_prefix(source, f"invalid JSON: {_json_error_position(err)}")) from None
    if not isinstance(document, dict):
        raise DockerConfigError(_prefix(source, "docker config must be a JSON object"))
    entries = document.get("auths", {})
    if entries is None:
        entries = {}
    if not isinstance(entries, dict):
        raise DockerConfigError(_prefix(source, '"auths" must be a JSON object'))
    result: Auths = {}
    for host, entry in entries.items():
        where = _prefix(source, f"auths[{host!r}]")
        if not isinstance(entry, dict):
            raise DockerConfigError(f"{where}: entry must be a JSON object")
        credentials = _entry_credentials(entry, where)
        if credentials is not None:
            result[host] = credentials
    return result


def _json_error_position(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at line {err.lineno} column {err.colno}"
    return "not UTF-8 text"


def _entry_credentials(entry: Mapping[str, Any], where: str) -> Credentials | None:
    auth = entry.get("auth")
    if auth not in (None, ""):
        if not isinstance(auth, str):
            raise DockerConfigError(f"{where}: auth must be a string")
        return decode_auth(auth, source=where)
    username, password = entry.get("username"), entry.get("password")
    if username in (None, "") and password in (None, ""):
        return None
    if not isinstance(username, str) or not username:
        raise DockerConfigError(f"{where}: password without username")
    if not isinstance(password, str):
        raise DockerConfigError(f"{where}: username without password")
    if ":" in username:
        raise DockerConfigError(f"{where}: user name must not contain ':'")
    return Credentials(username, password)


def merge(configs: Iterable[Mapping[str, Credentials]]) -> Auths:
    """Union of several parsed configs; a later config wins for a host present in several."""
    merged: Auths = {}
    for config in configs:
        merged.update(config)
    return merged


def _secret_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return base64.b64decode(value, validate=True)


def docker_config_from_secret(secret: Mapping[str, Any]) -> Auths:
    """Credentials from a Secret object (as the API returns it: `data` values base64).

    `kubernetes.io/dockerconfigjson` → `.dockerconfigjson`; `Opaque` → `config.json` (falling back to
    `.dockerconfigjson`); other types are refused. `data` values may also be raw bytes.
    """
    metadata = secret.get("metadata") or {}
    name = metadata.get("name", "<unnamed>")
    source = f"secret {name}"
    secret_type = secret.get("type") or OPAQUE_TYPE
    if secret_type == DOCKERCONFIGJSON_TYPE:
        candidates = [DOCKERCONFIGJSON_KEY]
    elif secret_type == OPAQUE_TYPE:
        candidates = [CONFIG_JSON_KEY, DOCKERCONFIGJSON_KEY]
    else:
        raise DockerConfigError(
            f"{source} has unsupported type {secret_type}, expected {DOCKERCONFIGJSON_TYPE} or {OPAQUE_TYPE}"
        )
    data = secret.get("data")
    if not data:
        raise DockerConfigError(f"{source} does not specify data")
    for key in candidates:
        value = data.get(key)
        if value in (None, "", b""):
            continue
        try:
            raw = _secret_bytes(value)
        except (binascii.Error, ValueError):
            raise DockerConfigError(f'{source} key "{key}" is not valid base64') from None
        return parse_docker_config(raw, source=f'{source} key "{key}"')
    raise DockerConfigError(f'{source} does not specify key "{candidates[0]}"')


def makisu_config(
    auths: Mapping[str, Credentials], ca_cert_paths: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """makisu's registry config (`--registry-config`) as a dict; see `render_makisu_yaml`.

    CA paths for hosts without credentials are ignored.
    """
    ca_cert_paths = ca_cert_paths or {}
    document: dict[str, Any] = {}
    for host, credentials in auths.items():
        security: dict[str, Any] = {
            "basic": {"username": credentials.username, "password": credentials.password},
        }
        if host in ca_cert_paths:
            security["tls"] = {"ca": {"cert": {"path": ca_cert_paths[host]}}}
        document[host] = {".*": {"security": security}}
    return document


def render_makisu_yaml(
    auths: Mapping[str, Credentials], ca_cert_paths: Mapping[str, str] | None = None
) -> str:
    """makisu.yaml: host → repository regex `.*` → `security.basic.{username,password}`.

    With `ca_cert_paths[host]`, that host also gets `security.tls.ca.cert.path` (makisu's
    `httputil.TLSConfig`: a PEM file, or a directory whose files are concatenated). makisu then
    trusts the system pool plus that file *instead of* its default bundle
    `/makisu-internal/certs/cacerts.pem`, so set it only for the hosts the CA serves (the operator's
    registries), never for public registries. No hosts → `{}`.
    """
    return yaml.safe_dump(makisu_config(auths, ca_cert_paths), default_flow_style=False, sort_keys=True)
