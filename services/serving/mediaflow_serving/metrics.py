"""Prometheus metrics of one app replica: request counts, latency, batch sizes, audio seconds.

- ``GET /metrics`` on the app renders this replica's own registry (each app has its
  own, so several apps or tests can share a process). Enough under plain uvicorn.
- Under Ray Serve a route is load-balanced over replicas, so the same series are also
  recorded with ``ray.util.metrics``: Ray's metrics agent exports them, summed over
  every replica, on each node's metrics port (prefixed ``ray_``), next to Serve's own
  ``ray_serve_*`` series; that is what a PodMonitor scrapes.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

REQUESTS = ("mediaflow_serving_requests", "HTTP requests answered.")
LATENCY = ("mediaflow_serving_request_seconds", "HTTP request latency.")
BATCH_REQUESTS = ("mediaflow_serving_batch_requests", "Requests merged into one model call.")
BATCH_INPUTS = ("mediaflow_serving_batch_inputs", "Inputs (texts) in one model call.")
AUDIO_SECONDS = ("mediaflow_serving_audio_seconds", "Seconds of audio transcribed.")


class _RayMirror:
    """The same series through ``ray.util.metrics`` (only inside a Ray worker)."""

    def __init__(self, app_name: str):
        from ray.util import metrics

        tags = {"app": app_name}
        self.requests = metrics.Counter(*REQUESTS, tag_keys=("app", "route", "status"))
        self.latency = metrics.Histogram(*LATENCY, boundaries=list(LATENCY_BUCKETS), tag_keys=("app", "route"))
        self.batch_requests = metrics.Histogram(*BATCH_REQUESTS, boundaries=list(BATCH_BUCKETS), tag_keys=("app",))
        self.batch_inputs = metrics.Histogram(*BATCH_INPUTS, boundaries=list(BATCH_BUCKETS), tag_keys=("app",))
        self.audio_seconds = metrics.Counter(*AUDIO_SECONDS, tag_keys=("app",))
        for metric in (self.requests, self.latency, self.batch_requests, self.batch_inputs, self.audio_seconds):
            metric.set_default_tags(tags)


class AppMetrics:
    def __init__(self, app_name: str, *, mirror_to_ray: bool = False):
        self.app_name = app_name
        self.registry = CollectorRegistry()
        self.requests = Counter(*REQUESTS, ["app", "route", "status"], registry=self.registry)
        self.latency = Histogram(*LATENCY, ["app", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram(*BATCH_REQUESTS, ["app"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_inputs = Histogram(*BATCH_INPUTS, ["app"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.audio_seconds = Counter(*AUDIO_SECONDS, ["app"], registry=self.registry)
        self.ray = _RayMirror(app_name) if mirror_to_ray else None

    def record_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(self.app_name, route, str(status)).inc()
        self.latency.labels(self.app_name, route).observe(seconds)
        if self.ray:
            self.ray.requests.inc(1, tags={"route": route, "status": str(status)})
            self.ray.latency.observe(seconds, tags={"route": route})

    def observe_batch(self, requests: int, inputs: int) -> None:
        self.batch_requests.labels(self.app_name).observe(requests)
        self.batch_inputs.labels(self.app_name).observe(inputs)
        if self.ray:
            self.ray.batch_requests.observe(requests)
            self.ray.batch_inputs.observe(inputs)

    def add_audio_seconds(self, seconds: float) -> None:
        self.audio_seconds.labels(self.app_name).inc(seconds)
        if self.ray:
            self.ray.audio_seconds.inc(seconds)

    async def middleware(self, request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            # the route template, not the raw path: bounded label cardinality
            route = getattr(request.scope.get("route"), "path", None) or "unmatched"
            self.record_request(route, status, time.perf_counter() - started)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
