"""Probes and metrics: ``/healthz`` (process up), ``/readyz`` (dependencies), ``/metrics``.

``/metrics`` (``metrics_enabled``) reads only this process's memory: a scrape never
calls the Kubernetes API or any other dependency."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mediaflow_gateway.api.deps import BackendDep

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(backend: BackendDep) -> JSONResponse:
    checks = await backend.readiness()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "backend": backend.kind, "checks": checks},
                        status_code=200 if ready else 503)


@metrics_router.get("/metrics")
async def metrics(request: Request, backend: BackendDep) -> Response:
    gateway_metrics = request.app.state.metrics
    # Job gauges from what the backend holds in memory (the embedded tracker). The cluster
    # backend knows MediaJobs only by asking the API server: the operator exports those.
    counts = backend.job_counts()
    if counts is not None:
        for phase in ("Pending", "Running", "Succeeded", "Failed"):
            gateway_metrics.jobs.labels(phase).set(counts.get(phase, 0))
    return Response(generate_latest(gateway_metrics.registry), media_type=CONTENT_TYPE_LATEST)
