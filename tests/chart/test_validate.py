"""Every rendered object against the real Kubernetes schemas (1.30 and 1.34, strict)."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.chart.conftest import render

# Kinds of CRDs that kubernetes-validate has no schema for; test_upstream_crds checks them against their CRDs.
CUSTOM_KINDS = {"RayService", "KopfPeering", "ClusterKopfPeering", "ServiceMonitor", "PodMonitor"}


@pytest.mark.parametrize("version", ["1.30.0", "1.34.0"])
def test_manifests_validate_strictly(variant, version):
    docs = render(variant, crds=True)
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {exc}")
        checked += 1
    assert checked > 15


def test_secrets_never_carry_empty_values(variant):
    for secret in (d for d in render(variant) if d["kind"] == "Secret"):
        assert secret.get("data"), secret["metadata"]["name"]
        assert all(value for value in secret["data"].values()), secret["metadata"]["name"]


def test_external_qdrant_replaces_the_statefulset():
    kinds = {(d["kind"], d["metadata"]["name"]) for d in render("external-qdrant")}
    assert ("StatefulSet", "mediaflow-qdrant") not in kinds
    config = next(d for d in render("external-qdrant") if d["metadata"]["name"] == "mediaflow-pipeline")
    assert config["data"]["MEDIAFLOW_QDRANT_URL"] == "https://qdrant.example.com:6333"
    assert ("StatefulSet", "mediaflow-qdrant") in {(d["kind"], d["metadata"]["name"]) for d in render("minimal")}


@pytest.mark.parametrize("sets", [
    ("operator.watchNamespaces={team-a,team-b}", "operator.replicas=2"),
    ("operator.watchNamespaces={*}", "serviceMonitor.enabled=true"),
    ("operator.standalone=true", "operator.watchNamespaces={*}"),
])
def test_operator_scopes_validate_strictly(sets):
    for doc in render(None, *sets):
        if doc["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(doc, "1.34.0", strict=True)
