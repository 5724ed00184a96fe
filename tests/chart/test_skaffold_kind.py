"""skaffold.yaml, images/Dockerfile, the chart's values and kind-config.yaml agree with each other."""

from __future__ import annotations

import re

import yaml

from tests.chart.conftest import CHART, find, pod_templates, render
from tests.conftest import REPO

SKAFFOLD = yaml.safe_load((REPO / "skaffold.yaml").read_text())
TARGETS = set(re.findall(r"^FROM \S+ AS (\S+)", (REPO / "images" / "Dockerfile").read_text(), re.M))


def test_every_skaffold_image_is_a_dockerfile_target_the_chart_uses():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    templates = SKAFFOLD["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    for artifact in SKAFFOLD["build"]["artifacts"]:
        target = artifact["docker"]["target"]
        assert target in TARGETS, target
        assert artifact["docker"]["dockerfile"] == "images/Dockerfile"
        assert values["images"][target]["repository"] == artifact["image"]
        key = artifact["image"].replace("/", "_")
        assert templates[f"images.{target}.repository"] == f"{{{{.IMAGE_REPO_{key}}}}}"
        assert templates[f"images.{target}.tag"] == f"{{{{.IMAGE_TAG_{key}}}}}"


def test_the_chart_runs_every_built_image():
    built = {a["image"] for a in SKAFFOLD["build"]["artifacts"]}
    used = {c["image"].rpartition(":")[0] for variant in ("kind-cpu", "gpu")
            for _, pod in pod_templates(render(variant)) for c in pod.get("initContainers", []) + pod["containers"]}
    (operator_config,) = find(render("kind-cpu"), "ConfigMap", "mediaflow-operator")
    used.add(operator_config["data"]["MEDIAFLOW_OPERATOR_WORKER_IMAGE"].rpartition(":")[0])
    used = {image.removeprefix("registry.example.com/") for image in used}
    assert built <= used, built - used


def test_skaffold_deploys_the_kind_values_and_forwards_the_ui_and_dashboard():
    release = SKAFFOLD["deploy"]["helm"]["releases"][0]
    assert release["chartPath"] == "charts/mediaflow"
    assert release["valuesFiles"] == ["charts/mediaflow/ci/kind-cpu-values.yaml"]
    forwarded = {(f["resourceName"], f["port"]) for f in SKAFFOLD["portForward"]}
    assert forwarded == {("mediaflow-gateway", 80), ("mediaflow-ray-head-svc", 8265)}
    services = {s["metadata"]["name"] for s in find(render("kind-cpu"), "Service")}
    assert "mediaflow-gateway" in services
    (gpu,) = [p for p in SKAFFOLD["profiles"] if p["name"] == "gpu"]
    assert gpu["patches"][0]["value"] == ["charts/mediaflow/ci/gpu-values.yaml"]


def test_kind_cluster_is_ingress_ready_on_ports_80_and_443():
    kind = yaml.safe_load((REPO / "kind-config.yaml").read_text())
    (node,) = kind["nodes"]
    assert "ingress-ready=true" in node["kubeadmConfigPatches"][0]
    assert {m["hostPort"] for m in node["extraPortMappings"]} == {80, 443}
    assert "nvkind" in (REPO / "kind-config.yaml").read_text()  # GPU guidance
