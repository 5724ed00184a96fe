"""Cluster backend against KMock (an in-memory Kubernetes API): POST /v1/media creates a
MediaJob with the spec the core model produces; the status the operator writes (built
with the core status model, as the operator builds it) reads back.

tests/e2e/test_cluster_mode.py runs the same backend against the real operator."""

from __future__ import annotations

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
from tests.gateway.conftest import AUTH, gateway_settings, multipart

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
    # The operator stores a MediaJob's results under the id it derives from namespace/name.
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
    assert obj["spec"]["stages"]["chunking"] == {"seconds": 20.0, "overlapSeconds": 5.0}
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
