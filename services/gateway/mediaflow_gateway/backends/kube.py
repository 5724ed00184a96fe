"""A small async client for MediaJob objects: httpx against the Kubernetes API.

Credentials, in order: explicit ``kube_api_url`` (+ the service-account token if
mounted), the in-cluster service account, then a kubeconfig (token, client
certificate or none; CA data or file; ``insecure-skip-tls-verify``).
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from mediaflow.crd import API_VERSION, GROUP, KIND, PLURAL, VERSION
from mediaflow.errors import EngineUnavailableError, NotFoundError
from mediaflow.kubeauth import SERVICE_ACCOUNT_DIR, TokenFileAuth
from mediaflow_gateway.api.errors import ApiError
from mediaflow_gateway.settings import GatewaySettings

class KubeClient:
    def __init__(self, base_url: str, *, namespace: str, token: str | None = None,
                 auth: httpx.Auth | None = None,
                 verify: ssl.SSLContext | bool = True, cert: tuple[str, str] | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.namespace = namespace
        self.base_url = base_url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=headers, auth=auth, verify=verify,
                                      cert=cert, timeout=httpx.Timeout(10.0))

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> KubeClient:
        # A service-account token is re-read as the kubelet rotates it (bound tokens expire).
        token_file = SERVICE_ACCOUNT_DIR / "token"
        auth = TokenFileAuth(token_file) if token_file.is_file() else None
        if settings.kube_api_url:
            return cls(settings.kube_api_url, namespace=settings.namespace, auth=auth)
        if os.environ.get("KUBERNETES_SERVICE_HOST") and auth is not None:
            host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            return cls(f"https://{host}:{port}", namespace=settings.namespace, auth=auth,
                       verify=ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt")))
        return cls.from_kubeconfig(settings.kubeconfig, namespace=settings.namespace)

    @classmethod
    def from_kubeconfig(cls, path: Path | None, *, namespace: str) -> KubeClient:
        path = path or Path(os.environ.get("KUBECONFIG", "~/.kube/config")).expanduser()
        config = yaml.safe_load(path.read_text())
        current = config.get("current-context")
        context = next(c["context"] for c in config["contexts"] if c["name"] == current)
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next((u["user"] for u in config.get("users", []) if u["name"] == context.get("user")), {})
        verify: ssl.SSLContext | bool = not cluster.get("insecure-skip-tls-verify", False)
        if verify and (cluster.get("certificate-authority-data") or cluster.get("certificate-authority")):
            ca = cluster.get("certificate-authority")
            data = cluster.get("certificate-authority-data")
            verify = ssl.create_default_context(
                cafile=ca, cadata=base64.b64decode(data).decode() if data else None)
        cert = None
        if user.get("client-certificate-data"):
            cert = (_temp_file(user["client-certificate-data"]), _temp_file(user["client-key-data"]))
        return cls(cluster["server"], namespace=context.get("namespace", namespace),
                   token=user.get("token"), verify=verify, cert=cert)

    def _path(self, name: str | None = None) -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path

    async def _request(self, method: str, path: str, **kwargs) -> dict[str, Any]:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EngineUnavailableError(f"Kubernetes API unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code == 404:
            raise NotFoundError(f"no such {KIND}: {path.rsplit('/', 1)[-1]}")
        if response.status_code == 409:
            raise ApiError(409, f"{KIND} already exists: {path.rsplit('/', 1)[-1]}")
        if response.status_code >= 400:
            raise EngineUnavailableError(f"Kubernetes API answered {response.status_code}: {response.text[:300]}")
        return response.json()

    async def create(self, name: str, spec: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
        body = {"apiVersion": API_VERSION, "kind": KIND,
                "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
                "spec": spec}
        return await self._request("POST", self._path(), json=body)

    async def get(self, name: str) -> dict[str, Any]:
        return await self._request("GET", self._path(name))

    async def list(self, label_selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        return (await self._request("GET", self._path(), params=params)).get("items", [])

    async def delete(self, name: str) -> None:
        await self._request("DELETE", self._path(name))

    async def ping(self) -> None:
        await self._request("GET", f"/apis/{GROUP}/{VERSION}")

    async def close(self) -> None:
        await self.http.aclose()


def _temp_file(b64: str) -> str:
    handle = tempfile.NamedTemporaryFile("wb", delete=False, prefix="kube-", suffix=".pem")
    with handle:
        handle.write(base64.b64decode(b64))
    return handle.name
