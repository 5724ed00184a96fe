"""The committed CRD is the generator's output, is structural, and its CEL rules are ones the
API server compiles and that reject what they are meant to (checked with Google's CEL)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mediaflow.crd import GROUP, PLURAL, SPEC_IMMUTABLE, VERSION, crd, crd_yaml
from mediaflow.spec import PARENT_SEGMENT_RE, MediaJobSpec
from tests.operator.crd_validation import apply_defaults, compile_rule, schema_nodes, schema_rules, validation_errors

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "charts/mediaflow/crds/mediajobs.mediaflow.dev.yaml"
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
EXAMPLES = sorted((REPO / "operator/examples").glob("*.yaml"))
IMMUTABLE = "spec is immutable: delete the MediaJob and create a new one"


def _schema(doc: dict) -> dict:
    return doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# The rules as the API server receives them: read from the committed file, not the generator.
COMMITTED_RULES = list(schema_rules(_schema(yaml.safe_load(CRD_FILE.read_text()))))


def job(spec: dict, status: dict | None = None, **metadata) -> dict:
    obj = {"apiVersion": "mediaflow.dev/v1alpha1", "kind": "MediaJob",
           "metadata": {"name": "x", **metadata}, "spec": spec}
    return obj if status is None else {**obj, "status": status}


def test_committed_crd_is_the_generated_one():
    assert CRD_FILE.read_text() == crd_yaml(), (
        "regenerate: python -m mediaflow.crd > charts/mediaflow/crds/mediajobs.mediaflow.dev.yaml")


def test_schema_is_structural():
    schema = _schema(crd())
    assert schema["properties"]["metadata"] == {"type": "object"}  # the API server owns metadata
    for path, node in schema_nodes(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "not", "$defs", "title"} & node.keys(), path
        assert node.get("additionalProperties", {}) is not False, path  # prunes instead; see crd.py
        assert not ("properties" in node and "additionalProperties" in node), path
        assert "type" in node, path
        assert not isinstance(node.get("default"), dict) or None not in node["default"].values(), path
        assert ("x-kubernetes-list-map-keys" in node) == (node.get("x-kubernetes-list-type") == "map"), path
        for key in node.get("x-kubernetes-list-map-keys", []):  # the API server demands these
            item = node["items"]
            assert item["type"] == "object", path
            assert item["properties"][key]["type"] in ("string", "integer", "boolean"), (path, key)
            assert key in item.get("required", []) or "default" in item["properties"][key], (path, key)


def test_crd_identity_and_columns():
    spec = crd()["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["plural"], spec["names"]["shortNames"]) == (
        "mediaflow.dev", "Namespaced", "mediajobs", ["mj"])
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress", "Duration", "Language", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
    assert set(status["conditions"]["items"]["required"]) == {"type", "status", "reason", "lastTransitionTime"}


def test_conditions_are_a_map_keyed_by_type():
    conditions = _schema(crd())["properties"]["status"]["properties"]["conditions"]
    assert conditions["type"] == "array"
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


# -- CEL: compiled by Google's CEL (the grammar of cel-go, which the API server runs) ----------

@pytest.mark.parametrize("path, node, rule", COMMITTED_RULES, ids=[f"{p} {r['rule']}" for p, _, r in COMMITTED_RULES])
def test_every_rule_compiles_in_google_cel(path, node, rule):
    compile_rule(rule["rule"])
    assert rule.get("message"), f"{path}: a rule without a message reports its CEL text to users"


def test_google_cel_refuses_what_the_api_server_refuses():
    # The rule text that once made the API server refuse this CRD: '\.' is no CEL escape.
    with pytest.raises(RuntimeError, match="token recognition error"):
        compile_rule(r"!self.matches('(^|/)\.\.(/|$)')")
    with pytest.raises(RuntimeError, match="undeclared reference"):
        compile_rule("self == old")
    with pytest.raises(RuntimeError, match="no matching overload"):
        compile_rule("self.uri.size() < 'ten'")
    with pytest.raises(ValueError, match="bool"):
        compile_rule("'not a bool'")


URI_ACCEPTED = ["/media/a..b.mp4", "/media/..hidden/x.mp4", "/media/x../y.mp4",
                "s3://bucket-1/a/b..c", "https://h.example/a/..."]
URI_REJECTED = ["/media/../etc/passwd", "/media/..", "/../x", "s3://bucket-1/a/../b",
                "https://h.example/../x", "https://h.example/a/.."]


def test_the_cel_regex_is_the_python_one():
    (rule,) = [r["rule"] for p, _, r in COMMITTED_RULES if p == ".spec.source.uri"]
    compiled = compile_rule(rule).expression
    for uri in URI_ACCEPTED + URI_REJECTED:
        assert compiled.eval(data={"self": uri}).value() is (re.search(PARENT_SEGMENT_RE, uri) is None), uri


FULL = yaml.safe_load((REPO / "operator/examples/s3-full-options.yaml").read_text())["spec"]

# For every rule in the CRD (by message): (old spec or None for a create, new spec) pairs it
# accepts and pairs it rejects. A rule added without samples fails test_every_rule_has_samples.
RULE_SAMPLES: dict[str, dict[str, list[tuple[dict | None, dict]]]] = {
    "source.uri must not contain '..' path segments": {
        "accept": [(None, {"source": {"uri": u}}) for u in URI_ACCEPTED],
        "reject": [(None, {"source": {"uri": u}}) for u in URI_REJECTED],
    },
    "overlapSeconds must be smaller than seconds": {
        "accept": [(None, {"source": {"uri": "/m/a.mp4"}, "stages": {"chunking": c}}) for c in (
            {}, {"seconds": 4}, {"overlapSeconds": 14.5}, {"seconds": 20, "overlapSeconds": 0})],
        "reject": [(None, {"source": {"uri": "/m/a.mp4"}, "stages": {"chunking": c}}) for c in (
            {"seconds": 2}, {"overlapSeconds": 15}, {"seconds": 10, "overlapSeconds": 10.0},
            {"seconds": 10, "overlapSeconds": 30})],
    },
}
SAMPLES = [(message, verdict, old, new) for message, cases in RULE_SAMPLES.items()
           for verdict, pairs in cases.items() for old, new in pairs]


def test_every_rule_has_samples():
    assert sorted(r["message"] for _, _, r in COMMITTED_RULES) == sorted(RULE_SAMPLES)


@pytest.mark.bad_input
@pytest.mark.parametrize("message, verdict, old, new", SAMPLES,
                         ids=[f"{m[:24]}-{v}-{i}" for i, (m, v, _, _) in enumerate(SAMPLES)])
def test_rule_samples(message, verdict, old, new):
    (path,) = [p for p, _, r in COMMITTED_RULES if r["message"] == message]
    errors = validation_errors(crd(), job(new), old=None if old is None else job(old))
    assert errors == ([] if verdict == "accept" else [f"{path}: {message}"])
    if old is None:  # pydantic holds the same rule for the CLI, the gateway and the operator
        if verdict == "accept":
            MediaJobSpec.model_validate(new)
        else:
            with pytest.raises(ValidationError):
                MediaJobSpec.model_validate(new)


# The spec's immutability: (old spec, new spec) updates the chart's admission policy admits or denies.
IMMUTABLE_SAMPLES = {
    "accept": [
        (FULL, copy.deepcopy(FULL)),  # `kubectl apply` of the same manifest again
        ({"source": {"uri": "/m/a.mp4"}},  # equal once the API server has defaulted both
         {"source": {"uri": "/m/a.mp4"}, "priority": 0,
          "stages": {"chunking": {"seconds": 15, "overlapSeconds": 3, "pauseSeconds": 1.5}}}),
    ],
    "reject": [
        (FULL, {**FULL, "language": "fr" if FULL.get("language") != "fr" else "de"}),
        ({"source": {"uri": "/m/a.mp4"}}, {"source": {"uri": "/m/a.mp4"}, "language": "en"}),  # set later
        (FULL, {**FULL, "source": {"uri": "s3://media-bucket/talks/other.mp4"}}),
        (FULL, {**FULL, "source": {**FULL["source"], "title": "Renamed"}}),
        (FULL, {**FULL, "stages": {**FULL["stages"], "chunking": {"seconds": 21, "overlapSeconds": 4}}}),
        (FULL, {k: v for k, v in FULL.items() if k != "ttlSecondsAfterFinished"}),
        ({"source": {"uri": "/m/a.mp4"}}, {"source": {"uri": "/m/a.mp4"}, "priority": 1}),
    ],
}


def spec_immutable_policy() -> dict:
    """The chart's ValidatingAdmissionPolicy for MediaJob updates (rendered by helm)."""
    from tests.chart.conftest import find, render

    (policy,) = find(render(), "ValidatingAdmissionPolicy")
    (binding,) = find(render(), "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"]}
    return policy


