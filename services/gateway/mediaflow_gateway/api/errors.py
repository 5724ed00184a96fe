"""One JSON error shape for every failure: ``{"error": {"code", "message", "details"?}}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mediaflow.errors import (
    EngineUnavailableError,
    InvalidMediaError,
    InvalidSourceError,
    MediaflowError,
    MediaTooLargeError,
    NotFoundError,
)

log = logging.getLogger(__name__)

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 414: "uri_too_long",
          415: "unsupported_media_type", 416: "range_not_satisfiable", 422: "invalid_request",
          429: "rate_limited", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers
        self.code = code or _CODES.get(status, "error")


def error_response(status: int, message: str, *, code: str | None = None,
                   details: list[dict] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"code": code or _CODES.get(status, "error"), "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def status_for(exc: MediaflowError) -> int:
    # Order matters: MediaTooLargeError is an InvalidMediaError.
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, MediaTooLargeError):
        return 413
    if isinstance(exc, InvalidMediaError):
        return 415
    if isinstance(exc, InvalidSourceError):
        return 422
    if isinstance(exc, EngineUnavailableError):
        return 503
    return 400


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc.status, exc.message, code=exc.code, headers=exc.headers)

    @app.exception_handler(MediaflowError)
    async def _mediaflow_error(request: Request, exc: MediaflowError):
        return error_response(status_for(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return error_response(422, "the request body or parameters are invalid", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def _client_went_away(request: Request, exc: ClientDisconnect):
        # Nobody reads this answer; it keeps a dropped upload out of the error log.
        return error_response(400, "the client disconnected before the request was complete")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        # Answered by Starlette's outermost middleware, outside the one adding the security
        # headers: they are set here. The exception is logged (and re-raised) by Starlette.
        return error_response(500, "internal error", headers=getattr(request.app.state, "security_headers", None))
