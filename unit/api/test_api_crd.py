"""CRD generation: committed manifests match the models, and the schemas are structural."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import Field

from registry_operator.api import ApiModel
from registry_operator.api.crd import (
    CRD_DEFINITIONS,
    KUSTOMIZATION_FILE,
    SchemaError,
    build_crd,
    openapi_schema,
    render_crd_files,
    write_crd_files,
)

CRD_DIR = Path(__file__).resolve().parents[2] / "manifests" / "crds"
READY_STATUS_PATH = '.status.conditions[?(@.type=="Ready")].status'


def test_committed_crds_match_the_api_types() -> None:
    expected = render_crd_files()
    committed = {path.name: path.read_text(encoding="utf-8") for path in CRD_DIR.glob("*.yaml")}
    stale = sorted(set(committed) - set(expected))
    missing = sorted(set(expected) - set(committed))
    changed = sorted(name for name in set(expected) & set(committed) if expected[name] != committed[name])
    assert not (stale or missing or changed), (
        f"manifests/crds/ is out of date (changed: {changed}, missing: {missing}, stale: {stale}): "
        "run `make manifests` and commit the result"
    )


def test_generation_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    first = write_crd_files(tmp_path)
    assert sorted(p.name for p in first) == sorted(render_crd_files())
    assert write_crd_files(tmp_path) == []
    (tmp_path / "registry.mgoltzsche.github.com_imagesecrets.yaml").write_text("stale", encoding="utf-8")
    assert [p.name for p in write_crd_files(tmp_path)] == ["registry.mgoltzsche.github.com_imagesecrets.yaml"]
    assert not (tmp_path / "registry.mgoltzsche.github.com_imagesecrets.yaml").exists()


def test_kustomization_lists_exactly_the_five_crds() -> None:
    kustomization = yaml.safe_load(render_crd_files()[KUSTOMIZATION_FILE])
    assert kustomization["resources"] == sorted(d.file_name for d in CRD_DEFINITIONS)
    assert len(kustomization["resources"]) == 5


def _schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _schema_nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{path}.*")


@pytest.mark.parametrize("definition", CRD_DEFINITIONS, ids=lambda d: d.kind)
def test_schemas_are_structural(definition: Any) -> None:
    schema = build_crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _schema_nodes(schema):
        assert "$ref" not in node and "nullable" not in node and "title" not in node, path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert node.get("type") in {"object", "array", "string", "integer", "boolean", "number"}, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("type") == "object":
            # No field is left open: unknown fields are pruned by the apiserver. Except ACL match
            # conditions: a pruned typo would match everything, so the operator must see it to refuse it.
            assert ("x-kubernetes-preserve-unknown-fields" in node) == (path == ".spec.auth.acl[].match"), (
                path
            )
        if node.get("x-kubernetes-list-type") == "map":
            item = node["items"]
            for key in node["x-kubernetes-list-map-keys"]:
                assert key in item.get("required", []) or "default" in item["properties"][key], path
        if path.startswith(".status"):
            assert "default" not in node, f"{path}: status has no defaults"


def test_spec_defaults_match_the_seed_description() -> None:
    registry = next(d for d in CRD_DEFINITIONS if d.kind == "ImageRegistry")
    spec = build_crd(registry)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["default"] == 1
    assert spec["properties"]["replicas"]["minimum"] == 0
    assert spec["properties"]["service"]["default"] == {}
    assert spec["properties"]["service"]["properties"]["type"] == {
        "description": spec["properties"]["service"]["properties"]["type"]["description"],
        "type": "string",
        "enum": ["ClusterIP", "NodePort", "LoadBalancer"],
        "default": "LoadBalancer",
    }
    assert spec["properties"]["tls"]["default"] == {}
    pvc = spec["properties"]["persistentVolumeClaim"]
    assert pvc["properties"]["accessModes"]["default"] == ["ReadWriteMany"]
    # Required unless storage.type is S3: a CEL rule, no longer the schema's `required`.
    assert "required" not in spec
    rules = [rule["rule"] for rule in spec["x-kubernetes-validations"]]
    assert any("ReadWriteMany" in rule and "replicas" in rule and "'S3'" in rule for rule in rules)
    assert any(rule.endswith(": has(self.persistentVolumeClaim)") for rule in rules)


@pytest.mark.parametrize("definition", CRD_DEFINITIONS, ids=lambda d: d.kind)
def test_crd_names_columns_and_subresources(definition: Any) -> None:
    crd = build_crd(definition)
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == f"{definition.plural}.registry.mgoltzsche.github.com"
    assert crd["spec"]["scope"] == "Namespaced"
    assert names["categories"] == ["registry-operator"]  # not "all": `kubectl delete all` must spare them
    assert names["shortNames"] and names["listKind"] == f"{definition.kind}List"
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == READY_STATUS_PATH
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Age"]["type"] == "date"
    metadata_name = version["schema"]["openAPIV3Schema"]["properties"]["metadata"]["properties"]["name"]
    assert metadata_name["maxLength"] == definition.max_name_length


def test_short_names_are_unique() -> None:
    short_names = [name for d in CRD_DEFINITIONS for name in d.short_names]
    assert (
        sorted(short_names)
        == sorted(set(short_names))
        == ["imgacct", "imgbuild", "imgpull", "imgpush", "imgreg"]
    )


class _UnionModel(ApiModel):
    value: float | str


class _ExclusiveMinimumModel(ApiModel):
    value: Annotated[int, Field(gt=0)]


@pytest.mark.parametrize("model", [_UnionModel, _ExclusiveMinimumModel])
def test_constructs_without_a_structural_equivalent_are_refused(model: type[ApiModel]) -> None:
    # Better a failing `make manifests` than a CRD that the apiserver rejects or reads differently.
    with pytest.raises(SchemaError):
        openapi_schema(model)


def test_manifests_command_writes_then_reports_up_to_date(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from registry_operator.cli import main

    assert main(["manifests", "--output-dir", str(tmp_path / "crds")]) == 0
    assert sorted(p.name for p in (tmp_path / "crds").iterdir()) == sorted(render_crd_files())
    assert main(["manifests", "--output-dir", str(tmp_path / "crds")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"{tmp_path / 'crds'}: up to date"
