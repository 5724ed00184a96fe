"""The chart's custom resources against the upstream CRDs they are written for.

The API server validates a custom resource against its CRD's ``openAPIV3Schema`` and silently
prunes every field the schema does not declare: a misspelt or misplaced field "validates" and
then does nothing. So each rendered RayService (KubeRay 1.4.2), ServiceMonitor and PodMonitor
(prometheus-operator 0.93.0), for the defaults and every ``ci/`` variant, must pass jsonschema
AND carry no undeclared field. The CRDs are read from ``../shared/conformance/`` (or
``$MEDIAFLOW_CONFORMANCE_DIR``), never copied into the project.
"""

from __future__ import annotations

import copy
import os
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.chart.conftest import CHART, VARIANTS, render
from tests.conftest import REPO

CONFORMANCE = Path(os.environ.get("MEDIAFLOW_CONFORMANCE_DIR", REPO.parent / "shared" / "conformance"))
UPSTREAM = {  # kind -> (file, what)
    "RayService": ("ray.io_rayservices-v1.4.2.yaml", "KubeRay v1.4.2"),
    "ServiceMonitor": ("monitoring.coreos.com_servicemonitors-v0.93.0.yaml", "prometheus-operator 0.93.0"),
    "PodMonitor": ("monitoring.coreos.com_podmonitors-v0.93.0.yaml", "prometheus-operator 0.93.0"),
}
# the defaults, every ci/ variant, and everything optional switched on at once
CASES = {
    "defaults": (None, ()),
    **{variant: (variant, ()) for variant in VARIANTS},
    "all-on": (None, ("serviceMonitor.enabled=true", "ray.gpuWorkers.enabled=true",
                      "ray.head.dashboardIngress.enabled=true", "gateway.ingress.enabled=true",
                      "operator.replicas=2", "operator.watchNamespaces={*}")),
}
ROOT_FIELDS = {"apiVersion", "kind", "metadata"}  # the API server handles these itself


