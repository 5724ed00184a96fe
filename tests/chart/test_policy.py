"""Policy over every pod the chart makes, and over the worker Jobs the operator makes from its values."""

from __future__ import annotations

import kubernetes_validate
import pytest

from mediaflow.spec import MediaJobSpec
from mediaflow_operator.jobs import extract_job
from mediaflow_operator.settings import OperatorSettings
from tests.chart.conftest import find, pod_templates, render

RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}


def containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def worker_job(variant: str) -> dict:
    """The Job the operator would create, configured from the chart's operator ConfigMap."""
    (config,) = find(render(variant), "ConfigMap", "mediaflow-operator")
    settings = OperatorSettings(**{k.removeprefix("MEDIAFLOW_OPERATOR_").lower(): v
                                   for k, v in config["data"].items()})
    body = {"metadata": {"name": "talk", "namespace": "mediaflow", "uid": "u-1"}}
    spec = MediaJobSpec.model_validate({"source": {"uri": "https://example.com/talk.mp4"}})
    return extract_job(body, "mj-123", spec, settings)


def all_pods(variant: str) -> list[tuple[str, dict]]:
    job = worker_job(variant)
    return [*pod_templates(render(variant)), ("Job/worker (operator)", job["spec"]["template"]["spec"])]


def test_every_container_sets_requests_and_limits(variant):
    for where, pod in all_pods(variant):
        for c in containers(pod):
            resources = c.get("resources", {})
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(side, {})), f"{where}/{c['name']} {side}"


def test_every_long_running_container_has_probes(variant):
    for where, pod in pod_templates(render(variant)):
        if pod.get("restartPolicy") in ("OnFailure", "Never"):
            continue  # runs to completion (the model-cache fill Job): nothing to probe
        for c in pod["containers"]:
            assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(c), f"{where}/{c['name']}"


def test_restricted_pod_security(variant):
    for where, pod in all_pods(variant):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in containers(pod):
            security = c["securityContext"]
            assert RESTRICTED.items() <= security.items(), f"{where}/{c['name']}"
            assert security["capabilities"] == {"drop": ["ALL"]}, f"{where}/{c['name']}"
        assert not any("hostPath" in v for v in pod.get("volumes", [])), where
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), where


def test_writable_paths_are_volumes(variant):
    # a read-only root filesystem needs /tmp (and Ray its /dev/shm) as volumes
    for where, pod in all_pods(variant):
        for c in containers(pod):
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), f"{where}/{c['name']}"


def test_images_are_pinned(variant):
    for where, pod in all_pods(variant):
        for c in containers(pod):
            image = c["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest" and "/" not in tag, f"{where}: {image}"


@pytest.mark.parametrize("version", ["1.30.0", "1.34.0"])
def test_the_operators_worker_job_validates(variant, version):
    job = worker_job(variant)
    kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    if variant != "gpu":  # pvc media backend: the Job mounts the shared media volume
        assert {"name": "media", "persistentVolumeClaim": {"claimName": "mediaflow-media"}} in pod["volumes"]
    env_from = [{"configMapRef": {"name": "mediaflow-pipeline"}}]
    if variant == "gpu":  # s3 media backend: the worker reads and writes artifacts with the chart's S3 secret
        env_from.append({"secretRef": {"name": "mediaflow-s3"}})
    assert pod["containers"][0]["envFrom"] == env_from
