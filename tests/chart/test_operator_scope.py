"""The operator's scope (watched namespaces), its kopf peering and its replicas, as the chart sets them."""

from __future__ import annotations

import pytest

from mediaflow.spec import MediaJobSpec
from mediaflow_operator.jobs import extract_job
from mediaflow_operator.settings import OperatorSettings
from tests.chart.conftest import CHART, find, helm, render

NAMESPACE = "mediaflow"


def operator_env(docs) -> dict[str, object]:
    """What the operator container sees: its ConfigMap, then its own env (values or valueFrom)."""
    (config,) = find(docs, "ConfigMap", "mediaflow-operator")
    (deployment,) = find(docs, "Deployment", "mediaflow-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"configMapRef": {"name": "mediaflow-operator"}} in container["envFrom"]
    env: dict[str, object] = dict(config["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", item.get("valueFrom"))
    return env


def settings_in(docs, pod_namespace: str = NAMESPACE) -> OperatorSettings:
    """The operator's settings in its pod: the downward API resolved to the pod's namespace."""
    env = operator_env(docs)
    assert env["MEDIAFLOW_OPERATOR_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    env["MEDIAFLOW_OPERATOR_NAMESPACE"] = pod_namespace
    return OperatorSettings(**{k.removeprefix("MEDIAFLOW_OPERATOR_").lower(): v for k, v in env.items()
                               if k.startswith("MEDIAFLOW_OPERATOR_")})


@pytest.mark.parametrize(("sets", "watch", "watched"), [
    ((), "mediaflow", ["mediaflow"]),
    (("operator.watchNamespaces={team-a,mediaflow,team-b}",), "mediaflow,team-a,team-b",
     ["mediaflow", "team-a", "team-b"]),
    (("operator.watchNamespaces={*}",), "mediaflow,*", None),
])
def test_watch_namespaces_env_release_namespace_first(sets, watch, watched):
    docs = render(None, *sets)
    env = operator_env(docs)
    assert env["MEDIAFLOW_OPERATOR_WATCH_NAMESPACES"] == watch
    assert env["MEDIAFLOW_OPERATOR_PEERING_NAME"] == "mediaflow"
    assert settings_in(docs).watched_namespaces() == watched  # as the operator reads it


def test_worker_jobs_run_in_the_release_namespace_whatever_the_mediajobs_namespace():
    settings = settings_in(render(None, "operator.watchNamespaces={team-a}"))
    body = {"metadata": {"name": "talk", "namespace": "team-a", "uid": "u-1"}}
    spec = MediaJobSpec.model_validate({"source": {"uri": "https://example.com/talk.mp4"}})
    job = extract_job(body, "mj-123", spec, settings)
    assert job["metadata"]["namespace"] == NAMESPACE  # where the pipeline ConfigMap, PVC, SA, policy are
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mediaflow-worker"
    assert {"name": "media", "persistentVolumeClaim": {"claimName": "mediaflow-media"}} in pod["volumes"]


def peerings(docs) -> set[tuple[str, str | None, str]]:
    return {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
            for d in docs if d["apiVersion"].startswith("kopf.dev/")}


@pytest.mark.parametrize(("sets", "expected"), [
    ((), {("KopfPeering", NAMESPACE, "mediaflow")}),
    (("operator.watchNamespaces={team-a,team-b}",),
     {("KopfPeering", ns, "mediaflow") for ns in (NAMESPACE, "team-a", "team-b")}),
    (("operator.watchNamespaces={*}",), {("ClusterKopfPeering", None, "mediaflow")}),
    (("operator.standalone=true",), set()),
    (("operator.standalone=true", "operator.watchNamespaces={*}"), set()),
    (("fullnameOverride=mf-prod", "operator.watchNamespaces={team-a}"),
     {("KopfPeering", ns, "mf-prod") for ns in (NAMESPACE, "team-a")}),
])
def test_a_peering_object_named_after_the_release_in_every_watched_namespace(sets, expected):
    docs = render(None, *sets)
    assert peerings(docs) == expected
    name = "mf-prod" if "fullnameOverride=mf-prod" in sets else "mediaflow"
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{name}-operator"]
    assert config["data"]["MEDIAFLOW_OPERATOR_PEERING_NAME"] == name


def test_the_chart_ships_both_kopf_peering_crds():
    crds = {d["metadata"]["name"]: d for d in render(None, crds=True) if d["kind"] == "CustomResourceDefinition"}
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        (version,) = crds[name]["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        assert version["schema"]["openAPIV3Schema"]["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]


def strategy(*sets) -> tuple[int, str]:
    (deployment,) = find(render(None, *sets), "Deployment", "mediaflow-operator")
    return deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]


def test_replicas_and_strategy():
    assert strategy() == (1, "Recreate")
    assert strategy("operator.replicas=2") == (2, "RollingUpdate")  # peering keeps one active
    assert strategy("operator.replicas=2", "operator.strategy=Recreate") == (2, "Recreate")
    assert strategy("operator.standalone=true") == (1, "Recreate")
    assert not find(render(None, "operator.replicas=2"), "PodDisruptionBudget", "mediaflow-operator")


@pytest.mark.parametrize(("sets", "complaint"), [
    (("operator.standalone=true", "operator.replicas=2"), "operator.replicas=2 needs kopf peering"),
    (("operator.standalone=true", "operator.strategy=RollingUpdate"), "operator.strategy=RollingUpdate needs kopf peering"),
    (("operator.watchNamespaces={*,team-a}",), '"*" already means every namespace'),
    (("operator.watchNamespaces={Team_A}",), "/operator/watchNamespaces/0"),
    (("operator.peeringName=mediaflow",), "peeringName"),  # gone: the peering is the release's
])
def test_refused_operator_values(sets, complaint):
    args = ["template", "t", str(CHART)]
    for value in sets:
        args += ["--set", value]
    result = helm(*args, check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_values_text_tells_the_truth_about_replicas():
    text = (CHART / "values.yaml").read_text()
    line = next(line for line in text.splitlines() if "# -- Operator replicas" in line)
    assert "one operator is active" in line and "stand by" in line and "take over" in line
    assert "watchNamespaces: []" in text
