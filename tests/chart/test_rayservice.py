"""The RayService carries what KubeRay needs: a parseable serveConfigV2 of importable apps, groups, ports."""

from __future__ import annotations

import ast

import pytest
import yaml

from tests.chart.conftest import CHART, find, render
from tests.conftest import REPO

SERVING = REPO / "services" / "serving"


def rayservice(variant: str) -> dict:
    (service,) = find(render(variant), "RayService")
    return service


def module_defines(module: str, attribute: str) -> bool:
    """The module (read, not imported: no Ray here) binds ``attribute``: an app or an app builder."""
    path = SERVING / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attribute:
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attribute for t in node.targets):
            return True
    return False


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_chart_serve_configs_are_the_serving_package_configs(profile):
    assert (CHART / "files" / f"serve-{profile}.yaml").read_text() == \
        (SERVING / "config" / f"serve-{profile}.yaml").read_text(), "copy services/serving/config into the chart"


def test_serve_config_parses_and_names_importable_apps(variant):
    service = rayservice(variant)
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    apps = {app["name"]: app for app in config["applications"]}
    assert set(apps) == {"transcription", "embeddings", "llm"}
    for app in apps.values():
        module, attribute = app["import_path"].split(":")
        assert module_defines(module, attribute), app["import_path"]
    assert config["http_options"]["port"] == 8000
    # pointed at this release's storage, not the file's defaults
    root = apps["transcription"]["runtime_env"]["env_vars"]["MEDIAFLOW_ARTIFACT_ROOT"]
    assert root == ("s3://mediaflow/artifacts" if variant == "gpu" else "/media/artifacts")
    assert apps["llm"]["args"]["model_source"] == "/models/smollm2"


def test_cluster_shape_and_ports(variant):
    spec = rayservice(variant)["spec"]
    assert spec["upgradeStrategy"]["type"] in {"NewCluster", "None"}
    cluster = spec["rayClusterConfig"]
    assert cluster["rayVersion"] and cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no model replicas on the head
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports["gcs-server"] == 6379 and ports["dashboard"] == 8265 and ports["serve"] == 8000
    groups = cluster["workerGroupSpecs"]
    assert groups and all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in groups)


def gpu_limits(variant: str) -> list:
    groups = rayservice(variant)["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return [g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") for g in groups]


def test_gpu_variant_asks_for_gpus_and_the_kind_variant_does_not():
    assert gpu_limits("gpu") == [1]
    (group,) = rayservice("gpu")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = group["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia" and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu_limits("kind-cpu") == [None]
    config = yaml.safe_load(rayservice("gpu")["spec"]["serveConfigV2"])
    assert any(d["ray_actor_options"]["num_gpus"] >= 1 for app in config["applications"]
               for d in app.get("deployments", []))


def test_llm_workers_fill_the_model_cache_first():
    (group,) = rayservice("kind-cpu")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (init,) = group["template"]["spec"]["initContainers"]
    assert "mediaflow_serving.convert_gguf" in init["command"][-1]
    assert {"name": "models", "mountPath": "/models"} in init["volumeMounts"]


def test_dashboard_ingress_only_on_request_and_with_a_warning():
    assert not [i for i in find(render("kind-cpu"), "Ingress") if "dashboard" in i["metadata"]["name"]]
    docs = render(None, "ray.head.dashboardIngress.enabled=true")
    assert [i for i in find(docs, "Ingress") if "dashboard" in i["metadata"]["name"]]
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "must never be reachable from the internet" in notes
