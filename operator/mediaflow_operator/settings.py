"""Operator settings (environment prefix ``MEDIAFLOW_OPERATOR_``, e.g. from the chart's ConfigMap).

The pipeline's own settings (artifact store, Qdrant, engine URLs) stay ``MEDIAFLOW_*``
and are read by :func:`mediaflow.config.Settings`; the operator forces remote engines.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAFLOW_OPERATOR_", extra="ignore")

    # -- scope -------------------------------------------------------------------
    namespace: str | None = Field(
        default=None,
        description="The operator's own namespace (the chart sets it from the downward API). Worker "
        "Jobs run here, beside the pipeline ConfigMap, media PVC, S3 Secret and worker NetworkPolicy, "
        "whatever namespace their MediaJob is in. Unset: each Job runs in its MediaJob's namespace.",
    )
    watch_namespaces: str = Field(
        default="",
        description="Comma-separated namespaces whose MediaJobs are reconciled; '*' = all namespaces. "
        "Empty = the operator's own namespace.",
    )

    # -- worker Jobs (ffmpeg stages) -------------------------------------------
    worker_image: str = "mediaflow/worker:0.1.0"  # the chart sets the release's image
    worker_image_pull_policy: str = "IfNotPresent"
    worker_service_account: str | None = None
    worker_cpu_request: str = "500m"
    worker_cpu_limit: str = "2"
    worker_memory_request: str = "512Mi"
    worker_memory_limit: str = "2Gi"
    worker_env_from_configmap: str | None = Field(
        default=None, description="ConfigMap with the MEDIAFLOW_* settings the worker needs."
    )
    worker_env_from_secret: str | None = Field(
        default=None,
        description="Secret whose keys become the worker's environment (S3 credentials: "
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY). Only its name passes through the operator.",
    )
    media_volume_claim: str | None = Field(
        default=None, description="PVC of the shared media volume, mounted at media_mount_path."
    )
    media_mount_path: str = "/media"
    job_backoff_limit: int = Field(default=2, ge=0)
    job_active_deadline_seconds: int = Field(default=3600, gt=0)
    job_ttl_seconds_after_finished: int = Field(default=3600, ge=0)

    # -- scheduling -------------------------------------------------------------
    max_running: int = Field(default=4, ge=1, description="MediaJobs processed at once.")
    stage_retries: int = Field(
        default=3, ge=0, description="Temporary failures of a remote stage before Failed."
    )
    retry_delay_seconds: float = Field(default=10.0, ge=0)
    status_grace_seconds: float = Field(
        default=1.0, ge=0, description="A stage still running after this is reported as started; one "
        "done sooner, and a finished stage, are reported with the next status patch.",
    )
    job_recheck_seconds: float = Field(
        default=30.0, gt=0, description="Re-read a worker Job this often even without a watch event."
    )

    # -- kopf ---------------------------------------------------------------------
    watch_server_timeout: int = Field(default=300, description="Server-side watch timeout (s).")
    watch_client_timeout: int = Field(default=330, description="Client-side watch timeout (s).")
    connect_timeout: int = Field(default=30, description="API connect timeout (s).")
    request_timeout: int = Field(default=60, description="API request timeout (s).")
    peering_name: str = Field(
        default="mediaflow",
        description="KopfPeering object (per watched namespace; ClusterKopfPeering for '*'); the chart "
        "names it after the release, so two releases never pause each other.",
    )
    peering_priority: int | None = Field(
        default=None,
        description="kopf peering priority; unset = random per process. kopf pauses every operator "
        "of equal priority, so replicas must differ: the highest runs, the others stand by.",
    )
    peering_lifetime: int = Field(
        default=60, ge=2, description="Seconds a silent peer counts as alive: a standby takes over after this."
    )
    standalone: bool = Field(default=False, description="No peering (single replica, tests).")
    metrics_port: int | None = Field(default=9090, description="Prometheus /metrics port; unset = off.")


    def watched_namespaces(self) -> list[str] | None:
        """The namespaces to watch, ``None`` for all; a ValueError when nothing says which."""
        names = [n.strip() for n in self.watch_namespaces.split(",") if n.strip()]
        if "*" in names:
            return None
        if not names and self.namespace:
            names = [self.namespace]
        if not names:
            raise ValueError("set MEDIAFLOW_OPERATOR_WATCH_NAMESPACES (or MEDIAFLOW_OPERATOR_NAMESPACE, "
                             "or -n NAMESPACE / -A on the command line)")
        return names

