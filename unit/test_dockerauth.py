from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import acl_fidelity
import acl_model
import pytest
import yaml

from registry_operator import dockerauth
from registry_operator.dockerauth import AclError

HOSTNAME = "registry.infra.svc.cluster.local"


def _allowed(acl: list[dict[str, Any]], account: str, labels: dict[str, list[str]], name: str) -> set[str]:
    # The model held to docker_auth's own answers (acl_fidelity.ROWS, checked in the lane).
    return acl_model.allowed(
        acl, account=account, labels=labels, name=name, requested={"pull", "push", "delete"}
    )


@pytest.mark.parametrize("row", acl_fidelity.ROWS, ids=lambda row: row.case)
def test_acl_model_agrees_with_docker_auth(row: acl_fidelity.Row) -> None:
    labels = {**acl_fidelity.LABELS, "origin": ["cr"], "account": [acl_fidelity.ACCOUNT]}
    got = acl_model.allowed(
        row.acl, account=acl_fidelity.ACCOUNT, labels=labels, name=row.name, requested={"pull", "push"}
    )
    assert got == row.expected


def test_default_acl_semantics() -> None:
    acl = dockerauth.default_acl()
    push = {"origin": ["cr"], "accessMode": ["push"], "account": ["push.ns.x.1"]}
    pull = {"origin": ["cr"], "accessMode": ["pull"], "account": ["pull.ns.x.1"]}
    static = {"origin": ["cr"], "account": ["ci-bot"]}
    static_push = {"origin": ["cr"], "account": ["ci-bot"], "accessMode": ["push"]}
    assert _allowed(acl, "push.ns.x.1", push, "any/repo") == {"pull", "push"}
    assert _allowed(acl, "pull.ns.x.1", pull, "any/repo") == {"pull"}
    assert _allowed(acl, "ci-bot", static, "any/repo") == {"pull"}
    assert _allowed(acl, "ci-bot", static_push, "any/repo") == {"pull", "push"}
    # Bug B2: anonymous callers and callers without the sidecar's labels got push+pull.
    assert _allowed(acl, "", {}, "any/repo") == set()
    assert _allowed(acl, "someone", {}, "any/repo") == set()
    assert _allowed(acl, "someone", {"accessMode": ["push"]}, "any/repo") == set()


def test_default_acl_matches_only_on_known_keys() -> None:
    for entry in dockerauth.default_acl():
        assert set(entry["match"]) <= dockerauth.ACL_MATCH_KEYS
    assert dockerauth.validate_acl(dockerauth.default_acl()) == dockerauth.default_acl()


def test_default_acl_is_a_fresh_copy() -> None:
    first = dockerauth.default_acl()
    first[0]["actions"].append("push")
    assert dockerauth.default_acl()[0]["actions"] == []


def test_valid_custom_acl_is_copied() -> None:
    acl: list[dict[str, Any]] = [
        {
            "match": {"account": "/.+/", "name": "${labels:namespace}/*"},
            "actions": ["push", "pull"],
            "comment": "ns",
        },
        {"match": {"ip": "10.0.0.0/8", "labels": {"team": "/a|b/"}}, "actions": ["*"]},
        {"match": {"type": "registry", "service": "Docker*"}, "actions": []},
        {"match": {}, "actions": ["pull"]},
    ]
    validated = dockerauth.validate_acl(acl)
    assert validated == acl
    validated[0]["match"]["account"] = "changed"
    assert acl[0]["match"]["account"] == "/.+/"


