"""What both model APIs share: OpenAI-shaped errors, model loading at startup, health,
metrics and ``/v1/models``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mediaflow_serving.metrics import AppMetrics


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """OpenAI's error body, which the ``openai`` client and ``mediaflow.engines.remote`` read."""
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind, "code": status}})


class EngineSlot:
    """The replica's one model instance, built by the factory when the app starts."""

    def __init__(self, factory: Callable[[], Any]):
        self.factory = factory
        self.engine: Any = None

    async def load(self) -> None:
        if self.engine is None:
            self.engine = await run_in_threadpool(self.factory)

    def get(self) -> Any:
        if self.engine is None:
            raise HTTPException(503, "model is still loading")
        return self.engine


def create_model_app(
    title: str, app_name: str, engine_factory: Callable[[], Any], *, metrics_to_ray: bool = False
) -> FastAPI:
    """A FastAPI app that loads one engine at startup and serves health, metrics, models."""
    slot = EngineSlot(engine_factory)
    metrics = AppMetrics(app_name, mirror_to_ray=metrics_to_ray)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await slot.load()
        yield

    app = FastAPI(title=title, lifespan=lifespan)
    app.state.engine = slot
    app.state.metrics = metrics
    app.middleware("http")(metrics.middleware)
    started = int(time.time())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        return error_response(400, problems or "invalid request")

    @app.get("/health")
    async def health():
        engine = slot.get()
        return {"status": "ok", "model": engine.name}

    @app.get("/metrics")
    async def prometheus_metrics():
        return metrics.render()

    @app.get("/v1/models")
    async def list_models():
        engine = slot.get()
        return {"object": "list", "data": [
            {"id": engine.name, "object": "model", "created": started, "owned_by": "mediaflow"}
        ]}

    return app
