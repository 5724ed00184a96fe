"""Typed dependencies: ``Annotated`` aliases the routes declare in their signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from mediaflow.stores.artifacts import MEDIA_ID_PATTERN
from mediaflow_gateway.api.auth import KeyRing, RateLimiter, StreamSigner
from mediaflow_gateway.backends.base import Backend
from mediaflow_gateway.settings import GatewaySettings


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_signer(request: Request) -> StreamSigner:
    return request.app.state.signer


def require_api_key(request: Request) -> str:
    """Authenticate the bearer key and charge its rate limit; returns the key id."""
    keyring: KeyRing = request.app.state.keyring
    limiter: RateLimiter = request.app.state.limiter
    caller = keyring.authenticate(request.headers.get("authorization"))
    limiter.check(caller)
    request.state.caller = caller
    return caller


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]
SignerDep = Annotated[StreamSigner, Depends(get_signer)]
CallerDep = Annotated[str, Depends(require_api_key)]
MediaIdPath = Annotated[str, Path(pattern=MEDIA_ID_PATTERN.pattern, description="Media id.")]