@pytest.mark.parametrize(
    ("acl", "message"),
    [
        ({"match": {}}, "acl: must be a list of entries"),
        ([], "acl: must contain at least one entry"),
        (["pull"], "acl[0]: must be a mapping"),
        ([{"match": {}, "actions": [], "extra": 1}], "acl[0]: unknown key 'extra'"),
        ([{"actions": []}], "acl[0]: missing key 'match'"),
        ([{"match": {}}], "acl[0]: missing key 'actions'"),
        ([{"match": {}, "actions": []}, {"match": [], "actions": []}], "acl[1].match: must be a mapping"),
        (
            [{"match": {"origin": "cr", "accessMode": "push"}, "actions": ["push"]}],
            "acl[0].match: unknown key 'origin' (allowed: account, ip, labels, name, service, type)",
        ),
        ([{"match": {"labels": ["origin"]}, "actions": []}], "acl[0].match.labels: must be a mapping"),
        (
            [{"match": {"labels": {"origin": ["cr"]}}, "actions": []}],
            "acl[0].match.labels: 'origin' must map",
        ),
        ([{"match": {"account": 5}, "actions": []}], "acl[0].match.account: must be a string"),
        ([{"match": {"ip": "10.0.0.300"}, "actions": []}], "acl[0].match.ip: '10.0.0.300' is not an IP"),
        ([{"match": {"name": "/([a-z/"}, "actions": []}], "acl[0].match.name: invalid regular expression"),
        (
            [{"match": {"name": "${label:ns}/*"}, "actions": []}],
            "acl[0].match.name: unknown placeholder ${label:ns}",
        ),
        (
            [{"match": {"labels": {"a": "${nope}"}}, "actions": []}],
            "acl[0].match.labels.a: unknown placeholder",
        ),
        (
            [{"match": {"name": "/^(?!admin/).*$/"}, "actions": ["pull"]}],
            "acl[0].match.name: invalid regular expression '/^(?!admin/).*$/': invalid perl operator: (?!",
        ),
        (
            [{"match": {"account": "/\\Z/"}, "actions": []}],
            "acl[0].match.account: invalid regular expression '/\\\\Z/': invalid escape sequence: \\Z",
        ),
        (
            [{"match": {"labels": {"team": "/a{1001}/"}}, "actions": []}],
            "acl[0].match.labels.team: invalid regular expression '/a{1001}/': invalid repetition size",
        ),
        ([{"match": {"name": "/\\C/"}, "actions": []}], "acl[0].match.name: invalid regular expression"),
        ([{"match": {"name": "/" + "(" * 1001 + ")" * 1001 + "/"}, "actions": []}], "acl[0].match.name"),
        ([{"match": {}, "actions": "pull"}], "acl[0].actions: must be a list of strings"),
        ([{"match": {}, "actions": ["pull", "puhs"]}], "acl[0].actions: unknown action 'puhs'"),
        ([{"match": {}, "actions": [], "comment": 3}], "acl[0].comment: must be a string"),
    ],
)
def test_invalid_custom_acl(acl: object, message: str) -> None:
    with pytest.raises(AclError) as info:
        dockerauth.validate_acl(acl)
    assert str(info.value).startswith(message)


def test_names() -> None:
    assert dockerauth.token_issuer(HOSTNAME) == f"Docker Registry Auth {HOSTNAME}"
    assert dockerauth.token_service(HOSTNAME) == f"Docker Registry {HOSTNAME}"
    assert dockerauth.token_realm(HOSTNAME) == f"https://{HOSTNAME}:5001/auth"
    assert dockerauth.token_realm("127.0.0.1", 15001) == "https://127.0.0.1:15001/auth"
    assert dockerauth.token_realm("::1", 15001) == "https://[::1]:15001/auth"


def _pod_docker_auth(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "server_cert_path": "/tls/tls.crt",
        "server_key_path": "/tls/tls.key",
        "token_issuer": dockerauth.token_issuer(HOSTNAME),
        "token_cert_path": "/token/tls.crt",
        "token_key_path": "/token/tls.key",
        "authn_url": "http://127.0.0.1:5002/authn",
    }
    params.update(overrides)
    return dockerauth.docker_auth_config(**params)


def test_docker_auth_config_for_the_pod() -> None:
    config = _pod_docker_auth()
    assert config["server"] == {"addr": ":5001", "certificate": "/tls/tls.crt", "key": "/tls/tls.key"}
    assert config["token"] == {
        "issuer": f"Docker Registry Auth {HOSTNAME}",
        "expiration": 900,
        "certificate": "/token/tls.crt",
        "key": "/token/tls.key",
        "disable_legacy_key_id": True,
    }
    assert config["ext_auth"] == {
        "command": "/bin/busybox",
        "args": [
            "wget",
            "-q",
            "-Y",
            "off",
            "-O",
            "-",
            "--post-file=/dev/stdin",
            "http://127.0.0.1:5002/authn",
        ],
    }
    assert config["acl"] == dockerauth.default_acl()
    assert set(config) == {"server", "token", "ext_auth", "acl"}