def policy_denials(policy: dict, old: dict, new: dict, resource: str = "mediajobs") -> list[str]:
    """The policy's messages for an UPDATE of ``resource`` from ``old`` to ``new``, evaluated as
    the API server does: CEL over ``object`` and ``oldObject``, after defaulting both."""
    from cel_expr_python import cel

    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    if resource not in rule["resources"] or "UPDATE" not in rule["operations"]:
        return []
    schema = _schema(crd())
    env = cel.NewEnv(variables={"object": cel.Type.DYN, "oldObject": cel.Type.DYN})
    data = {"object": apply_defaults(schema, copy.deepcopy(new)),
            "oldObject": apply_defaults(schema, copy.deepcopy(old))}
    return [v["message"] for v in policy["spec"]["validations"]
            if env.compile(v["expression"]).eval(data=data).value() is not True]


def test_the_admission_policy_is_the_cores_and_guards_mediajob_updates():
    policy = spec_immutable_policy()
    (validation,) = policy["spec"]["validations"]
    assert {k: validation[k] for k in SPEC_IMMUTABLE} == SPEC_IMMUTABLE
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["matchConstraints"]["resourceRules"] == [{
        "apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["UPDATE"], "resources": [PLURAL]}]


@pytest.mark.bad_input
@pytest.mark.parametrize("verdict, old, new", [(v, o, n) for v, pairs in IMMUTABLE_SAMPLES.items() for o, n in pairs],
                         ids=lambda x: x if isinstance(x, str) else "")
def test_a_spec_change_is_denied_by_the_admission_policy(verdict, old, new):
    assert validation_errors(crd(), job(new), old=job(old)) == []  # the CRD's own rules do not object
    denied = policy_denials(spec_immutable_policy(), job(old), job(new))
    assert denied == ([] if verdict == "accept" else [IMMUTABLE])


def test_no_crd_rule_reads_old_self():
    # Validators that compile each rule with `self` alone (as for every rule outside a
    # transition) refuse oldSelf: immutability lives in the admission policy instead.
    assert [(p, r["rule"]) for p, _, r in COMMITTED_RULES if compile_rule(r["rule"]).transition] == []


def test_only_spec_is_immutable_status_and_metadata_stay_writable():
    policy = spec_immutable_policy()
    spec = {"source": {"uri": "/m/a.mp4"}}
    old = job(spec, status={"phase": "Pending"})
    new = job(spec, labels={"team": "research"}, finalizers=["mediaflow.dev/cleanup"], status={
        "phase": "Running", "progress": 40, "outputs": {"mediaId": "mj-0123456789ab"},
        "conditions": [{"type": "Probe", "status": "True", "reason": "Done",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
    assert validation_errors(crd(), new, old=old) == []
    assert validation_errors(crd(), {k: v for k, v in new.items() if k != "status"}, old=old) == []
    assert policy_denials(policy, old, new) == [] and policy_denials(policy, old, new, "mediajobs/status") == []
    changed = job({**spec, "priority": 3}, status={"phase": "Running"})
    assert policy_denials(policy, old, changed) == [IMMUTABLE]
    assert policy_denials(policy, old, changed, "mediajobs/status") == []  # the subresource is not matched


def test_string_rules_are_bounded_and_read_declared_fields():
    # The API server estimates a rule's cost from maxLength (without it: the 3 MiB request
    # size) and, as self is typed from the schema, refuses a rule naming an undeclared field.
    for path, node, rule in COMMITTED_RULES:
        if node["type"] == "string" and re.search(r"\bself\.(matches|contains|startsWith|endsWith)\(", rule["rule"]):
            assert "maxLength" in node, path
        for field, call in re.findall(r"\b(?:old)?[sS]elf\.([A-Za-z_]\w*)(\s*\()?", rule["rule"]):
            if not call:
                assert field in node.get("properties", {}), (path, field)
                sub = node["properties"][field]
                if re.search(rf"\bself\.{field}\.matches\(", rule["rule"]) and sub["type"] == "string":
                    assert "maxLength" in sub, (path, field)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(path):
    obj = yaml.safe_load(path.read_text())
    assert validation_errors(crd(), obj) == []
    assert validation_errors(crd(), obj, old=obj) == []  # applied again unchanged
    MediaJobSpec.model_validate(obj["spec"])


@pytest.mark.bad_input
@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_samples_are_rejected_by_the_schema_and_the_model(path):
    obj = yaml.safe_load(path.read_text())
    assert validation_errors(crd(), obj), f"{path.name} was accepted"
    with pytest.raises(ValidationError):
        MediaJobSpec.model_validate(obj["spec"])


def test_validator_reports_the_reason():
    bad_scheme = validation_errors(crd(), job({"source": {"uri": "file:///etc/passwd"}}))
    assert any("does not match" in e and "source.uri" in e for e in bad_scheme)
    unknown = validation_errors(crd(), job({"source": {"uri": "/m/a.mp4"}, "stages": {"bogus": {}}}))
    assert any("bogus" in e for e in unknown)
    overlap = validation_errors(crd(), job({"source": {"uri": "/m/a.mp4"},
                                            "stages": {"chunking": {"overlapSeconds": 20}}}))
    assert overlap == [".spec.stages.chunking: overlapSeconds must be smaller than seconds"]
    parent = validation_errors(crd(), job({"source": {"uri": "/m/../a.mp4"}}))
    assert parent == [".spec.source.uri: source.uri must not contain '..' path segments"]
