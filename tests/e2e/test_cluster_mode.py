"""The user's journey in cluster mode, over REST, with every piece real but the API server.

The gateway (``MEDIAFLOW_GATEWAY_BACKEND=cluster``) and the operator (kopf, KopfRunner)
work against the same KMock; transcription and embeddings are the serving apps on local
ports, the summary and answers come from a real vLLM server; the test runs the worker
Job as a kubelet would. Upload → a MediaJob exists → the worker Job runs → GET shows
progress while stages run → transcript, summary, stream, search and ask → DELETE → the
finalizer leaves no point and no artifact.

No Qdrant server can run on this machine: the gateway is given the operator's embedded
Qdrant client (one process, one client per path), standing in for the chart's Qdrant
Service. The artifact store is one directory for both, as the media volume is in a cluster.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from mediaflow.config import Settings
from mediaflow.pipeline import Pipeline
from mediaflow.status import mediajob_media_id
from mediaflow_gateway.backends import build_backend
from mediaflow_gateway.main import create_app
from mediaflow_operator import runtime
from mediaflow_operator.jobs import job_name
from tests.conftest import wer
from tests.gateway.conftest import AUTH, gateway_settings, multipart
from tests.operator.conftest import MEDIAJOBS, NAMESPACE

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.llm, pytest.mark.slow]

LIGHTHOUSE_QUERY = "who cleans the glass of the lighthouse every evening"
LIGHTHOUSE_PASSAGE = 3
MANGROVE_QUESTION = "What do the school children plant along the lagoon?"


@pytest.fixture
async def gateway(cluster, operator, operator_env):
    """The gateway's cluster backend over its own Pipeline (remote engines, shared store)."""
    settings = gateway_settings(backend="cluster", namespace=NAMESPACE, kube_api_url=str(cluster.kmock.url),
                                job_poll_seconds=0.2, delete_wait_seconds=60)
    core = Settings(transcriber="remote", embedder="remote")  # MEDIAFLOW_* from operator_env
    shared_qdrant = runtime.current().pipeline.index()
    backend = build_backend(settings, core)
    backend.pipeline = Pipeline(core, index=shared_qdrant)  # not closed by the gateway
    backend.owns_pipeline = False
    app = create_app(settings, backend)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                     timeout=120) as client:
            client.app = app
            yield client


async def follow_until_done(client: httpx.AsyncClient, job_id: str, timeout: float = 300) -> list[dict]:
    """GET the job every 0.2 s, as a UI would; every distinct view in order."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/jobs/{job_id}", headers=AUTH)
        assert response.status_code == 200, response.text  # a running job reads back (no 500)
        job = response.json()
        view = {k: job[k] for k in ("phase", "progress", "stage")}
        if not seen or seen[-1] != view:
            seen.append(view)
        if job["phase"] in ("Succeeded", "Failed"):
            return seen
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not finish: {seen}")


async def test_cluster_mode_end_to_end(cluster, gateway, kubelet, sample_video, sample_bytes):
    client = gateway
    created = await client.post("/v1/media", headers=AUTH, **multipart("island.mp4", sample_bytes, title="Island"))
    assert created.status_code == 202, created.text
    job_id, media_id = created.json()["job_id"], created.json()["media_id"]
    assert media_id == mediajob_media_id(NAMESPACE, job_id)

    # kubectl get mediajob: the gateway's MediaJob, labelled with the media id
    obj = await cluster.mediajob(job_id)
    assert obj is not None and obj["spec"]["source"]["title"] == "Island"
    assert obj["metadata"]["labels"]["mediaflow.dev/media-id"] == media_id

    # the operator's worker Job, run as a kubelet would; the API follows the job meanwhile
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, job_id)), 30, "the worker Job")
    assert job["metadata"]["labels"]["mediaflow.dev/media-id"] == media_id
    follower = asyncio.create_task(follow_until_done(client, job_id))
    await kubelet.run(job)
    await cluster.finish_job(job, succeeded=True)
    seen = await follower

    assert seen[-1] == {"phase": "Succeeded", "progress": 1.0, "stage": None}, seen
    running = [v for v in seen if v["phase"] == "Running"]
    assert any(0 < v["progress"] < 1 and v["stage"] in ("transcribe", "chunk", "embed", "index", "summarize")
               for v in running), seen  # progress while a named stage runs
    progress = [v["progress"] for v in seen]
    assert progress == sorted(progress), seen  # never goes back

    done = (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).json()
    assert {c["type"]: c["status"] for c in done["conditions"]} == {
        s: "True" for s in ("probe", "extract_audio", "transcribe", "chunk", "embed", "index", "summarize")}
    assert done["outputs"]["transcript_json"] == f"/v1/media/{media_id}/transcript?format=json"
    status = (await cluster.mediajob(job_id))["status"]
    assert status["outputs"]["mediaId"] == media_id and status["observedGeneration"] == 1

    # transcript against the script, summary, stream
    transcript = (await client.get(f"/v1/media/{media_id}/transcript", headers=AUTH)).json()
    text = " ".join(s["text"] for s in transcript["segments"])
    assert wer(sample_video.text, text) < 0.15, text
    summary = await client.get(f"/v1/media/{media_id}/summary", headers=AUTH)
    assert summary.status_code == 200 and len(summary.json()["text"].split()) >= 5
    media = (await client.get(f"/v1/media/{media_id}", headers=AUTH)).json()
    assert media["duration"] == pytest.approx(sample_video.duration, abs=0.5)
    streamed = await client.get(media["stream_url"])
    assert streamed.status_code == 200 and streamed.content == sample_bytes

    # search and ask, over the points the operator indexed
    spoken = sample_video.passages[LIGHTHOUSE_PASSAGE]
    hits = (await client.post("/v1/search", headers=AUTH, json={"query": LIGHTHOUSE_QUERY, "top_k": 3})).json()["hits"]
    assert hits and hits[0]["media_id"] == media_id, hits
    assert spoken.start - 1 <= hits[0]["seek"] <= spoken.end, (hits[0], spoken)
    answer = (await client.post("/v1/ask", headers=AUTH, json={"question": MANGROVE_QUESTION})).json()
    assert answer["answer"].strip() and answer["citations"][0]["media_id"] == media_id

    # DELETE: the finalizer removes the Job, the points and the artifacts; then the MediaJob goes
    store_dir = os.path.join(client.app.state.backend.store.root, "media", media_id)
    index = runtime.current().pipeline.index()
    assert os.path.isdir(store_dir) and index.count(media_id) == status["outputs"]["points"] > 0
    deleted = await client.delete(f"/v1/media/{media_id}", headers=AUTH)
    assert deleted.status_code == 204, deleted.text
    assert await cluster.mediajob(job_id) is None
    assert await cluster.job(job_name(NAMESPACE, job_id)) is None
    assert not os.path.exists(store_dir)
    assert index.count(media_id) == 0
    assert (await client.get(f"/v1/jobs/{job_id}", headers=AUTH)).status_code == 404
    assert (await client.get(f"/v1/media/{media_id}", headers=AUTH)).status_code == 404
    listed = (await cluster.api.get(MEDIAJOBS)).json()["items"]
    assert all(o["metadata"]["name"] != job_id for o in listed)
