from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from registry_operator import dockerconfig
from registry_operator.dockerconfig import Credentials, DockerConfigError

HOST = "registry.infra.svc.cluster.local"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secret(name: str, secret_type: str | None, data: dict[str, Any] | None) -> dict[str, Any]:
    secret: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns"}, "data": data}
    if secret_type is not None:
        secret["type"] = secret_type
    return secret


def test_rendered_format_is_exactly_the_originals() -> None:
    rendered = dockerconfig.docker_config_for(HOST, "push.myns.example.3", "s3cret")
    expected_auth = base64.b64encode(b"push.myns.example.3:s3cret").decode()
    assert rendered == '{"auths":{"' + HOST + '":{"auth":"' + expected_auth + '"}}}'


def test_rendered_hosts_are_sorted() -> None:
    rendered = dockerconfig.render_docker_config({"b.example": ("u", "p"), "a.example": ("u", "p")})
    assert rendered.index("a.example") < rendered.index("b.example")
    assert " " not in rendered


def test_empty_config() -> None:
    assert dockerconfig.render_docker_config({}) == '{"auths":{}}'
    assert dockerconfig.parse_docker_config('{"auths":{}}') == {}
    assert dockerconfig.parse_docker_config("{}") == {}


def test_decode_auth_splits_at_first_colon() -> None:
    assert dockerconfig.decode_auth(_b64("user:pa:ss:")) == Credentials("user", "pa:ss:")
    assert dockerconfig.decode_auth(_b64("user:")) == Credentials("user", "")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        ("%%%", "not valid base64"),
        (_b64("no-colon-here"), "no ':'"),
        (_b64(":password"), "empty user name"),
        (base64.b64encode(b"\xff\xfe:x").decode(), "not UTF-8"),
    ],
)
def test_decode_auth_errors(auth: str, message: str) -> None:
    with pytest.raises(DockerConfigError, match=message) as info:
        dockerconfig.decode_auth(auth, source="secret s")
    assert str(info.value).startswith("secret s: basic auth: ")


def test_encode_refuses_colon_in_user() -> None:
    with pytest.raises(DockerConfigError, match="':'"):
        dockerconfig.encode_auth("a:b", "pw")


@given(
    user=st.text(st.characters(blacklist_characters=":", blacklist_categories=["Cs"]), min_size=1),
    password=st.text(st.characters(blacklist_categories=["Cs"])),
)
def test_auth_round_trip(user: str, password: str) -> None:
    assert dockerconfig.decode_auth(dockerconfig.encode_auth(user, password)) == (user, password)


def test_parse_accepts_auth_and_username_password_entries() -> None:
    raw = json.dumps(
        {
            "auths": {
                "a.example": {"auth": _b64("alice:pw-a")},
                "b.example": {"username": "bob", "password": "pw-b"},
                # auth wins over username/password, as in the docker CLI
                "c.example": {"auth": _b64("carol:pw-c"), "username": "x", "password": "y"},
                "d.example": {},  # credential-helper stub: nothing to use
                "e.example": {"identitytoken": "tok"},
            },
            "credsStore": "desktop",
        }
    )
    assert dockerconfig.parse_docker_config(raw) == {
        "a.example": Credentials("alice", "pw-a"),
        "b.example": Credentials("bob", "pw-b"),
        "c.example": Credentials("carol", "pw-c"),
    }


def test_parse_round_trips_render() -> None:
    auths = {HOST: Credentials("u1", "p1"), "other:5000": Credentials("u2", "p:2")}
    assert dockerconfig.parse_docker_config(dockerconfig.render_docker_config(auths)) == auths
    assert dockerconfig.parse_docker_config(dockerconfig.render_docker_config(auths).encode()) == auths


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"auths": ', "invalid JSON: Expecting value at line 1"),
        (b"\xff\xfe", "invalid JSON"),
        ("[]", "must be a JSON object"),
        ('{"auths": []}', '"auths" must be a JSON object'),
        ('{"auths": {"h": "x"}}', "auths['h']: entry must be a JSON object"),
        ('{"auths": {"h": {"auth": 5}}}', "auths['h']: auth must be a string"),
        ('{"auths": {"h": {"password": "p"}}}', "auths['h']: password without username"),
        ('{"auths": {"h": {"username": "u"}}}', "auths['h']: username without password"),
        ('{"auths": {"h": {"username": "u:x", "password": "p"}}}', "must not contain ':'"),
    ],
)
def test_parse_errors_name_the_source(raw: str | bytes, message: str) -> None:
    with pytest.raises(DockerConfigError) as info:
        dockerconfig.parse_docker_config(raw, source='secret in key "config.json"')
    assert str(info.value).startswith('secret in key "config.json": ')
    assert message in str(info.value)


def test_parse_error_does_not_echo_credentials() -> None:
    with pytest.raises(DockerConfigError) as info:
        dockerconfig.parse_docker_config('{"auths": {"h": {"password": "TopSecret"}}')
    assert "TopSecret" not in str(info.value)


