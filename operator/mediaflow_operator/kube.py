"""A small async Kubernetes client on aiohttp (kopf's own HTTP client), built from kopf's
login credentials.

It sends the few requests the daemons make (Jobs, MediaJob status) straight through one
aiohttp session. httpx on top of aiohttp doubled each request's CPU (request building, URL
merging, cookie extraction, a log line per call): a tenth of the operator's event-loop time
in a burst of MediaJobs, profiled with py-spy. httpx on its own pool (httpcore) cost several
times more (a ``poll()`` of every pooled connection each time it hands one out).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import socket
import ssl
from collections import deque
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import kopf

from mediaflow.crd import GROUP, PLURAL, VERSION
from mediaflow.kubeauth import TokenFileAuth

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
JSON = {"Content-Type": "application/json"}
MAX_IN_FLIGHT = 8  # requests at once, and connections kept open to the API server

log = logging.getLogger(__name__)


def default_user_agent() -> str:
    """``mediaflow-operator/<version> (<replica>)``: the replica is kopf's peer identity when set
    (``POD_ID``), else the host name, which in a pod is the pod's name."""
    try:
        version = importlib.metadata.version("mediaflow-operator")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"mediaflow-operator/{version} ({os.environ.get('POD_ID') or socket.gethostname()})"


class KubeApiError(Exception):
    """The API server answered an unexpected status (the body is kept for the message)."""

    def __init__(self, method: str, url: str, status: int, body: bytes):
        self.method, self.url, self.status, self.body = method, url, status, body
        super().__init__(f"{method} {url}: HTTP {status}: {body[:300].decode(errors='replace')}")


class RequestLanes:
    """At most ``limit`` requests in flight; waiting urgent requests go before routine ones.

    In a burst of MediaJobs the first worker Job of each is what a user waits for, while
    the status patches of the jobs already running can wait: FIFO within each lane.
    """

    def __init__(self, limit: int):
        self._free = limit
        self._urgent: deque[asyncio.Future] = deque()
        self._routine: deque[asyncio.Future] = deque()

    @asynccontextmanager
    async def slot(self, *, urgent: bool):
        await self._acquire(self._urgent if urgent else self._routine)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, lane: deque[asyncio.Future]) -> None:
        if self._free > 0 and not self._urgent and not self._routine:
            self._free -= 1
            return
        turn = asyncio.get_running_loop().create_future()
        lane.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed the slot just as it was cancelled: pass it on
            else:
                lane.remove(turn)
            raise

    def _release(self) -> None:
        for lane in (self._urgent, self._routine):
            while lane:
                turn = lane.popleft()
                if not turn.done():
                    turn.set_result(None)
                    return
        self._free += 1


class KubeApi:
    """``server``: the API server's base URL; ``authorization``: the login's header value,
    unless ``token_file`` (in-cluster) gives the token, re-read as the kubelet rotates it.
    ``user_agent`` names this replica in the API server's audit log (:func:`default_user_agent`)."""

    def __init__(self, server: str, *, authorization: str | None = None, token_file: TokenFileAuth | None = None,
                 verify: ssl.SSLContext | bool = True, timeout: float = 60, connect_timeout: float = 30,
                 max_in_flight: int = MAX_IN_FLIGHT, user_agent: str | None = None):
        self.server = server.rstrip("/")
        self._authorization = authorization
        self._user_agent = user_agent or default_user_agent()
        self._token_file = token_file
        self._ssl = verify
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=timeout)
        self._max_in_flight = max_in_flight
        self._session: aiohttp.ClientSession | None = None
        # Hundreds of daemons wait here in a burst, in order and cheaply, not in the HTTP pool.
        self._lanes = RequestLanes(max_in_flight)

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo, *, timeout: float, connect_timeout: float,
                        token_file: TokenFileAuth | None = None) -> KubeApi:
        """A client with kopf's credentials; ``token_file`` (in-cluster) replaces the token kopf
        read once at login, so a rotated service-account token is picked up."""
        verify: ssl.SSLContext | bool = True
        if info.insecure:
            verify = False
        elif info.ca_path or info.ca_data:
            ca = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
            verify = ssl.create_default_context(cafile=info.ca_path, cadata=ca)
            if info.certificate_path and info.private_key_path:
                verify.load_cert_chain(info.certificate_path, info.private_key_path)
        authorization = (f"{info.scheme or 'Bearer'} {info.token}"
                         if info.token and token_file is None else None)
        return cls(info.server, authorization=authorization, token_file=token_file, verify=verify,
                   timeout=timeout, connect_timeout=connect_timeout)

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a ClientSession belongs to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_in_flight, ssl=self._ssl),
                headers={"User-Agent": self._user_agent},
                # No cookie jar: the API server's cookies mean nothing here.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def _call(self, method: str, path: str, *, urgent: bool = False, body: Any = None,
                    headers: dict[str, str] = JSON, params: dict[str, str] | None = None) -> tuple[int, bytes]:
        """``(status, body)``; a 401 with a token file re-reads it and tries once more."""
        data = None if body is None else json.dumps(body).encode()
        async with self._lanes.slot(urgent=urgent):
            # Read once the request may go: in a burst it can wait seconds in its lane.
            sent = self._token_file.token() if self._token_file else None
            status, content = await self._send(method, path, data, headers, params, sent)
            if status == 401 and self._token_file is not None:
                fresh = self._token_file.token(force=True)
                if fresh != sent:  # rotated between the check and the request
                    status, content = await self._send(method, path, data, headers, params, fresh)
        log.debug("%s %s: %d", method, path, status)
        return status, content

    async def _send(self, method: str, path: str, data: bytes | None, headers: dict[str, str],
                    params: dict[str, str] | None, token: str | None) -> tuple[int, bytes]:
        authorization = f"Bearer {token}" if token is not None else self._authorization
        if authorization:
            headers = {**headers, "Authorization": authorization}
        async with self._client().request(method, self.server + path, data=data, headers=headers, params=params,
                                          allow_redirects=False, timeout=self._timeout) as response:
            return response.status, await response.read()

    @staticmethod
    def _check(method: str, path: str, status: int, content: bytes, *allowed: int) -> None:
        if status >= 400 and status not in allowed:
            raise KubeApiError(method, path, status, content)

    # -- Jobs -----------------------------------------------------------------------
    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        status, content = await self._call("GET", path)
        if status == 404:
            return None
        self._check("GET", path, status, content)
        return json.loads(content)

    async def create_job(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``(job, created)``; an existing Job of that name (made before a restart) is adopted."""
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        path = f"/apis/batch/v1/namespaces/{ns}/jobs"
        status, content = await self._call("POST", path, body=manifest, urgent=True)
        if status == 409:
            return await self.get_job(ns, name) or manifest, False
        self._check("POST", path, status, content)
        return json.loads(content), True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods; Foreground: the Job stays visible until its pods are gone."""
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
        status, content = await self._call("DELETE", path, params={"propagationPolicy": "Foreground"})
        self._check("DELETE", path, status, content, 404)

    # -- MediaJobs --------------------------------------------------------------------
    def _mediajob_path(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = self._mediajob_path(namespace, name) + "/status"
        code, content = await self._call("PATCH", path, body={"status": status}, headers=MERGE_PATCH)
        self._check("PATCH", path, code, content, 404)  # gone meanwhile: nothing to report on

    async def delete_mediajob(self, namespace: str, name: str) -> None:
        path = self._mediajob_path(namespace, name)
        status, content = await self._call("DELETE", path)
        self._check("DELETE", path, status, content, 404)
