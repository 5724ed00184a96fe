"""The app factory and the ``mediaflow-gateway`` entry point."""

from __future__ import annotations

import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from mediaflow_gateway.api.auth import KeyRing, RateLimiter, StreamSigner, failure_limiter
from mediaflow_gateway.api.docs import docs_router
from mediaflow_gateway.api.errors import install_error_handlers
from mediaflow_gateway.api.guard import RequestGuard
from mediaflow_gateway.api.routes import health, jobs, media, search
from mediaflow_gateway.backends import Backend, build_backend
from mediaflow_gateway.metrics import GatewayMetrics, MetricsMiddleware
from mediaflow_gateway.security import SecurityHeadersMiddleware, security_headers
from mediaflow_gateway.settings import GatewaySettings, get_gateway_settings
from mediaflow_gateway.ui import pages

log = logging.getLogger(__name__)
UI_DIR = Path(__file__).parent / "ui"


def create_app(settings: GatewaySettings | None = None, backend: Backend | None = None) -> FastAPI:
    """The gateway app. ``backend`` defaults to the one the settings name (built at startup)."""
    settings = settings or get_gateway_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.backend = backend or build_backend(settings)
        if not app.state.keyring.enabled:
            log.warning("no API keys configured (MEDIAFLOW_GATEWAY_API_KEYS): the API is open")
        await app.state.backend.start()
        try:
            yield
        finally:
            await app.state.backend.stop()

    openapi_url = "/openapi.json" if settings.docs_enabled else None
    app = FastAPI(title="Mediaflow gateway", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=openapi_url,
                  description="Upload audio/video, follow processing, read transcripts and summaries, "
                              "search and ask. Authenticate with `Authorization: Bearer <API key>`.")
    app.state.settings = settings
    app.state.keyring = KeyRing(settings)
    app.state.limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.failures = failure_limiter(settings.auth_failures_per_minute)
    app.state.signer = StreamSigner(settings)
    app.state.metrics = GatewayMetrics()
    app.state.security_headers = security_headers(pages.asset_origin(settings))
    install_error_handlers(app)
    routers = [media.router, jobs.router, search.router, health.router, pages.router]
    if settings.metrics_enabled:
        routers.append(health.metrics_router)
    if openapi_url:
        routers.append(docs_router(app.title, openapi_url))
    for router in routers:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=UI_DIR / "static"), name="static")
    # Outermost first: headers on every answer, metrics count refusals too, and the guard
    # (key, limits, path) answers before anything reads the body.
    app.add_middleware(RequestGuard)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeadersMiddleware, headers=app.state.security_headers)

    return app


def main(argv: list[str] | None = None) -> None:
    """Console script ``mediaflow-gateway``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="mediaflow-gateway",
        description="Mediaflow REST API and web UI. Configured by MEDIAFLOW_GATEWAY_* (backend, API keys, "
        "limits) and MEDIAFLOW_* (pipeline) environment variables.",
    )
    parser.add_argument("--host", help="bind address (default: MEDIAFLOW_GATEWAY_HOST)")
    parser.add_argument("--port", type=int, help="port (default: MEDIAFLOW_GATEWAY_PORT)")
    args = parser.parse_args(argv)
    run(args.host, args.port)


def uvicorn_options(settings: GatewaySettings) -> dict:
    """How uvicorn treats X-Forwarded-For/-Proto: honoured only from ``forwarded_allow_ips``
    (none by default, so the client address is the TCP peer's and cannot be claimed)."""
    if not settings.forwarded_allow_ips:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(settings.forwarded_allow_ips)}


def run(host: str | None = None, port: int | None = None) -> None:
    """``mediaflow-gateway`` / ``mediaflow serve``: uvicorn with one process (models load once)."""
    import uvicorn

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = get_gateway_settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port,
                server_header=False, **uvicorn_options(settings))
