"""A small async Kubernetes client (httpx on aiohttp) built from kopf's own login credentials."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from contextlib import asynccontextmanager
from typing import Any

import httpx
import kopf

from mediaflow.crd import GROUP, PLURAL, VERSION
from mediaflow.kubeauth import TokenFileAuth
from mediaflow_operator.transport import AiohttpTransport

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
MAX_IN_FLIGHT = 8  # requests at once, and connections kept open to the API server


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
    def __init__(self, client: httpx.AsyncClient, max_in_flight: int = MAX_IN_FLIGHT):
        self.client = client
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
        headers = ({"Authorization": f"{info.scheme or 'Bearer'} {info.token}"}
                   if info.token and token_file is None else {})
        client = httpx.AsyncClient(
            base_url=info.server, headers=headers, auth=token_file,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=AiohttpTransport(verify=verify, max_connections=MAX_IN_FLIGHT),
        )
        return cls(client)

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, method: str, url: str, *, urgent: bool = False, **kwargs) -> httpx.Response:
        async with self._lanes.slot(urgent=urgent):
            return await self.client.request(method, url, **kwargs)

    # -- Jobs -----------------------------------------------------------------------
    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()

    async def create_job(self, manifest: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """``(job, created)``; an existing Job of that name (made before a restart) is adopted."""
        ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        response = await self._call("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", json=manifest, urgent=True)
        if response.status_code == 409:
            return await self.get_job(ns, name) or manifest, False
        response.raise_for_status()
        return response.json(), True

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods; Foreground: the Job stays visible until its pods are gone."""
        response = await self._call("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
                                    params={"propagationPolicy": "Foreground"})
        if response.status_code != 404:
            response.raise_for_status()

    # -- MediaJobs --------------------------------------------------------------------
    def _mediajob_url(self, namespace: str, name: str) -> str:
        return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        response = await self._call(
            "PATCH", self._mediajob_url(namespace, name) + "/status",
            content=json.dumps({"status": status}), headers=MERGE_PATCH,
        )
        if response.status_code != 404:  # gone meanwhile: nothing to report on
            response.raise_for_status()

    async def delete_mediajob(self, namespace: str, name: str) -> None:
        response = await self._call("DELETE", self._mediajob_url(namespace, name))
        if response.status_code != 404:
            response.raise_for_status()