def test_docker_auth_config_yaml_round_trip() -> None:
    params: dict[str, Any] = {
        "server_cert_path": "/tls/tls.crt",
        "server_key_path": "/tls/tls.key",
        "token_issuer": "iss",
        "token_cert_path": "/t.crt",
        "token_key_path": "/t.key",
        "authn_url": "http://127.0.0.1:5002/authn",
    }
    rendered = dockerauth.render_docker_auth_config(**params)
    parsed = yaml.safe_load(rendered)
    assert parsed == dockerauth.docker_auth_config(**params)
    # The anonymous rule must survive YAML as an empty string, not null.
    assert parsed["acl"][0]["match"] == {"account": ""}
    assert dockerauth.render_docker_auth_config(**params) == rendered


def test_custom_acl_replaces_default_and_is_validated() -> None:
    custom = [{"match": {"account": "admin"}, "actions": ["*"]}]
    assert _pod_docker_auth(acl=custom)["acl"] == custom
    with pytest.raises(AclError, match=r"acl\[0\]\.match: unknown key 'acount'"):
        _pod_docker_auth(acl=[{"match": {"acount": "admin"}, "actions": ["*"]}])


def test_docker_auth_config_for_local_processes(tmp_path: Path) -> None:
    config = _pod_docker_auth(
        server_addr="127.0.0.1:15001",
        server_cert_path=str(tmp_path / "tls.crt"),
        server_key_path=str(tmp_path / "tls.key"),
        token_expiration=60,
    )
    assert config["server"]["addr"] == "127.0.0.1:15001"
    assert config["server"]["certificate"] == str(tmp_path / "tls.crt")
    assert config["token"]["expiration"] == 60
    plain = _pod_docker_auth(server_cert_path=None, server_key_path=None)
    assert plain["server"] == {"addr": ":5001"}
    with pytest.raises(ValueError, match="go together"):
        _pod_docker_auth(server_key_path=None)


def _pod_registry(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "tls_cert_path": "/tls/tls.crt",
        "tls_key_path": "/tls/tls.key",
        "realm": dockerauth.token_realm(HOSTNAME),
        "service": dockerauth.token_service(HOSTNAME),
        "issuer": dockerauth.token_issuer(HOSTNAME),
        "rootcertbundle": "/token/ca.crt",
    }
    params.update(overrides)
    return dockerauth.registry_config(**params)


def test_registry_config_for_the_pod() -> None:
    config = _pod_registry(http_secret="s3cret")
    assert config["version"] == "0.1"
    assert config["http"] == {
        "addr": ":5000",
        "secret": "s3cret",
        "tls": {"certificate": "/tls/tls.crt", "key": "/tls/tls.key"},
    }
    assert config["auth"] == {
        "token": {
            "realm": f"https://{HOSTNAME}:5001/auth",
            "service": f"Docker Registry {HOSTNAME}",
            "issuer": f"Docker Registry Auth {HOSTNAME}",
            "rootcertbundle": "/token/ca.crt",
        }
    }
    assert config["storage"] == {
        "filesystem": {"rootdirectory": "/var/lib/registry"},
        "delete": {"enabled": True},
    }
    assert config["log"] == {"level": "info"}
    assert dockerauth.REGISTRY_ENV == {"OTEL_TRACES_EXPORTER": "none"}


def test_registry_config_keeps_secret_out_when_not_given() -> None:
    config = _pod_registry()
    assert "secret" not in config["http"]
    assert "secret" not in dockerauth.render_registry_config(
        tls_cert_path="/c", tls_key_path="/k", realm="r", service="s", issuer="i", rootcertbundle="/b"
    )


