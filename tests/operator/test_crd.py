"""The committed CRD is the generator's output, is structural, and rejects invalid MediaJobs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mediaflow.crd import crd, crd_yaml
from mediaflow.spec import MediaJobSpec
from tests.operator.crd_validation import validation_errors

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "charts/mediaflow/crds/mediajobs.mediaflow.dev.yaml"
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
EXAMPLES = sorted((REPO / "operator/examples").glob("*.yaml"))


def test_committed_crd_is_the_generated_one():
    assert CRD_FILE.read_text() == crd_yaml(), (
        "regenerate: python -m mediaflow.crd > charts/mediaflow/crds/mediajobs.mediaflow.dev.yaml")


def _schema_nodes(node, path=""):
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _schema_nodes(schema):
        assert not {"$ref", "anyOf", "oneOf", "allOf", "$defs", "title"} & node.keys(), path
        assert node.get("additionalProperties", {}) is not False, path  # prunes instead; see crd.py
        assert "type" in node, path
        assert not isinstance(node.get("default"), dict) or None not in node["default"].values(), path


def test_crd_identity_and_columns():
    spec = crd()["spec"]
    assert (spec["group"], spec["scope"], spec["names"]["plural"], spec["names"]["shortNames"]) == (
        "mediaflow.dev", "Namespaced", "mediajobs", ["mj"])
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == ["Phase", "Progress", "Duration", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed"]
    assert set(status["conditions"]["items"]["required"]) == {"type", "status", "reason", "lastTransitionTime"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_accepted(path):
    obj = yaml.safe_load(path.read_text())
    assert validation_errors(crd(), obj) == []
    MediaJobSpec.model_validate(obj["spec"])


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_samples_are_rejected_by_the_schema_and_the_model(path):
    obj = yaml.safe_load(path.read_text())
    assert validation_errors(crd(), obj), f"{path.name} was accepted"
    with pytest.raises(ValidationError):
        MediaJobSpec.model_validate(obj["spec"])


def test_validator_reports_the_reason():
    base = {"apiVersion": "mediaflow.dev/v1alpha1", "kind": "MediaJob", "metadata": {"name": "x"}}
    bad_scheme = validation_errors(crd(), {**base, "spec": {"source": {"uri": "file:///etc/passwd"}}})
    assert any("does not match" in e and "source.uri" in e for e in bad_scheme)
    unknown = validation_errors(crd(), {**base, "spec": {"source": {"uri": "/m/a.mp4"}, "stages": {"bogus": {}}}})
    assert any("bogus" in e for e in unknown)
    overlap = validation_errors(crd(), {**base, "spec": {"source": {"uri": "/m/a.mp4"},
                                                          "stages": {"chunking": {"overlapSeconds": 20}}}})
    assert overlap == [".spec.stages.chunking: overlapSeconds must be smaller than seconds"]
    parent = validation_errors(crd(), {**base, "spec": {"source": {"uri": "/m/../a.mp4"}}})
    assert parent == [".spec.source.uri: source.uri must not contain '..' path segments"]
