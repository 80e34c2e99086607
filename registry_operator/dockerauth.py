"""Configuration of one registry's token auth stack: docker_auth 1.14 and distribution v3; pure.

Every path, address and name is a parameter, so the same renderers serve the pod (files mounted
from Secrets/ConfigMaps) and the e2e tests (local processes on 127.0.0.1 with files in a temp dir).

Token flow: the registry challenges clients with realm `https://<hostname>:5001/auth`; docker_auth
authenticates through `ext_auth` (busybox `wget` posting to the authn sidecar, see `authn.py`), applies
the ACL below and signs a JWT with the RSA token key; the registry trusts the token key's
certificate (`rootcertbundle`). `disable_legacy_key_id: true` makes docker_auth put the RFC 7638
thumbprint in the `kid` header, which is what registry v3 looks keys up by.

Default ACL (first match wins; no match means deny). It matches on `labels:` (the original put the
keys directly under `match:`, where docker_auth ignored them and granted push to everyone: bug B2):

1. anonymous (`account: ""`) → nothing;
2. labels `origin: cr` + `accessMode: push` → pull, push;
3. labels `origin: cr` + `accessMode: pull` → pull;
4. labels `origin: cr` (any other authenticated ImageRegistryAccount, e.g. a static one created by
   hand without an `accessMode` label) → pull only. A static account gets push by carrying
   `accessMode: [push]` in its `spec.labels`.

`origin` and `account` are always set by the authn sidecar and cannot be forged through
`spec.labels`. A custom ACL (`spec.auth.acl`, docker_auth's own format) replaces this list whole.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import re2
import yaml

REGISTRY_PORT = 5000
DOCKER_AUTH_PORT = 5001
TOKEN_EXPIRATION_SECONDS = 900
DEFAULT_STORAGE_ROOT = "/var/lib/registry"

# Environment the registry container needs besides its config file: registry v3 exports
# OpenTelemetry traces to localhost:4318 by default and logs errors when nothing listens there.
REGISTRY_ENV: Mapping[str, str] = {"OTEL_TRACES_EXPORTER": "none"}

ACL_ENTRY_KEYS = frozenset({"match", "actions", "comment"})
ACL_MATCH_KEYS = frozenset({"account", "type", "name", "service", "ip", "labels"})
ACL_ACTIONS = frozenset({"pull", "push", "delete", "*"})
_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_SIMPLE_PLACEHOLDERS = frozenset({"account", "type", "name", "service"})


# Go's regexp (what docker_auth compiles) refuses repetitions above 1000 and nesting deeper than 1000;
# C++ RE2 (the google-re2 binding) has the same repetition limit and a smaller memory budget, so a
# pattern it compiles within these bounds compiles in Go too.
MAX_REGEX_REPEAT = 1000
MAX_REGEX_NESTING = 1000
# Escapes C++ RE2 accepts but Go's regexp does not: `\C` (any byte).
_GO_UNSUPPORTED_ESCAPES = re.compile(r"(?<!\\)(?:\\\\)*\\C")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error comes back as an exception; no stderr noise


class AclError(ValueError):
    """An invalid custom ACL; the message names the entry index and key, fit for a condition."""


class DockerAuthConfigError(ValueError):
    """A rendered docker_auth config that docker_auth 1.14 would refuse at start."""


def check_go_regex(pattern: str) -> None:
    """Raise ValueError (message fit for a condition) unless Go's regexp accepts `pattern`.

    RE2 syntax: no look-around (`(?!`, `(?=`), no backreferences, no `\\Z` (use `\\z`),
    repetitions up to {1000}.
    """
    if _GO_UNSUPPORTED_ESCAPES.search(pattern):
        raise ValueError("invalid escape sequence: \\C (not supported by Go's regexp)")
    depth = deepest = 0
    escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif char == ")":
            depth -= 1
    if deepest > MAX_REGEX_NESTING:
        raise ValueError(f"expression nests deeper than {MAX_REGEX_NESTING} groups")
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        message = err.args[0] if err.args else str(err)
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        raise ValueError(f"{message} (RE2 syntax, as docker_auth compiles it)") from None


# --------------------------------------------------------------------------------------------------
# Names


def token_issuer(hostname: str) -> str:
    """JWT issuer; docker_auth's `token.issuer` and the registry's `auth.token.issuer` must agree."""
    return f"Docker Registry Auth {hostname}"


def token_service(hostname: str) -> str:
    return f"Docker Registry {hostname}"


def token_realm(hostname: str, port: int = DOCKER_AUTH_PORT) -> str:
    host = f"[{hostname}]" if ":" in hostname else hostname  # IPv6 literal
    return f"https://{host}:{port}/auth"


# --------------------------------------------------------------------------------------------------
# ACL


def default_acl() -> list[dict[str, Any]]:
    """The default ACL (see the module doc); a fresh list on every call."""
    return [
        {"match": {"account": ""}, "actions": [], "comment": "anonymous users get nothing"},
        {
            "match": {"labels": {"origin": "cr", "accessMode": "push"}},
            "actions": ["pull", "push"],
            "comment": "ImagePushSecret accounts push and pull",
        },
        {
            "match": {"labels": {"origin": "cr", "accessMode": "pull"}},
            "actions": ["pull"],
            "comment": "ImagePullSecret accounts pull",
        },
        {
            "match": {"labels": {"origin": "cr"}},
            "actions": ["pull"],
            "comment": "other ImageRegistryAccounts (no accessMode label) pull",
        },
    ]


def namespace_scoped_acl(registry_namespace: str) -> list[dict[str, Any]]:
    """The default ACL with `repositoryScope: Namespace`: an account touches only repositories under
    its own namespace (the `namespace` label the operator gives it, which an account cannot forge);
    `library/` is shared read-only, written by push accounts of the registry's own namespace.
    docker_auth expands `${labels:namespace}` before compiling the (unanchored) regex, hence ^...$."""
    own = "/^${labels:namespace}/.+$/"
    library = "/^library/.+$/"
    return [
        {"match": {"account": ""}, "actions": [], "comment": "anonymous users get nothing"},
        {
            "match": {"labels": {"origin": "cr", "accessMode": "push"}, "name": own},
            "actions": ["pull", "push"],
            "comment": "ImagePushSecret accounts push and pull their namespace's repositories",
        },
        {
            "match": {"labels": {"origin": "cr"}, "name": own},
            "actions": ["pull"],
            "comment": "every other account pulls its namespace's repositories",
        },
        {
            "match": {
                "labels": {"origin": "cr", "accessMode": "push", "namespace": registry_namespace},
                "name": library,
            },
            "actions": ["pull", "push"],
            "comment": "push accounts of the registry's namespace maintain the shared library/",
        },
        {
            "match": {"labels": {"origin": "cr"}, "name": library},
            "actions": ["pull"],
            "comment": "library/ is shared read-only",
        },
    ]


def _check_pattern(value: str, where: str) -> None:
    for placeholder in _PLACEHOLDER.findall(value):
        if placeholder not in _SIMPLE_PLACEHOLDERS and not (
            placeholder.startswith("labels:") and len(placeholder) > len("labels:")
        ):
            raise AclError(
                f"{where}: unknown placeholder ${{{placeholder}}} "
                "(known: ${account}, ${type}, ${name}, ${service}, ${labels:KEY})"
            )
    if len(value) > 2 and value.startswith("/") and value.endswith("/"):
        # docker_auth compiles Go RE2 after substituting placeholders with quoted literals; one that
        # fails to compile makes docker_auth exit at start.
        try:
            check_go_regex(_PLACEHOLDER.sub("x", value[1:-1]))
        except ValueError as err:
            raise AclError(f"{where}: invalid regular expression {value!r}: {err}") from None


def _check_match(match: object, where: str) -> dict[str, Any]:
    if not isinstance(match, dict):
        raise AclError(f"{where}: must be a mapping")
    for key, value in match.items():
        if key not in ACL_MATCH_KEYS:
            raise AclError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(ACL_MATCH_KEYS))})")
        if key == "labels":
            if not isinstance(value, dict):
                raise AclError(f"{where}.labels: must be a mapping of label name to pattern")
            for label, pattern in value.items():
                if not isinstance(label, str) or not isinstance(pattern, str):
                    raise AclError(f"{where}.labels: {label!r} must map a string to a string pattern")
                _check_pattern(pattern, f"{where}.labels.{label}")
        elif not isinstance(value, str):
            raise AclError(f"{where}.{key}: must be a string")
        elif key == "ip":
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise AclError(f"{where}.ip: {value!r} is not an IP address or CIDR range") from None
        else:
            _check_pattern(value, f"{where}.{key}")
    return dict(match)


def validate_acl(acl: object) -> list[dict[str, Any]]:
    """Check a custom ACL in docker_auth's format and return a copy; raise `AclError` if invalid.

    Each entry is `{match: {...}, actions: [...], comment?: str}`; `match` keys are `account`,
    `type`, `name`, `service`, `ip` (strings) and `labels` (label → pattern); `actions` is a list of
    `pull`, `push`, `delete`, `*` (empty = deny). An empty ACL is refused: it would deny everyone.
    """
    if not isinstance(acl, list):
        raise AclError("acl: must be a list of entries")
    if not acl:
        raise AclError("acl: must contain at least one entry (an empty ACL denies everyone)")
    validated: list[dict[str, Any]] = []
    for index, entry in enumerate(acl):
        where = f"acl[{index}]"
        if not isinstance(entry, dict):
            raise AclError(f"{where}: must be a mapping with 'match' and 'actions'")
        for key in entry:
            if key not in ACL_ENTRY_KEYS:
                raise AclError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(ACL_ENTRY_KEYS))})")
        if "match" not in entry:
            raise AclError(f"{where}: missing key 'match' (use {{}} to match every request)")
        if "actions" not in entry:
            raise AclError(f"{where}: missing key 'actions' (use [] to deny)")
        match = _check_match(entry["match"], f"{where}.match")
        actions = entry["actions"]
        if not isinstance(actions, list) or not all(isinstance(action, str) for action in actions):
            raise AclError(f"{where}.actions: must be a list of strings")
        for action in actions:
            if action not in ACL_ACTIONS:
                raise AclError(
                    f"{where}.actions: unknown action {action!r} (allowed: {', '.join(sorted(ACL_ACTIONS))})"
                )
        checked: dict[str, Any] = {"match": copy.deepcopy(match), "actions": list(actions)}
        if "comment" in entry:
            if not isinstance(entry["comment"], str):
                raise AclError(f"{where}.comment: must be a string")
            checked["comment"] = entry["comment"]
        validated.append(checked)
    return validated


# --------------------------------------------------------------------------------------------------
# docker_auth


BUSYBOX = "/bin/busybox"  # in the stock cesanta/docker_auth image (Alpine)


def ext_auth_command(authn_url: str, busybox: str = BUSYBOX) -> dict[str, Any]:
    """docker_auth's `ext_auth`: one busybox `wget` that posts `<user> <password>` (stdin) to the sidecar.

    One exec per login, no shell: a shell shim cost twice the CPU (measured in hack/bench). wget
    exits 0 and prints the sidecar's `{"labels": ...}` only for a 2xx answer; anything else (401,
    404, 503, the sidecar down) exits 1, which docker_auth reads as "denied", so every failure fails
    closed. `-Y off`: a proxy configured for the container never sees the credentials. The password
    passes only through stdin and the request body, never argv, env, files or logs.
    """
    return {
        "command": busybox,
        "args": ["wget", "-q", "-Y", "off", "-O", "-", "--post-file=/dev/stdin", authn_url],
    }


def docker_auth_config(
    *,
    token_issuer: str,
    token_cert_path: str,
    token_key_path: str,
    authn_url: str,
    server_addr: str = f":{DOCKER_AUTH_PORT}",
    server_cert_path: str | None = None,
    server_key_path: str | None = None,
    token_expiration: int = TOKEN_EXPIRATION_SECONDS,
    acl: Sequence[Mapping[str, Any]] | None = None,
    busybox: str = BUSYBOX,
) -> dict[str, Any]:
    """docker_auth 1.14 config as a dict.

    The server serves TLS when both `server_cert_path` and `server_key_path` are given (plain HTTP
    otherwise: only for local tests). `ext_auth` is `ext_auth_command(authn_url, busybox)`.
    `acl=None` selects `default_acl()`; a custom ACL is validated (raises `AclError`).
    """
    if (server_cert_path is None) != (server_key_path is None):
        raise ValueError("server_cert_path and server_key_path go together")
    server: dict[str, Any] = {"addr": server_addr}
    if server_cert_path is not None:
        server["certificate"] = server_cert_path
        server["key"] = server_key_path
    return {
        "server": server,
        "token": {
            "issuer": token_issuer,
            "expiration": token_expiration,
            "certificate": token_cert_path,
            "key": token_key_path,
            "disable_legacy_key_id": True,
        },
        "ext_auth": ext_auth_command(authn_url, busybox),
        "acl": default_acl() if acl is None else validate_acl(list(acl)),
    }


_DOCKER_AUTH_TOP_KEYS = frozenset({"server", "token", "ext_auth", "acl"})


def validate_docker_auth_config(config: str | Mapping[str, Any]) -> dict[str, Any]:
    """Check a rendered docker_auth config (YAML text or dict) for what docker_auth 1.14 refuses at start.

    For the controller to refuse rolling a config docker_auth would exit on: raises
    `DockerAuthConfigError` naming the key; returns the parsed config. Checked: YAML syntax, the
    sections this operator renders and no others, `server.addr`, TLS certificate and key given
    together, `token.issuer`/`expiration`/`certificate`/`key`, `ext_auth.command`, and the ACL
    (every pattern compiled with RE2 as docker_auth does, `ip` as an address or CIDR).
    """
    if isinstance(config, str):
        try:
            parsed = yaml.safe_load(config)
        except yaml.YAMLError as err:
            raise DockerAuthConfigError(f"docker_auth config is not valid YAML: {err}") from None
    else:
        parsed = copy.deepcopy(dict(config))
    if not isinstance(parsed, dict):
        raise DockerAuthConfigError("docker_auth config must be a mapping")
    unknown = sorted(set(parsed) - _DOCKER_AUTH_TOP_KEYS)
    if unknown:
        raise DockerAuthConfigError(f"docker_auth config: unexpected sections {unknown}")
    server = parsed.get("server")
    if not isinstance(server, dict) or not isinstance(server.get("addr"), str) or not server["addr"]:
        raise DockerAuthConfigError("docker_auth config: server.addr is required")
    if ("certificate" in server) != ("key" in server):
        raise DockerAuthConfigError("docker_auth config: server.certificate and server.key go together")
    token = parsed.get("token")
    if not isinstance(token, dict):
        raise DockerAuthConfigError("docker_auth config: token section is required")
    for key in ("issuer", "certificate", "key"):
        if not isinstance(token.get(key), str) or not token[key]:
            raise DockerAuthConfigError(f"docker_auth config: token.{key} is required")
    expiration = token.get("expiration")
    if not isinstance(expiration, int) or isinstance(expiration, bool) or expiration <= 0:
        raise DockerAuthConfigError("docker_auth config: token.expiration must be a positive integer")
    ext_auth = parsed.get("ext_auth")
    if not isinstance(ext_auth, dict) or not isinstance(ext_auth.get("command"), str):
        raise DockerAuthConfigError("docker_auth config: ext_auth.command is required")
    args = ext_auth.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise DockerAuthConfigError("docker_auth config: ext_auth.args must be a list of strings")
    try:
        parsed["acl"] = validate_acl(parsed.get("acl"))
    except AclError as err:
        raise DockerAuthConfigError(f"docker_auth config: {err}") from None
    return parsed


def render_docker_auth_config(**kwargs: Any) -> str:
    """`docker_auth_config(**kwargs)` as YAML text."""
    return to_yaml(docker_auth_config(**kwargs))


# --------------------------------------------------------------------------------------------------
# distribution registry v3


def registry_config(
    *,
    tls_cert_path: str,
    tls_key_path: str,
    realm: str,
    service: str,
    issuer: str,
    rootcertbundle: str,
    addr: str = f":{REGISTRY_PORT}",
    http_secret: str | None = None,
    storage_root: str = DEFAULT_STORAGE_ROOT,
    log_level: str = "info",
    http_host: str | None = None,
) -> dict[str, Any]:
    """distribution v3 config as a dict (the container also needs `REGISTRY_ENV`).

    `http_secret` signs upload state and must be the same on every replica. Leave it None to keep
    it out of the config file (a ConfigMap) and set `REGISTRY_HTTP_SECRET` from a Secret instead;
    the env variable overrides the file. `http_host` (e.g. `https://<hostname>`) fixes the base URL
    of Location headers.
    """
    if log_level not in {"error", "warn", "info", "debug"}:
        raise ValueError(f"log level {log_level!r} is not one of error, warn, info, debug")
    http: dict[str, Any] = {
        "addr": addr,
        "tls": {"certificate": tls_cert_path, "key": tls_key_path},
    }
    if http_secret is not None:
        http["secret"] = http_secret
    if http_host is not None:
        http["host"] = http_host
    return {
        "version": "0.1",
        "log": {"level": log_level},
        "storage": {
            "filesystem": {"rootdirectory": storage_root},
            "delete": {"enabled": True},
        },
        "http": http,
        "auth": {
            "token": {
                "realm": realm,
                "service": service,
                "issuer": issuer,
                "rootcertbundle": rootcertbundle,
            }
        },
    }


def render_registry_config(**kwargs: Any) -> str:
    """`registry_config(**kwargs)` as YAML text."""
    return to_yaml(registry_config(**kwargs))


# --------------------------------------------------------------------------------------------------
# Helpers


def to_yaml(document: Mapping[str, Any]) -> str:
    """Deterministic YAML (sorted keys, block style): equal documents render to equal text."""
    return yaml.safe_dump(dict(document), default_flow_style=False, sort_keys=True)


def config_hash(*parts: str | bytes | Mapping[str, Any] | None) -> str:
    """SHA-256 hex over the parts, for the pod-template annotation that rolls pods on change.

    Each part is length-prefixed, so ("ab", "c") and ("a", "bc") differ; mappings are hashed as
    canonical JSON; text is hashed as its UTF-8 bytes; None is distinct from an empty string.
    """
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"N")
            continue
        if isinstance(part, Mapping):
            data = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str).encode()
            tag = b"M"
        else:
            data, tag = (part.encode() if isinstance(part, str) else bytes(part)), b"B"
        digest.update(tag + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()