def test_merge_later_wins() -> None:
    first = {"a": Credentials("u1", "p1"), "b": Credentials("u1", "p1")}
    second = {"b": Credentials("u2", "p2"), "c": Credentials("u2", "p2")}
    merged = dockerconfig.merge([first, second])
    assert merged == {"a": ("u1", "p1"), "b": ("u2", "p2"), "c": ("u2", "p2")}
    assert dockerconfig.merge([]) == {}
    assert first["b"] == ("u1", "p1")  # inputs are not modified


def test_merge_keeps_username_password_entries() -> None:
    a = dockerconfig.parse_docker_config(json.dumps({"auths": {"x": {"username": "u", "password": "p"}}}))
    b = dockerconfig.parse_docker_config(dockerconfig.docker_config_for("y", "v", "q"))
    merged = dockerconfig.merge([a, b])
    assert json.loads(dockerconfig.render_docker_config(merged)) == {
        "auths": {"x": {"auth": _b64("u:p")}, "y": {"auth": _b64("v:q")}}
    }


def test_from_dockerconfigjson_secret() -> None:
    config = dockerconfig.docker_config_for(HOST, "pull.ns.x.1", "pw")
    secret = _secret(
        "imagepullsecret-x", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": _b64(config)}
    )
    assert dockerconfig.docker_config_from_secret(secret) == {HOST: ("pull.ns.x.1", "pw")}


def test_from_opaque_secret_prefers_config_json_and_accepts_bytes() -> None:
    config_json = dockerconfig.docker_config_for("a", "u1", "p1")
    other = dockerconfig.docker_config_for("b", "u2", "p2")
    secret = _secret("s", "Opaque", {"config.json": config_json.encode(), ".dockerconfigjson": _b64(other)})
    assert dockerconfig.docker_config_from_secret(secret) == {"a": ("u1", "p1")}
    fallback = _secret("s", "Opaque", {".dockerconfigjson": _b64(other)})
    assert dockerconfig.docker_config_from_secret(fallback) == {"b": ("u2", "p2")}
    untyped = _secret("s", None, {"config.json": _b64(config_json)})
    assert dockerconfig.docker_config_from_secret(untyped) == {"a": ("u1", "p1")}


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (
            _secret("tls", "kubernetes.io/tls", {"tls.crt": ""}),
            "secret tls has unsupported type kubernetes.io/tls, "
            "expected kubernetes.io/dockerconfigjson or Opaque",
        ),
        (_secret("empty", "Opaque", None), "secret empty does not specify data"),
        (
            _secret("nokey", "kubernetes.io/dockerconfigjson", {"x": "eA=="}),
            'secret nokey does not specify key ".dockerconfigjson"',
        ),
        (_secret("nokey", "Opaque", {"x": "eA=="}), 'secret nokey does not specify key "config.json"'),
        (
            _secret("b64", "Opaque", {"config.json": "@@@"}),
            'secret b64 key "config.json" is not valid base64',
        ),
        (
            _secret("json", "Opaque", {"config.json": _b64("{")}),
            'secret json key "config.json": invalid JSON',
        ),
    ],
)
def test_secret_errors(secret: dict[str, Any], message: str) -> None:
    with pytest.raises(DockerConfigError) as info:
        dockerconfig.docker_config_from_secret(secret)
    assert str(info.value).startswith(message)


def test_makisu_yaml_matches_the_original_layout() -> None:
    rendered = dockerconfig.render_makisu_yaml({HOST: Credentials("push.myns.example.3", "pw")})
    assert yaml.safe_load(rendered) == {
        HOST: {".*": {"security": {"basic": {"username": "push.myns.example.3", "password": "pw"}}}}
    }
    assert "tls" not in rendered


def test_makisu_yaml_with_ca_for_selected_hosts() -> None:
    auths = {HOST: Credentials("u", "p"), "index.docker.io": Credentials("d", "q")}
    rendered = dockerconfig.render_makisu_yaml(
        auths, ca_cert_paths={HOST: "/makisu-internal/config/ca.crt", "unknown.example": "/x"}
    )
    document = yaml.safe_load(rendered)
    assert document[HOST][".*"]["security"]["tls"] == {
        "ca": {"cert": {"path": "/makisu-internal/config/ca.crt"}}
    }
    assert "tls" not in document["index.docker.io"][".*"]["security"]
    assert set(document) == {HOST, "index.docker.io"}


def test_makisu_yaml_quotes_awkward_values() -> None:
    auths = {HOST: Credentials("123", "yes: no # 0x1F")}
    document = yaml.safe_load(dockerconfig.render_makisu_yaml(auths))
    assert document[HOST][".*"]["security"]["basic"] == {"username": "123", "password": "yes: no # 0x1F"}


def test_makisu_yaml_without_hosts() -> None:
    assert dockerconfig.render_makisu_yaml({}).strip() == "{}"
