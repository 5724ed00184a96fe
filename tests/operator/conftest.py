"""The operator under test: kopf's KopfRunner against KMock, the serving apps on free ports.

KMock (an in-memory Kubernetes API) stands in for the cluster; the transcription and
embeddings services are the serving package's own FastAPI apps, with the session's
real models, under uvicorn. ``FakeKubelet`` runs a worker Job's containers as local
processes (the real ``mediaflow stage`` commands) and then reports the Job complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import kmock as km
import pytest
import uvicorn
import yaml

from mediaflow.crd import API_VERSION, GROUP, PLURAL, VERSION
from tests.conftest import REPO, free_port

OPERATOR_MAIN = REPO / "operator" / "mediaflow_operator" / "main.py"
NAMESPACE = "media"
MEDIAJOBS = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"
JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"


class UvicornThread:
    """An ASGI app served on a free port in a thread; stopped by the fixture."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 120  # the app loads its model at startup: slow on a busy CPU
        while not self.server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Flaky:
    """ASGI wrapper that counts POSTs and can refuse the next ones (an overloaded or strict Ray Serve),
    or hold the next ones for a while (a slow replica) before serving them."""

    def __init__(self, app):
        self.app, self.calls, self.refused = app, 0, 0
        self._left, self._status = 0, 503
        self._delays: list[float] = []
        # (monotonic time the delayed request arrived, time its response was sent), in order.
        self.delayed: list[tuple[float, float | None]] = []

    def fail_next(self, count: int, status: int = 503) -> None:
        self._left, self._status = count, status

    def delay_next(self, seconds: float, count: int = 1) -> None:
        """Hold each of the next ``count`` POSTs for ``seconds`` before serving it normally."""
        self._delays.extend([seconds] * count)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and self._delays:
            seconds = self._delays.pop(0)
            slot = len(self.delayed)
            self.delayed.append((time.monotonic(), None))
            await asyncio.sleep(seconds)
            try:
                return await self._serve(scope, receive, send)
            finally:
                self.delayed[slot] = (self.delayed[slot][0], time.monotonic())
        await self._serve(scope, receive, send)

    async def _serve(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            self.calls += 1
            if self._left > 0:
                self._left -= 1
                self.refused += 1
                message = "no replica available" if self._status >= 500 else "audio could not be decoded"
                body = json.dumps({"error": {"message": message}}).encode()
                await send({"type": "http.response.start", "status": self._status,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@pytest.fixture(scope="session")
def embeddings_service(engines_cache):
    from mediaflow_serving.apps.embeddings_api import create_app

    with UvicornThread(create_app(lambda: engines_cache.embedder)) as server:
        yield server


@pytest.fixture
def transcription_service(engines_cache, tmp_path):
    """Per test, so a test can make it refuse its first requests."""
    from mediaflow_serving.apps.transcription_api import create_app

    app = Flaky(create_app(lambda: engines_cache.transcriber))
    with UvicornThread(app) as server:
        server.app = app
        yield server


def route_kmock_requests_in_constant_time() -> None:
    """Let KMock route a request without rescanning its whole request log.

    KMock decides whether a reaction serves the request just logged with
    ``request in view``, which re-filters every request seen so far: O(n) per request,
    O(n²) overall; fine for a test, minutes for bench/operator.py's ~10k requests.
    For the chains the emulator's reactions use (criteria filters and priority hints
    over the root), membership of the newest request is the conjunction of the
    filters' criteria; any other view keeps KMock's own check.
    """
    from kmock._internal import dsl, rendering

    original = dsl.View.__contains__

    def contains(self, item):
        if isinstance(item, rendering.Request):
            view = self
            while True:
                if isinstance(view, dsl.Root):
                    return True
                if isinstance(view, dsl.Filter):
                    if not view.criteria(item):
                        return False
                elif not isinstance(view, dsl.Priority):
                    break
                view = view._source
        return original(self, item)

    dsl.View.__contains__ = contains


def assign_generated_name(meta: dict) -> None:
    """Name an object created with only ``metadata.generateName`` as an API server does: the
    prefix and five random characters. KMock keys objects by name and has no generateName, so
    every Event kopf posts (``generateName: kopf-event-``) after the first was a 409, which kopf
    logs as a failed post with KMock's traceback; a real API server stores them all."""
    if not meta.get("name") and meta.get("generateName"):
        alphabet = string.ascii_lowercase + string.digits
        meta["name"] = meta["generateName"] + "".join(random.choices(alphabet, k=5))


def serve_generate_name(patch: Callable = setattr) -> None:
    """KMock names created objects by ``assign_generated_name`` (``patch``: a monkeypatch's
    ``setattr`` undoes it after a test; the plain one is for the benchmark's own process)."""
    from kmock._internal import enums
    from kmock._internal.k8s import KubernetesEmulator

    original = KubernetesEmulator._handle

    async def handle(self, request):
        if request.resource is not None and request.action == enums.action.CREATE and isinstance(request.data, dict):
            assign_generated_name(request.data.setdefault("metadata", {}))
        return await original(self, request)

    patch(KubernetesEmulator, "_handle", handle)


@pytest.fixture(autouse=True)
def api_server_generates_names(monkeypatch):
    serve_generate_name(monkeypatch.setattr)


def register_resources(kmock) -> None:
    # kopf discovers these before it watches anything (see RECIPES.md).
    kmock.resources["v1/namespaces"] = km.ResourceInfo(kind="Namespace", namespaced=False, singular="namespace",
                                                       verbs={"list", "watch", "get"})
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = km.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, singular="customresourcedefinition",
        verbs={"list", "watch", "get"})
    kmock.resources[f"{GROUP}/{VERSION}/{PLURAL}"] = km.ResourceInfo(
        kind="MediaJob", namespaced=True, singular="mediajob", shortnames={"mj"}, subresources={"status"},
        verbs={"create", "get", "list", "watch", "patch", "delete"})
    kmock.resources["batch/v1/jobs"] = km.ResourceInfo(
        kind="Job", namespaced=True, singular="job", subresources={"status"},
        verbs={"create", "get", "list", "watch", "patch", "delete"})
    kmock.resources["v1/events"] = km.ResourceInfo(kind="Event", namespaced=True, singular="event",
                                                   verbs={"create", "list", "watch"})


class Cluster:
    """The test's view of the fake cluster: the API client and the request log."""

    def __init__(self, kmock, data_dir: Path):
        self.kmock = kmock
        self.api = httpx.AsyncClient(base_url=str(kmock.url), timeout=10)
        self.data_dir = data_dir

    def requests(self, method: str, path_part: str) -> list:
        return [r for r in self.kmock._requests
                if str(r.method).upper().endswith(method) and path_part in str(r.url)]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 60, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.1)
        raise TimeoutError(f"timed out waiting for {what or predicate}")

    async def create_mediajob(self, name: str, spec: dict) -> dict:
        body = {"apiVersion": API_VERSION, "kind": "MediaJob",
                "metadata": {"name": name, "namespace": NAMESPACE, "uid": f"uid-{name}", "generation": 1,
                             # KMock keeps no resourceVersion; kopf's finalizer patch tests for one.
                             "resourceVersion": "1",
                             "creationTimestamp": "2026-01-01T00:00:00Z"},
                "spec": spec}
        response = await self.api.post(MEDIAJOBS, json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    async def mediajob(self, name: str) -> dict | None:
        response = await self.api.get(f"{MEDIAJOBS}/{name}")
        return response.json() if response.status_code == 200 else None

    async def job(self, name: str) -> dict | None:
        response = await self.api.get(f"{JOBS}/{name}")
        return response.json() if response.status_code == 200 else None

    async def wait_phase(self, name: str, phases: set[str], timeout: float = 120) -> dict:
        async def reached():
            obj = await self.mediajob(name)
            return obj if obj and (obj.get("status") or {}).get("phase") in phases else None
        return await self.wait_for(reached, timeout, f"{name} in {phases}")

    async def finish_job(self, job: dict, *, succeeded: bool, reason: str = "BackoffLimitExceeded",
                         message: str = "Job has reached the specified backoff limit") -> None:
        condition = ({"type": "Complete", "status": "True"} if succeeded
                     else {"type": "Failed", "status": "True", "reason": reason, "message": message})
        status = {"conditions": [condition], "succeeded" if succeeded else "failed": 1}
        response = await self.api.patch(f"{JOBS}/{job['metadata']['name']}/status",
                                        content=json.dumps({"status": status}),
                                        headers={"Content-Type": "application/merge-patch+json"})
        assert response.status_code == 200, response.text


class FakeKubelet:
    """Runs a Job's containers (init containers first) as local processes, like a node would."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    async def run(self, job: dict) -> None:
        pod = job["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            command = [str(Path(sys.executable).parent / container["command"][0]), *container["command"][1:]]
            proc = await asyncio.to_thread(subprocess.run, command, env=self.env, capture_output=True, text=True,
                                           timeout=300)
            assert proc.returncode == 0, f"{container['name']}: {proc.stderr[-2000:]}"


@pytest.fixture
async def cluster(kmock, tmp_path):
    register_resources(kmock)
    yield Cluster(kmock, tmp_path / "data")


@pytest.fixture
def operator_env(monkeypatch, tmp_path, cluster, embeddings_service, transcription_service, llm_url):
    """Environment of the operator (and of the worker processes the FakeKubelet starts)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(cluster.kmock.url)}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "test", "namespace": NAMESPACE}}],
        "users": [{"name": "test", "user": {"token": "test-token"}}],
    }))
    env = {
        "KUBECONFIG": str(kubeconfig),
        "MEDIAFLOW_DATA_DIR": str(cluster.data_dir),
        "MEDIAFLOW_TRANSCRIPTION_URL": transcription_service.url,
        "MEDIAFLOW_EMBEDDING_URL": embeddings_service.url,
        "MEDIAFLOW_REMOTE_RETRIES": "1",
        "MEDIAFLOW_LLM_URL": llm_url,
        "MEDIAFLOW_OPERATOR_STANDALONE": "true",
        "MEDIAFLOW_OPERATOR_METRICS_PORT": str(free_port()),
        "MEDIAFLOW_OPERATOR_JOB_RECHECK_SECONDS": "2",
        "MEDIAFLOW_OPERATOR_RETRY_DELAY_SECONDS": "0.2",
        "MEDIAFLOW_OPERATOR_WORKER_IMAGE": "registry.local/mediaflow/worker:test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


class OperatorProcess:
    """The real operator (kopf run main.py) in KopfRunner, entered off the test's event loop."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.runner = None

    async def start(self) -> None:
        from kopf.testing import KopfRunner

        watches_before = len(self.cluster.requests("GET", "watch=true"))
        self.runner = KopfRunner(["run", "-A", "--standalone", str(OPERATOR_MAIN)], timeout=60)
        await asyncio.to_thread(self.runner.__enter__)
        # A MediaJob created before kopf watches would be replayed anyway; waiting keeps timing simple.
        await self.cluster.wait_for(
            lambda: len([r for r in self.cluster.requests("GET", f"/{PLURAL}") if "watch" in str(r.url)])
            > 0 and len(self.cluster.requests("GET", "watch=true")) > watches_before,
            30, "the operator's watch")

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await asyncio.to_thread(runner.__exit__, None, None, None)


@pytest.fixture
async def operator_process(cluster, operator_env):
    """The operator, not yet started: the test sets its environment, then starts (and restarts) it."""
    process = OperatorProcess(cluster)
    yield process
    await process.stop()


@pytest.fixture
async def operator(operator_process):
    await operator_process.start()
    return operator_process


@pytest.fixture
def kubelet(operator_env):
    return FakeKubelet({**os.environ, **operator_env})
