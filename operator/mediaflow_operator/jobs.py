"""Kubernetes Job manifests for the ffmpeg stages (probe + extract_audio) of one MediaJob.

The Job runs the worker image's ``mediaflow stage`` command: probe as an init
container, extract_audio as the main one, both reading the spec the operator
stored as ``job.json`` in the artifact store. Names are deterministic, so a
restarted operator finds the Job it created instead of making a second one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from mediaflow.crd import API_VERSION, KIND
from mediaflow.spec import MediaJobSpec
from mediaflow_operator.settings import OperatorSettings

MEDIA_ID_LABEL = "mediaflow.dev/media-id"
MEDIAJOB_LABEL = "mediaflow.dev/mediajob"
STAGE_LABEL = "mediaflow.dev/stage"
JOB_STAGES = ("probe", "extract_audio")


def media_id_for(namespace: str, name: str) -> str:
    """Deterministic media id of a MediaJob (KMock and restarts give no stable uid)."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:12]
    return f"mj-{digest}"


def job_name(mediajob_name: str) -> str:
    # Job names are DNS labels (<= 63); the suffix keeps them unique per MediaJob.
    return f"{mediajob_name[:50]}-extract"


def _restricted_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def extract_job(
    body: dict[str, Any], media_id: str, spec: MediaJobSpec, settings: OperatorSettings
) -> dict[str, Any]:
    meta = body["metadata"]
    labels = {MEDIA_ID_LABEL: media_id, MEDIAJOB_LABEL: meta["name"], STAGE_LABEL: "extract_audio",
              "app.kubernetes.io/part-of": "mediaflow", "app.kubernetes.io/component": "worker"}
    resources = {
        "requests": {"cpu": settings.worker_cpu_request, "memory": settings.worker_memory_request},
        "limits": {"cpu": settings.worker_cpu_limit, "memory": settings.worker_memory_limit},
    }
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if settings.media_volume_claim:
        volumes.append({"name": "media", "persistentVolumeClaim": {"claimName": settings.media_volume_claim}})
        mounts.append({"name": "media", "mountPath": settings.media_mount_path})
    env_from = ([{"configMapRef": {"name": settings.worker_env_from_configmap}}]
                if settings.worker_env_from_configmap else [])
    if settings.worker_env_from_secret:
        env_from.append({"secretRef": {"name": settings.worker_env_from_secret}})

    def container(stage: str, args: list[str]) -> dict[str, Any]:
        return {
            "name": stage.replace("_", "-"),
            "image": settings.worker_image,
            "imagePullPolicy": settings.worker_image_pull_policy,
            "command": ["mediaflow", "stage", stage, "--media-id", media_id, *args],
            "envFrom": env_from,
            "env": [{"name": "HOME", "value": "/tmp"}],
            "resources": resources,
            "securityContext": _restricted_security_context(),
            "volumeMounts": mounts,
        }

    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [container("probe", ["--source", spec.source.uri])],
        "containers": [container("extract_audio", [])],
        "volumes": volumes,
    }
    if settings.worker_service_account:
        pod_spec["serviceAccountName"] = settings.worker_service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(meta["name"]),
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "backoffLimit": settings.job_backoff_limit,
            "activeDeadlineSeconds": settings.job_active_deadline_seconds,
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def job_outcome(job: dict[str, Any]) -> tuple[str, str, str] | None:
    """``("True"|"False", reason, message)`` once the Job has finished, else None."""
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "True", "JobComplete", f"Job {job['metadata']['name']} completed"
        if cond.get("type") == "Failed":
            return ("False", cond.get("reason") or "JobFailed",
                    cond.get("message") or f"Job {job['metadata']['name']} failed")
    if status.get("succeeded"):
        return "True", "JobComplete", f"Job {job['metadata']['name']} completed"
    return None