def test_registry_config_for_local_processes(tmp_path: Path) -> None:
    config = _pod_registry(
        addr="127.0.0.1:15000",
        realm=dockerauth.token_realm("127.0.0.1", 15001),
        storage_root=str(tmp_path / "data"),
        log_level="debug",
        http_host="https://127.0.0.1:15000",
    )
    assert config["http"]["addr"] == "127.0.0.1:15000"
    assert config["http"]["host"] == "https://127.0.0.1:15000"
    assert config["auth"]["token"]["realm"] == "https://127.0.0.1:15001/auth"
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path / "data")
    assert config["log"]["level"] == "debug"
    with pytest.raises(ValueError, match="log level"):
        _pod_registry(log_level="verbose")


def test_issuer_agrees_between_registry_and_docker_auth() -> None:
    assert _pod_registry()["auth"]["token"]["issuer"] == _pod_docker_auth()["token"]["issuer"]


def test_config_hash() -> None:
    base = dockerauth.config_hash("a", b"cert", {"k": 1, "j": 2})
    assert len(base) == 64
    assert base == dockerauth.config_hash("a", b"cert", {"j": 2, "k": 1})
    assert base != dockerauth.config_hash("a", b"cert2", {"k": 1, "j": 2})
    assert dockerauth.config_hash("ab", "c") != dockerauth.config_hash("a", "bc")
    assert dockerauth.config_hash(None) != dockerauth.config_hash("")
    assert dockerauth.config_hash("x", None) != dockerauth.config_hash(None, "x")
    assert dockerauth.config_hash("text") == dockerauth.config_hash(b"text")
    assert dockerauth.config_hash() != dockerauth.config_hash("")


def test_go_regex_accepts_what_re2_accepts() -> None:
    for pattern in ("^team-.*$", "a{1000}", "(?i)abc", r"\d+", "[[:alpha:]]", r"\\C", r"\z"):
        dockerauth.check_go_regex(pattern)


def test_validate_docker_auth_config() -> None:
    rendered = dockerauth.to_yaml(_pod_docker_auth())
    assert dockerauth.validate_docker_auth_config(rendered) == yaml.safe_load(rendered)
    config = yaml.safe_load(rendered)
    broken: list[tuple[Any, str]] = [
        ("server: [", "not valid YAML"),
        ("- a", "must be a mapping"),
        ({**config, "users": {}}, "unexpected sections ['users']"),
        ({**config, "server": {}}, "server.addr is required"),
        ({**config, "server": {"addr": ":5001", "key": "k"}}, "server.certificate and server.key"),
        ({**config, "token": {**config["token"], "issuer": ""}}, "token.issuer is required"),
        ({**config, "token": {**config["token"], "expiration": 0}}, "token.expiration"),
        ({**config, "ext_auth": {}}, "ext_auth.command is required"),
        ({**config, "acl": [{"match": {"name": "/\\Z/"}, "actions": []}]}, "acl[0].match.name: invalid"),
        (
            {**config, "acl": [{"match": {"repository": "x"}, "actions": ["push"]}]},
            "unknown key 'repository'",
        ),
    ]
    for document, message in broken:
        with pytest.raises(dockerauth.DockerAuthConfigError, match=re.escape(message)):
            dockerauth.validate_docker_auth_config(document)


@pytest.mark.parametrize(
    ("namespace", "access_mode", "repository", "expected"),
    [
        ("team-a", "push", "team-a/app", {"pull", "push"}),
        ("team-a", "push", "team-a/x/y", {"pull", "push"}),
        ("team-a", "push", "team-b/app", set()),
        ("team-a", "push", "team-ab/app", set()),  # anchored: a prefix of another namespace is not it
        ("team-a", "pull", "team-a/app", {"pull"}),
        ("team-a", "push", "library/base", {"pull"}),
        ("infra", "push", "library/base", {"pull", "push"}),  # the registry's own namespace
        ("infra", "pull", "library/base", {"pull"}),
    ],
)
def test_namespace_scoped_acl(namespace: str, access_mode: str, repository: str, expected: set[str]) -> None:
    # The same decisions the docker_auth lane checks against the real server.
    labels = {"origin": ["cr"], "accessMode": [access_mode], "namespace": [namespace]}
    granted = acl_model.allowed(
        dockerauth.validate_acl(dockerauth.namespace_scoped_acl("infra")),
        account=f"{access_mode}.{namespace}.ci.1",
        labels=labels,
        name=repository,
        requested={"pull", "push"},
    )
    assert granted == expected