@lru_cache
def upstream_crd(kind: str) -> dict:
    file, _ = UPSTREAM[kind]
    path = CONFORMANCE / file
    if not path.exists():
        pytest.skip(f"upstream CRD {path} is absent: set MEDIAFLOW_CONFORMANCE_DIR to the conformance "
                    f"directory (see ../shared/conformance/README.md)")
    (crd,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"]
    return crd


@lru_cache
def chart_crds() -> dict[str, dict]:
    crds = {}
    for path in sorted((CHART / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[doc["spec"]["names"]["kind"]] = doc
    return crds


def version_schema(crd: dict, api_version: str) -> dict:
    group, _, version = api_version.partition("/")
    assert group == crd["spec"]["group"], f"{api_version} is not served by {crd['metadata']['name']}"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{api_version}: {crd['metadata']['name']} serves only {sorted(served)}"
    return served[version]["schema"]["openAPIV3Schema"]


def to_jsonschema(node):
    """OpenAPI v3 (structural) schema -> plain JSON schema: x-kubernetes-int-or-string becomes
    integer-or-string, the other x-kubernetes-* keys (and nullable) are dropped."""
    if isinstance(node, list):
        return [to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        # property names are data, not keywords: convert their schemas, keep their names
        out[key] = ({name: to_jsonschema(sub) for name, sub in value.items()} if key == "properties"
                    else to_jsonschema(value))
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.pop("anyOf", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def schema_errors(obj: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(to_jsonschema(schema))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(obj)]


def unknown_fields(value, schema: dict, path: str = "") -> list[str]:
    """Paths in ``value`` the structural schema does not declare (what the API server would prune)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return []
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        for key, sub in value.items():
            where = f"{path}.{key}" if path else key
            if not path and key in ROOT_FIELDS:
                continue
            if schema.get("x-kubernetes-embedded-resource") and key in ROOT_FIELDS:
                continue
            if key in properties:
                found += unknown_fields(sub, properties[key], where)
            elif isinstance(additional, dict):
                found += unknown_fields(sub, additional, where)
            elif additional is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                continue
            else:
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return found


def custom_objects(case: str, kinds) -> list[dict]:
    variant, sets = CASES[case]
    return [d for d in render(variant, *sets) if d["kind"] in kinds]


@pytest.fixture(params=sorted(CASES))
def case(request) -> str:
    return request.param


@pytest.mark.parametrize("kind", sorted(UPSTREAM))
def test_custom_resources_conform_to_the_upstream_crds(case, kind):
    crd = upstream_crd(kind)
    objects = custom_objects(case, {kind})
    if kind == "RayService":
        assert len(objects) == 1, "every variant runs the models in one RayService"
    problems = []
    for obj in objects:
        name = f"{kind}/{obj['metadata']['name']} ({case}, against {UPSTREAM[kind][1]})"
        schema = version_schema(crd, obj["apiVersion"])
        problems += [f"{name}: {e}" for e in schema_errors(obj, schema)]
        problems += [f"{name}: field not in the upstream schema (pruned): {p}" for p in unknown_fields(obj, schema)]
    assert not problems, "\n".join(problems)


def test_monitors_are_rendered_somewhere():
    """The gpu variant (and all-on) turn the monitors on, so the conformance test sees them."""
    kinds = [d["kind"] for d in custom_objects("gpu", set(UPSTREAM))]
    assert kinds.count("ServiceMonitor") == 2 and kinds.count("PodMonitor") == 1


def test_the_embedded_serve_config_still_parses(case):
    (service,) = custom_objects(case, {"RayService"})
    config = service["spec"]["serveConfigV2"]
    assert isinstance(config, str), "serveConfigV2 is a YAML string in the CRD"
    parsed = yaml.safe_load(config)
    assert {app["name"] for app in parsed["applications"]} == {"transcription", "embeddings", "llm"}


def test_the_walker_finds_what_the_api_server_would_prune():
    """The unknown-field check itself: a misplaced field, an additionalProperties map, preserved fields."""
    schema = {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {
            "a": {"type": "integer"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "list": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "string"}}}},
            "empty": {"type": "object"},
        }}}}
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "x"},
           "spec": {"a": 1, "typo": 2, "labels": {"k": "v"}, "free": {"any": {"thing": 1}},
                    "list": [{"n": "1", "m": 2}], "empty": {"gone": 1}}}
    assert unknown_fields(obj, schema) == ["spec.typo", "spec.list[0].m", "spec.empty.gone"]
    bad = copy.deepcopy(obj)
    bad["spec"]["a"] = "one"
    assert schema_errors(bad, schema) == ["spec.a: 'one' is not of type 'integer'"]
    port = {"type": "object", "properties": {"p": {"x-kubernetes-int-or-string": True,
                                                   "anyOf": [{"type": "integer"}, {"type": "string"}]}}}
    assert not schema_errors({"p": 8080}, port) and not schema_errors({"p": "metrics"}, port)
    assert schema_errors({"p": 1.5}, port)


def test_every_custom_kind_has_its_crd_and_conforms():
    """Every rendered custom resource is served by a CRD: the chart's crds/ (kopf's peering CRDs, the
    MediaJob CRD) or an upstream one. The chart's own: same two checks, against crds/."""
    builtin_groups = {"", "apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io",
                      "admissionregistration.k8s.io"}
    seen = set()
    for case_name in CASES:
        variant, sets = CASES[case_name]
        for doc in render(variant, *sets):
            group = doc["apiVersion"].rpartition("/")[0]
            if group in builtin_groups:
                continue
            kind = doc["kind"]
            seen.add(kind)
            assert kind in chart_crds() or kind in UPSTREAM, f"{kind}: no CRD in crds/ or upstream"
            if kind in chart_crds():
                schema = version_schema(chart_crds()[kind], doc["apiVersion"])
                assert not schema_errors(doc, schema), (kind, schema_errors(doc, schema))
                assert not unknown_fields(doc, schema), (kind, unknown_fields(doc, schema))
                if chart_crds()[kind]["spec"]["scope"] == "Namespaced":
                    assert doc["metadata"].get("namespace"), f"{kind}/{doc['metadata']['name']}: no namespace"
    assert {"KopfPeering", "ClusterKopfPeering", "RayService", "ServiceMonitor", "PodMonitor"} <= seen
