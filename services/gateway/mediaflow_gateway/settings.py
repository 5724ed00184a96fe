"""Gateway settings: pydantic-settings, environment prefix ``MEDIAFLOW_GATEWAY_``.

Pipeline settings (stores, engines, Qdrant) stay in the core ``MEDIAFLOW_*``
settings; this model only holds what is specific to serving HTTP.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDIAFLOW_GATEWAY_", env_file=None, extra="ignore")

    backend: Literal["embedded", "cluster"] = "embedded"
    host: str = "127.0.0.1"
    port: int = 8080

    # -- auth ------------------------------------------------------------------
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Accepted bearer keys (JSON list; a Kubernetes Secret in the chart). "
        "Empty = no authentication (local development only).",
    )
    rate_limit_per_minute: int = Field(default=600, ge=1, description="Requests per key per minute.")
    signing_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
        description="Signs short-lived stream URLs (a <video> element cannot send a bearer key).",
    )
    stream_url_ttl_seconds: int = 6 * 3600

    # -- uploads and jobs ------------------------------------------------------
    max_upload_bytes: int | None = Field(
        default=None, description="Upload size limit; default: the core MEDIAFLOW_MAX_MEDIA_BYTES."
    )
    media_roots: list[Path] = Field(
        default_factory=list,
        description="Directories whose files a `{url: \"/path\"}` submission may name (JSON list). "
        "Default: none; the API takes uploads and http(s)/s3 URLs only.",
    )
    workers: int = Field(default=1, ge=1, description="Embedded backend: jobs run at the same time.")
    max_queued_jobs: int = Field(default=32, ge=1, description="Embedded backend: 503 beyond this.")

    # -- cluster backend -------------------------------------------------------
    namespace: str = "default"
    kube_api_url: str | None = Field(
        default=None, description="Kubernetes API URL; unset = in-cluster service account or kubeconfig."
    )
    kubeconfig: Path | None = Field(default=None, description="Default: $KUBECONFIG or ~/.kube/config.")
    job_poll_seconds: float = Field(default=1.0, gt=0, description="Cluster: status poll for SSE.")
    delete_wait_seconds: float = Field(
        default=60.0, ge=0,
        description="Cluster: how long DELETE waits for the operator's finalizer (503 + Retry-After after).")


@lru_cache
def get_gateway_settings() -> GatewaySettings:
    return GatewaySettings()
