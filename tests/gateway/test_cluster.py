"""Cluster backend against KMock (an in-memory Kubernetes API): POST /v1/media creates a
MediaJob with the spec the core model produces; the status the operator writes (built
with the core status model, as the operator builds it) reads back.

tests/e2e/test_cluster_mode.py runs the same backend against the real operator."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from mediaflow.pipeline import Pipeline
from mediaflow.spec import MediaJobSpec
from mediaflow.status import MediaJobStatus, mediajob_media_id
from mediaflow_operator.conditions import now, set_condition
from mediaflow_gateway.backends.cluster import ClusterBackend
from mediaflow_gateway.backends.kube import KubeClient
from mediaflow_gateway.main import create_app
from tests.conftest import engines_for, make_settings
from tests.gateway.conftest import AUTH, assert_error, assert_nothing_stored, gateway_settings, multipart

NAMESPACE = "media"
MEDIAJOBS = f"/apis/mediaflow.dev/v1alpha1/namespaces/{NAMESPACE}/mediajobs"


@pytest.fixture
async def cluster(kmock, tmp_path, engines_cache):
    kmock.resources["mediaflow.dev/v1alpha1/mediajobs"] = kmock.ResourceInfo(
        kind="MediaJob", namespaced=True, singular="mediajob", subresources={"status"},
        verbs={"create", "get", "list", "watch", "patch", "delete"})
    settings = gateway_settings(backend="cluster", namespace=NAMESPACE, job_poll_seconds=0.05)
    core = make_settings(tmp_path / "data", summary=False)
    backend = ClusterBackend(settings, Pipeline(core, engines=engines_for(core, engines_cache)),
                             KubeClient(str(kmock.url), namespace=NAMESPACE), owns_pipeline=True)
    app = create_app(settings, backend)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client, \
                httpx.AsyncClient(base_url=str(kmock.url)) as kube:
            client.app = app
            yield client, kube


async def operator_writes_status(kube: httpx.AsyncClient, name: str, status: MediaJobStatus) -> None:
    """What the operator does: a merge patch of the status subresource, from the core model."""
    body = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    response = await kube.patch(f"{MEDIAJOBS}/{name}/status", content=json.dumps({"status": body}),
                                headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text


async def test_upload_creates_a_mediajob_with_the_core_spec(cluster, sample_bytes):
    client, kube = cluster
    response = await client.post("/v1/media", headers=AUTH, **multipart("island.mp4", sample_bytes, title="Island"))
    assert response.status_code == 202, response.text
    media_id, job_id = response.json()["media_id"], response.json()["job_id"]
    # The MediaJob is named after the bytes; the operator stores its results under the id
    # it derives from namespace/name.
    assert job_id == f"m-{hashlib.sha256(sample_bytes).hexdigest()[:16]}"
    assert media_id == mediajob_media_id(NAMESPACE, job_id)
    obj = (await kube.get(f"{MEDIAJOBS}/{job_id}")).json()
    assert obj["apiVersion"] == "mediaflow.dev/v1alpha1" and obj["kind"] == "MediaJob"
    assert obj["metadata"]["labels"]["mediaflow.dev/media-id"] == media_id
    store = client.app.state.backend.store
    uri = client.app.state.backend.source_uri(media_id, "source.mp4")
    expected = MediaJobSpec.model_validate({"source": {"uri": uri, "title": "Island"}})
    assert obj["spec"] == expected.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert obj["spec"]["stages"]["chunking"]["overlapSeconds"] == 3.0  # camelCase on the wire
    with open(uri, "rb") as fh:  # the bytes are where the MediaJob says
        assert fh.read() == sample_bytes
    assert store.exists(media_id, "source.mp4")


async def test_url_with_options_becomes_the_mediajob_spec(cluster):
    client, kube = cluster
    body = {"url": "https://media.example.org/talk.mp4", "title": "Talk", "language": "de",
            "stages": {"chunking": {"seconds": 20, "overlapSeconds": 5}, "summary": {"enabled": False}}}
    response = await client.post("/v1/media", headers=AUTH, json=body)
    assert response.status_code == 202, response.text
    obj = (await kube.get(f"{MEDIAJOBS}/{response.json()['job_id']}")).json()
    assert obj["spec"]["source"] == {"uri": body["url"], "title": "Talk"}
    assert obj["spec"]["language"] == "de"
    assert obj["spec"]["stages"]["chunking"] == {"seconds": 20.0, "overlapSeconds": 5.0, "pauseSeconds": 1.5}
    assert obj["spec"]["stages"]["summary"]["enabled"] is False


async def test_status_reads_back_and_streams_to_succeeded(cluster):
    client, kube = cluster
    response = await client.post("/v1/media", headers=AUTH, json={"url": "https://media.example.org/a.mp3"})
    job_id = response.json()["job_id"]
    job = (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
    assert job["phase"] == "Pending" and job["progress"] == 0.0

    conditions = set_condition([], "Probe", "True", "JobComplete")
    conditions = set_condition(conditions, "ExtractAudio", "True", "JobComplete")
    conditions = set_condition(conditions, "Transcribe", "Unknown", "Running")
    running = MediaJobStatus(phase="Running", progress=42, conditions=conditions, started_at=now())
    await operator_writes_status(kube, job_id, running)
    job = (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
    assert (job["phase"], job["progress"], job["stage"]) == ("Running", 0.42, "transcribe")
    assert [(c["type"], c["status"]) for c in job["conditions"]] == [
        ("probe", "True"), ("extract_audio", "True"), ("transcribe", "Unknown")]
    assert job["conditions"][0]["last_transition_time"] == conditions[0].last_transition_time.isoformat().replace(
        "+00:00", "Z")

    await operator_writes_status(kube, job_id, running.model_copy(update={"phase": "Succeeded", "progress": 100}))
    events = (await client.get(f"/v1/jobs/{job_id}/events", headers=AUTH)).text
    phases = [json.loads(line[6:])["phase"] for line in events.splitlines() if line.startswith("data: ")]
    assert phases[-1] == "Succeeded"
    job = (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
    assert job["outputs"]["transcript_json"] == f"/v1/media/{job['media_id']}/transcript?format=json"
    listed = (await client.get("/v1/jobs", headers=AUTH)).json()["items"]
    assert job_id in [j["id"] for j in listed]


async def test_unknown_job_is_404_and_delete_removes_the_mediajob(cluster, sample_bytes):
    client, kube = cluster
    assert (await client.get("/v1/jobs/0123456789abcdef", headers=AUTH)).status_code == 404
    created = (await client.post("/v1/media", headers=AUTH, **multipart("a.mp4", sample_bytes))).json()
    media_id = created["media_id"]
    await operator_writes_status(kube, created["job_id"], MediaJobStatus(phase="Failed", reason="StageFailed"))
    # No operator here: no finalizer, so KMock deletes the MediaJob at once.
    assert (await client.delete(f"/v1/media/{media_id}", headers=AUTH)).status_code == 204
    assert (await kube.get(f"{MEDIAJOBS}/{created['job_id']}")).status_code == 404
    assert not client.app.state.backend.store.exists(media_id, "source.mp4")


async def test_readiness_reports_the_kubernetes_api(cluster):
    client, _ = cluster
    body = (await client.get("/readyz")).json()
    assert body["backend"] == "cluster" and body["checks"]["kubernetes"] == "ok"


async def test_only_its_own_mediajobs_are_seen_and_running_ones_are_not_deleted(cluster, sample_bytes):
    client, kube = cluster
    foreign = {"apiVersion": "mediaflow.dev/v1alpha1", "kind": "MediaJob",
               "metadata": {"name": "someone-elses", "namespace": NAMESPACE},
               "spec": {"source": {"uri": "https://media.example.org/x.mp4"}}}
    assert (await kube.post(MEDIAJOBS, json=foreign)).status_code in (200, 201)
    assert (await client.get("/v1/jobs/someone-elses", headers=AUTH)).status_code == 404
    assert "someone-elses" not in [j["id"] for j in (await client.get("/v1/jobs", headers=AUTH)).json()["items"]]
    assert (await client.delete(f"/v1/media/{mediajob_media_id(NAMESPACE, 'someone-elses')}",
                                headers=AUTH)).status_code == 404
    assert (await kube.get(f"{MEDIAJOBS}/someone-elses")).status_code == 200

    created = (await client.post("/v1/media", headers=AUTH, **multipart("a.mp4", sample_bytes))).json()
    await operator_writes_status(kube, created["job_id"], MediaJobStatus(phase="Running", progress=10))
    refused = await client.delete(f"/v1/media/{created['media_id']}", headers=AUTH)
    assert refused.status_code == 409 and "still running" in refused.json()["error"]["message"]
    assert (await kube.get(f"{MEDIAJOBS}/{created['job_id']}")).status_code == 200
    assert client.app.state.backend.store.exists(created["media_id"], "source.mp4")


def content_job(payload: bytes) -> str:
    return f"m-{hashlib.sha256(payload).hexdigest()[:16]}"


async def managed_mediajobs(kube: httpx.AsyncClient) -> list[str]:
    items = (await kube.get(MEDIAJOBS)).json()["items"]
    return [o["metadata"]["name"] for o in items
            if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "mediaflow-gateway"]


async def test_the_same_bytes_are_the_same_mediajob(cluster, sample_bytes):
    client, kube = cluster
    first = await client.post("/v1/media", headers=AUTH, **multipart("a.mp4", sample_bytes, title="First"))
    again = await client.post("/v1/media", headers=AUTH, **multipart("b.mp4", sample_bytes, title="Second"))
    assert (first.status_code, again.status_code) == (202, 200), (first.text, again.text)
    assert again.json() == {**first.json(), "existing": True}
    assert first.json()["job_id"] == content_job(sample_bytes)
    assert await managed_mediajobs(kube) == [content_job(sample_bytes)]
    obj = (await kube.get(f"{MEDIAJOBS}/{content_job(sample_bytes)}")).json()
    assert obj["spec"]["source"]["title"] == "First"  # the second upload changed nothing
    assert_nothing_stored(client.app, media=[first.json()["media_id"]])


async def test_a_mediajob_created_meanwhile_is_the_job(cluster, sample_bytes, monkeypatch):
    # Another gateway replica created the MediaJob between the check and the create: 409 → that one.
    client, kube = cluster
    name = content_job(sample_bytes)
    backend = client.app.state.backend
    ours = {"apiVersion": "mediaflow.dev/v1alpha1", "kind": "MediaJob",
            "metadata": {"name": name, "namespace": NAMESPACE,
                         "labels": {"app.kubernetes.io/managed-by": "mediaflow-gateway",
                                    "mediaflow.dev/media-id": backend.media_id_for_job(name)}},
            "spec": {"source": {"uri": "https://media.example.org/x.mp4", "title": "Other replica"}}}
    assert (await kube.post(MEDIAJOBS, json=ours)).status_code in (200, 201)

    async def not_seen_yet(job_id):
        return None

    monkeypatch.setattr(backend, "existing_job", not_seen_yet)
    response = await client.post("/v1/media", headers=AUTH, **multipart("a.mp4", sample_bytes))
    assert response.status_code == 202, response.text
    assert response.json()["job_id"] == name and response.json()["media_id"] == backend.media_id_for_job(name)
    assert await managed_mediajobs(kube) == [name]
    assert (await kube.get(f"{MEDIAJOBS}/{name}")).json()["spec"]["source"]["title"] == "Other replica"


async def test_a_foreign_mediajob_of_that_name_is_409_and_leaves_nothing(cluster, sample_bytes):
    client, kube = cluster
    name = content_job(sample_bytes)
    foreign = {"apiVersion": "mediaflow.dev/v1alpha1", "kind": "MediaJob",
               "metadata": {"name": name, "namespace": NAMESPACE},
               "spec": {"source": {"uri": "https://media.example.org/x.mp4"}}}
    assert (await kube.post(MEDIAJOBS, json=foreign)).status_code in (200, 201)
    response = await client.post("/v1/media", headers=AUTH, **multipart("a.mp4", sample_bytes))
    assert_error(response, 409, "conflict", f"a MediaJob named {name} exists that this gateway did not create")
    assert_nothing_stored(client.app)
    assert (await kube.get(f"{MEDIAJOBS}/{name}")).json()["spec"] == foreign["spec"]


async def test_metrics_never_call_the_cluster(cluster, monkeypatch):
    client, _ = cluster
    assert (await client.post("/v1/media", headers=AUTH, json={"url": "https://media.example.org/a.mp3"})
            ).status_code == 202
    calls = []
    kube = client.app.state.backend.kube
    original = kube.http.request

    async def recording(method, url, **kwargs):
        calls.append((method, url))
        return await original(method, url, **kwargs)

    monkeypatch.setattr(kube.http, "request", recording)
    for _ in range(3):
        response = await client.get("/metrics")
        assert response.status_code == 200
    assert calls == []
    assert "mediaflow_gateway_jobs{" not in response.text  # the operator exports MediaJobs by phase
    assert 'mediaflow_gateway_requests_total{method="POST",route="/v1/media",status="202"} 1.0' in response.text
