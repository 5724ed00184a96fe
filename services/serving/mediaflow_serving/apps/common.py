"""What both model APIs share: OpenAI-shaped errors, model loading at startup, health,
metrics and ``/v1/models``.

Every error, whatever raised it (a route, request validation, FastAPI's own 404/405, an
unhandled exception), is OpenAI's ``{"error": {"message", "type", "param", "code"}}``:
``type`` is ``invalid_request_error`` for 4xx and ``server_error`` for 5xx, ``param`` the
request field at fault (or null), ``code`` the status's name (``not_found``, …)."""

from __future__ import annotations

import contextlib
import http
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mediaflow_serving.metrics import AppMetrics


def error_kind(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_code(status: int) -> str | None:
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return None


def error_response(status: int, message: str, kind: str | None = None, *, param: str | None = None,
                   code: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """OpenAI's error body, which the ``openai`` client and ``mediaflow.engines.remote`` read."""
    body = {"message": message, "type": kind or error_kind(status), "param": param,
            "code": code or error_code(status)}
    return JSONResponse(status_code=status, content={"error": body}, headers=dict(headers or {}) or None)


class ApiError(HTTPException):
    """An ``HTTPException`` that names the request field at fault (OpenAI's ``param``)."""

    def __init__(self, status: int, message: str, *, param: str | None = None):
        super().__init__(status, message)
        self.param = param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException, routing's 404/405
    async def http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), param=getattr(exc, "param", None),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors
        )
        fields = [str(e["loc"][1]) for e in errors if len(e.get("loc", ())) > 1]
        return error_response(400, problems or "invalid request", param=fields[0] if fields else None)

    @app.exception_handler(Exception)  # Starlette still logs it and re-raises to the server
    async def unhandled_error(request: Request, exc: Exception):
        return error_response(500, "internal server error")


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

    install_error_handlers(app)

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
        # a language-routed transcriber serves two: the multilingual model and the English one
        names = getattr(engine, "model_names", None) or (engine.name,)
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": started, "owned_by": "mediaflow"} for name in names
        ]}

    return app
