"""The rendered RayService can run its serve config: every app's replicas fit the worker groups.

Nodes are the worker groups' pods as KubeRay starts Ray on them (CPUs = the container's cpu
limit, GPUs = its nvidia.com/gpu limit, custom resources and labels from rayStartParams); the
head takes no replicas (num-cpus 0). Replicas ask what Ray Serve asks: ``ray_actor_options``,
and for the LLM the placement-group bundles Ray Serve LLM computes itself (its own code, run in
the LLM environment). Minimum replicas must fit the groups' minimum nodes, maximum replicas
their maximum nodes (first-fit, largest first), and no engine runs more threads than its CPUs.
The serve config is also validated by Ray Serve's own schema.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from tests.chart.conftest import CHART, find, helm, render
from tests.conftest import LLM_MODEL_DIR, REPO

RESOURCE_KEYS = ("CPU", "GPU")


def quantity(value) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass
class Node:
    group: str
    free: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)

    def take(self, demand: dict[str, float], selector: dict[str, str]) -> bool:
        if any(self.labels.get(k) != v for k, v in selector.items()):
            return False
        if any(self.free.get(k, 0.0) + 1e-9 < v for k, v in demand.items() if v):
            return False
        for k, v in demand.items():
            self.free[k] = self.free.get(k, 0.0) - v
        return True


def worker_nodes(service: dict, size: str) -> list[Node]:
    nodes = []
    for group in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        params = group["rayStartParams"]
        resources = {"CPU": quantity(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}
        if "resources" in params:  # a shell word, as KubeRay hands it to `ray start --resources=`
            (word,) = shlex.split(params["resources"])
            resources |= {k: float(v) for k, v in json.loads(word).items()}
        labels = dict(item.split("=", 1) for item in params["labels"].split(",")) if "labels" in params else {}
        count = group["minReplicas"] if size == "min" else group["maxReplicas"]
        nodes += [Node(group["groupName"], dict(resources), labels) for _ in range(count)]
    return nodes


@dataclass
class Replica:
    app: str
    bundles: list[dict[str, float]]  # one for a plain actor
    selector: dict[str, str]


def actor_demand(options: dict) -> dict[str, float]:
    return {"CPU": float(options.get("num_cpus", 1)), "GPU": float(options.get("num_gpus", 0)),
            **{k: float(v) for k, v in (options.get("resources") or {}).items()}}


def llm_bundles(args: dict) -> list[dict[str, float]]:
    """The LLM replica's placement-group bundles, from Ray Serve LLM's own code (LLM env)."""
    python = REPO / ".venv-llm" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: run `make setup`")
    # the bundles do not depend on the weights: any local model dir will do for the computation
    local = {**args, "model_source": str(LLM_MODEL_DIR)}
    code = (
        "import json, sys\n"
        "from mediaflow_serving.llm import LLMArgs, llm_config\n"
        "from ray.llm._internal.serve.core.server.llm_server import _merge_replica_actor_and_child_actor_bundles\n"
        "config = llm_config(LLMArgs.model_validate(json.loads(sys.argv[1])))\n"
        "actor = config.deployment_config.get('ray_actor_options', {})\n"
        "replica = {'CPU': actor.get('num_cpus', 1), 'GPU': actor.get('num_gpus', 0), **actor.get('resources', {})}\n"
        "bundles = _merge_replica_actor_and_child_actor_bundles(config.get_engine_config().placement_bundles, replica)\n"
        "print('BUNDLES ' + json.dumps(bundles))\n"
    )
    out = subprocess.run([str(python), "-c", code, json.dumps(local)], capture_output=True, text=True,
                         timeout=180, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("BUNDLES ")] or [out.stderr[-2000:]]
    return [{k: float(v) for k, v in b.items()} for b in json.loads(line.removeprefix("BUNDLES "))]


def replicas(config: dict, size: str) -> list[Replica]:
    out = []
    for app in config["applications"]:
        overrides = {d["name"]: d for d in app.get("deployments", [])}
        if app["name"] == "llm":
            args = app["args"]
            scaling = args.get("autoscaling_config", {})
            count = scaling.get("min_replicas", 1) if size == "min" else scaling.get("max_replicas", 1)
            out += [Replica("llm", llm_bundles(args), {}) for _ in range(count)]
            ingress = overrides.get("OpenAiIngress", {})
            options = ingress.get("ray_actor_options") or {"num_cpus": args.get("ingress_num_cpus", 1)}
            scaling = ingress.get("autoscaling_config", {})
            count = scaling.get("min_replicas", 1) if size == "min" else scaling.get("max_replicas", 1)
            out += [Replica("llm-ingress", [actor_demand(options)], options.get("label_selector") or {})
                    for _ in range(count)]
            continue
        for deployment in app["deployments"]:
            scaling = deployment["autoscaling_config"]
            count = scaling["min_replicas"] if size == "min" else scaling["max_replicas"]
            options = deployment["ray_actor_options"]
            out += [Replica(app["name"], [actor_demand(options)], options.get("label_selector") or {})
                    for _ in range(count)]
    return out


def place(nodes: list[Node], wanted: list[Replica]) -> list[str]:
    """First-fit decreasing; each bundle of a replica on any node that holds it. Unplaced apps."""
    unplaced = []
    order = sorted(wanted, key=lambda r: tuple(-sum(b.get(k, 0) for b in r.bundles) for k in ("GPU", "CPU")))
    for replica in order:
        for bundle in replica.bundles:
            if not any(node.take(bundle, replica.selector) for node in nodes):
                unplaced.append(f"{replica.app} {bundle}")
                break
    return unplaced


def rendered(variant: str) -> tuple[dict, dict]:
    (service,) = find(render(variant), "RayService")
    return service, yaml.safe_load(service["spec"]["serveConfigV2"])


@pytest.mark.parametrize("size", ["min", "max"])
def test_every_app_fits_the_worker_groups(variant, size):
    service, config = rendered(variant)
    nodes = worker_nodes(service, size)
    unplaced = place(nodes, replicas(config, size))
    assert not unplaced, f"{variant}: {size} replicas do not fit {len(nodes)} {size} nodes: {unplaced}"


def test_no_engine_runs_more_threads_than_its_cpus(variant):
    _, config = rendered(variant)
    for app in config["applications"]:
        engine = (app.get("args") or {}).get("engine")
        if engine is None:
            continue
        from mediaflow.config import Settings

        threads = engine.get("threads", Settings.model_fields["threads"].default)
        for deployment in app["deployments"]:
            assert threads <= deployment["ray_actor_options"]["num_cpus"], (app["name"], threads, deployment)


def test_the_serve_config_is_valid_for_ray_serve(variant):
    from ray.serve.schema import ServeDeploySchema

    _, config = rendered(variant)
    ServeDeploySchema.model_validate(config)


def test_on_gpus_the_llm_has_its_own_group_and_the_head_never_builds_it():
    service, config = rendered("gpu")
    groups = {g["groupName"]: g for g in service["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    assert groups["llm-workers"]["template"]["spec"]["containers"][0]["image"].split(":")[0].endswith(
        "mediaflow/llm-gpu")
    apps = {a["name"]: a for a in config["applications"]}
    llm = apps["llm"]
    assert llm["runtime_env"]["py_executable"] == "/opt/mediaflow/.venv-llm/bin/python"
    # every engine bundle asks for the resource only llm-workers advertise
    nodes = worker_nodes(service, "max")
    for bundle in llm_bundles(llm["args"]):
        holders = {n.group for n in nodes if n.free.get(llm["args"]["pinned_resource"], 0) >= 1}
        assert bundle[llm["args"]["pinned_resource"]] >= 1 and holders == {"llm-workers"}
    # Ray Serve pins the app's build task to the deployments' shared label selector: llm-workers'
    from ray.serve._private.application_state import _get_shared_build_app_label_selector
    from ray.serve.schema import ServeApplicationSchema

    selector = _get_shared_build_app_label_selector(ServeApplicationSchema.model_validate(llm))
    assert selector == {"mediaflow.dev/pool": "llm"}
    assert {n.group for n in nodes if all(n.labels.get(k) == v for k, v in selector.items())} == {"llm-workers"}
    # ASR and embeddings stay off the LLM's GPUs
    for name in ("transcription", "embeddings"):
        (deployment,) = apps[name]["deployments"]
        assert deployment["ray_actor_options"]["resources"] == {"mediaflow_models": 1}
        assert deployment["ray_actor_options"]["num_gpus"] < 1  # they share a GPU


def test_llm_values_reach_the_serve_config():
    values = {"modelId": "llama-3.1-8b-instruct", "maxModelLen": 32768, "gpuMemoryUtilization": 0.85,
              "tensorParallelSize": 2, "acceleratorType": "A100"}
    out = helm("template", "mediaflow", str(CHART), "--namespace", "mediaflow", "-f", str(CHART / "ci/gpu-values.yaml"),
               "--set-json", f"ray.llm={json.dumps(values)}", "--set", "ray.llmWorkers.gpusPerWorker=2").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (service,) = find(docs, "RayService")
    (llm,) = [a for a in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"] if a["name"] == "llm"]
    args = llm["args"]
    assert args["model_id"] == "llama-3.1-8b-instruct" and args["model_source"] == "/models/llama-3.1-8b-instruct"
    assert args["engine_kwargs"] == {"dtype": "bfloat16", "max_model_len": 32768, "gpu_memory_utilization": 0.85,
                                     "tensor_parallel_size": 2}
    assert args["accelerator_type"] == "A100"
    bundles = llm_bundles(args)
    assert len(bundles) == 2 and all(b["GPU"] == 1 and b["mediaflow_llm"] >= 1 for b in bundles)
    nodes = worker_nodes(service, "min")
    for node in nodes:  # Ray detects the GPU type on a node that has it (llmWorkers.nodeSelector picks them)
        if node.group == "llm-workers":
            node.free["accelerator_type:A100"] = 1.0
    assert not place(nodes, replicas(yaml.safe_load(service["spec"]["serveConfigV2"]), "min"))
    # by default: any GPU
    (_, config) = rendered("gpu")
    assert [a for a in config["applications"] if a["name"] == "llm"][0]["args"]["accelerator_type"] is None
