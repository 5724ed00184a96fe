"""Typed dependencies: ``Annotated`` aliases the routes declare in their signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from mediaflow.stores.artifacts import MEDIA_ID_PATTERN
from mediaflow_gateway.api.auth import KeyRing, RateLimiter, StreamSigner
from mediaflow_gateway.api.guard import CALLER
from mediaflow_gateway.backends.base import Backend
from mediaflow_gateway.settings import GatewaySettings


def get_settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_signer(request: Request) -> StreamSigner:
    return request.app.state.signer


def require_api_key(request: Request) -> str:
    """The caller's key id. The guard authenticated it (and charged its rate limit) before
    the body was read; a request that did not pass there is authenticated here."""
    caller = request.scope.get("state", {}).get(CALLER)
    if caller is None:
        keyring: KeyRing = request.app.state.keyring
        limiter: RateLimiter = request.app.state.limiter
        caller = keyring.authenticate(request.headers.get("authorization"))
        limiter.check(caller)
        request.scope.setdefault("state", {})[CALLER] = caller
    return caller


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
BackendDep = Annotated[Backend, Depends(get_backend)]
SignerDep = Annotated[StreamSigner, Depends(get_signer)]
CallerDep = Annotated[str, Depends(require_api_key)]
MediaIdPath = Annotated[str, Path(pattern=MEDIA_ID_PATTERN.pattern, description="Media id.")]
