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
    auth_failures_per_minute: int = Field(
        default=10, ge=1,
        description="Failed authentications (a wrong key) allowed per client address per minute; past "
        "that, every /v1 request from the address answers 429 with Retry-After until the budget refills.")
    signing_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(32)),
        description="Signs short-lived stream URLs (a <video> element cannot send a bearer key).",
    )
    stream_url_ttl_seconds: int = 6 * 3600

    # -- HTTP ------------------------------------------------------------------
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024,
        description="Largest request body other than an upload (JSON): 413 beyond, before the app reads it.")
    public_base_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s\"'<>]+$",
        description="Where the UI's assets are served from (scheme, host and optional path), e.g. "
        "https://media.example.org; default: root-relative /static/... (never the request's Host).")
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Proxies whose X-Forwarded-For/-Proto are trusted (uvicorn's forwarded_allow_ips; "
        "JSON list of addresses or networks). Default: none, so the client address is the TCP peer.")
    docs_enabled: bool = Field(default=False, description="Serve /docs, /redoc and /openapi.json.")
    metrics_enabled: bool = Field(default=True, description="Serve Prometheus /metrics.")

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
