"""The RayService carries what KubeRay needs: a parseable serveConfigV2 of importable apps, groups, ports."""

from __future__ import annotations

import ast
import copy
import http.server
import re
import socket
import subprocess
import sys
import threading

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
    # the profile's model, on this release's model cache
    assert apps["llm"]["args"]["model_source"] == ("/models/qwen2.5-7b-instruct" if variant == "gpu"
                                                   else "/models/smollm2")


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
    assert gpu_limits("gpu") == [1, 1]  # gpu-workers (ASR + embeddings), llm-workers
    for group in rayservice("gpu")["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        assert pod["runtimeClassName"] == "nvidia" and pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert gpu_limits("kind-cpu") == [None]
    config = yaml.safe_load(rayservice("gpu")["spec"]["serveConfigV2"])
    assert any(d["ray_actor_options"].get("num_gpus", 0) > 0 for app in config["applications"]
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


# -- probes: KubeRay 1.4's worker readiness checks the Serve proxy too ----------------------------

def ray_containers(variant: str) -> dict[str, dict]:
    cluster = rayservice(variant)["spec"]["rayClusterConfig"]
    out = {"head": cluster["headGroupSpec"]["template"]["spec"]["containers"][0]}
    for group in cluster["workerGroupSpecs"]:
        out[group["groupName"]] = group["template"]["spec"]["containers"][0]
    return out


def probe_urls(probe: dict) -> list[str]:
    command = probe["exec"]["command"]
    assert command[:2] == ["python3", "-c"]
    return re.findall(r"'(http://[^']+)'", command[2])


def test_worker_readiness_checks_raylet_and_serve_proxy(variant):
    for name, container in ray_containers(variant).items():
        raylet = "http://localhost:52365/api/local_raylet_healthz"
        proxy = "http://localhost:8000/-/healthz"
        for probe in ("startupProbe", "livenessProbe"):  # a worker without a proxy is alive, just not ready
            assert proxy not in probe_urls(container[probe]) and raylet in probe_urls(container[probe])
        ready = probe_urls(container["readinessProbe"])
        if name == "head":  # KubeRay checks the head's proxy itself on each reconcile, not by probe
            assert ready == [raylet, "http://localhost:8265/api/gcs_healthz"]
        else:
            assert ready == [raylet, proxy]
            assert container["readinessProbe"]["failureThreshold"] == 1  # as KubeRay: out of serve-svc at once


class _Stub(http.server.BaseHTTPRequestHandler):
    proxy = "success"  # "success", "draining" (503) or "missing" (404)

    def do_GET(self):  # noqa: N802
        if self.path == "/-/healthz" and _Stub.proxy == "draining":
            body, code = b"This node is being drained.", 503
        elif self.path == "/-/healthz" and _Stub.proxy == "missing":
            body, code = b"", 404
        else:
            body, code = b"success", 200
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_node():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("proxy", "ready"), [("success", True), ("draining", False), ("missing", False),
                                              ("down", False)])
def test_worker_without_a_healthy_proxy_is_not_ready(stub_node, proxy, ready):
    """Run the rendered readiness command against a stub raylet + Serve proxy."""
    _Stub.proxy = proxy
    container = ray_containers("kind-cpu")["cpu-workers"]
    code = container["readinessProbe"]["exec"]["command"][2]
    code = code.replace("localhost:52365", f"127.0.0.1:{stub_node}")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    try:
        proxy_port = closed.getsockname()[1] if proxy == "down" else stub_node
        code = code.replace("localhost:8000", f"127.0.0.1:{proxy_port}")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    finally:
        closed.close()
    assert (result.returncode == 0) is ready, result.stderr.decode()[-500:]


# -- the KubeRay autoscaler sidecar under Pod Security "restricted" ------------------------------

PSS_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    """Pod Security Standards "restricted" (v1.30+) on a pod spec."""
    problems = []
    pod_security = pod.get("securityContext", {})
    if any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")):
        problems.append("host namespaces")
    for volume in pod.get("volumes", []):
        if not set(volume) - {"name"} <= PSS_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: {set(volume) - {'name'}}")
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        sc, name = c.get("securityContext") or {}, c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation not false")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            problems.append(f"{name}: capabilities not dropping ALL")
        if set((sc.get("capabilities") or {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if sc.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot not true")
        if sc.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_security.get("seccompProfile") or {}).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccompProfile {seccomp}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


def head_pod_as_kuberay_builds_it(variant: str) -> dict:
    """The head pod after KubeRay 1.4.2 (common/pod.go): the autoscaler container (BuildAutoscalerContainer,
    the head's image, no securityContext of its own) merged with autoscalerOptions, and the ray-logs
    emptyDir at /tmp/ray in both containers."""
    cluster = rayservice(variant)["spec"]["rayClusterConfig"]
    pod = copy.deepcopy(cluster["headGroupSpec"]["template"]["spec"])
    options = cluster.get("autoscalerOptions") or {}
    autoscaler = {
        "name": "autoscaler", "image": pod["containers"][0]["image"],
        "env": [{"name": "KUBERAY_CRD_VER", "value": "v1"}, *options.get("env", [])],
        "volumeMounts": list(options.get("volumeMounts", [])),
        "resources": options.get("resources", {"limits": {"cpu": "500m", "memory": "512Mi"},
                                               "requests": {"cpu": "500m", "memory": "512Mi"}}),
    }
    if "securityContext" in options:
        autoscaler["securityContext"] = copy.deepcopy(options["securityContext"])
    pod["containers"].append(autoscaler)
    pod["volumes"].append({"name": "ray-logs", "emptyDir": {}})
    for c in pod["containers"]:
        if not any(m["mountPath"] == "/tmp/ray" for m in c.get("volumeMounts", [])):
            c.setdefault("volumeMounts", []).append({"name": "ray-logs", "mountPath": "/tmp/ray"})
    return pod


def test_head_pod_with_the_autoscaler_passes_pod_security_restricted(variant):
    cluster = rayservice(variant)["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    pod = head_pod_as_kuberay_builds_it(variant)
    assert restricted_violations(pod) == []
    (autoscaler,) = [c for c in pod["containers"] if c["name"] == "autoscaler"]
    sc = autoscaler["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    # read-only root: its writes go to volumes of the head pod (logs: /tmp/ray; the rest: /tmp, HOME=/tmp)
    mounts = {m["mountPath"]: m["name"] for m in autoscaler["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/tmp/ray"] == "ray-logs"
    assert {v["name"] for v in pod["volumes"]} >= set(mounts.values())
    assert {"name": "HOME", "value": "/tmp"} in autoscaler["env"]


def test_the_restricted_check_catches_kuberays_bare_autoscaler():
    pod = head_pod_as_kuberay_builds_it("kind-cpu")
    pod["containers"][-1].pop("securityContext", None)
    assert restricted_violations(pod) == ["autoscaler: allowPrivilegeEscalation not false",
                                          "autoscaler: capabilities not dropping ALL"]
