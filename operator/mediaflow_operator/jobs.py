"""Kubernetes Job manifests for the ffmpeg stages (probe + extract_audio) of one MediaJob.

The Job runs the worker image's ``mediaflow stage`` command: probe as an init
container, extract_audio as the main one, both reading the spec the operator
stored as ``job.json`` in the artifact store. Names are deterministic, so a
restarted operator finds the Job it created instead of making a second one.

Jobs run in the operator's namespace (``MEDIAFLOW_OPERATOR_NAMESPACE``), where the
release's pipeline ConfigMap, media volume, S3 Secret and worker NetworkPolicy are,
whichever watched namespace their MediaJob is in. An owner reference cannot cross
namespaces, so it is set only for a MediaJob of that same namespace; the finalizer
deletes the Job in every case.
"""

from __future__ import annotations

import re
from typing import Any

from mediaflow.crd import API_VERSION, KIND
from mediaflow.spec import MediaJobSpec
from mediaflow.status import mediajob_media_id
from mediaflow_operator.settings import OperatorSettings

# Label values are at most 63 characters: the media id (mj-<12 hex>) identifies the
# MediaJob; its full namespace/name, which can be longer, is an annotation.
MEDIA_ID_LABEL = "mediaflow.dev/media-id"
STAGE_LABEL = "mediaflow.dev/stage"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "mediaflow-operator"
MEDIAJOB_ANNOTATION = "mediaflow.dev/mediajob"
JOB_STAGES = ("probe", "extract_audio")
_NAME_PREFIX = 38


def job_name(namespace: str, mediajob_name: str) -> str:
    """A DNS label of at most 63 characters, unique per MediaJob: a readable prefix of its
    name, then the hash of ``namespace/name`` (the media id) that tells long names apart.

    Pods of a Job carry its name as a label value, so 63 is the real limit, not 253.
    """
    prefix = re.sub(r"[^a-z0-9-]+", "-", mediajob_name.lower())[:_NAME_PREFIX].strip("-")
    digest = mediajob_media_id(namespace, mediajob_name).removeprefix("mj-")
    return f"{prefix}-{digest}-extract" if prefix else f"mj-{digest}-extract"


def job_namespace(mediajob_namespace: str, settings: OperatorSettings) -> str:
    return settings.namespace or mediajob_namespace


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
    namespace = job_namespace(meta["namespace"], settings)
    labels = {MEDIA_ID_LABEL: media_id, STAGE_LABEL: "extract_audio", MANAGED_BY_LABEL: MANAGED_BY,
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
    metadata: dict[str, Any] = {
        "name": job_name(meta["namespace"], meta["name"]),
        "namespace": namespace,
        "labels": labels,
        "annotations": {MEDIAJOB_ANNOTATION: f"{meta['namespace']}/{meta['name']}"},
    }
    if namespace == meta["namespace"]:
        # blockOwnerDeletion needs `update` on mediajobs/finalizers (OwnerReferencesPermissionEnforcement).
        metadata["ownerReferences"] = [{
            "apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
            "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True,
        }]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
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
