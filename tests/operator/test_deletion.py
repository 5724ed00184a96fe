"""Deleting a MediaJob mid-way: the finalizer must leave nothing behind, even for work that
was still running when the delete came (a stage thread, the worker Job's pod).

The real operator (KopfRunner, standalone) against KMock, with the serving apps live.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from mediaflow.config import Settings
from mediaflow.status import mediajob_media_id
from mediaflow.stores import ArtifactStore, VectorIndex
from mediaflow_operator.jobs import job_name
from tests.operator.conftest import JOBS, MEDIAJOBS, NAMESPACE

pytestmark = pytest.mark.asyncio(loop_scope="function")

COLLECTION = "deltest"


@pytest.fixture(scope="module")
def llm_url() -> str:
    """Summaries are off in these tests: the operator needs an LLM endpoint set, never calls it."""
    return "http://127.0.0.1:9/v1"


def spec_for(sample_video) -> dict:
    return {"source": {"uri": sample_video.media, "title": "Island"},
            "stages": {"summary": {"enabled": False}, "index": {"collection": COLLECTION}}}


def points_in_qdrant(data_dir, media_id: str) -> int:
    index = VectorIndex.from_settings(Settings(data_dir=data_dir)).for_collection(COLLECTION)
    try:
        return index.count(media_id)
    finally:
        index.close()


def media_dir(data_dir, media_id: str) -> Path:
    """The media's directory in the (local) artifact store."""
    store = ArtifactStore(Settings(data_dir=data_dir).artifacts_uri)
    return Path(store.path(media_id, "x")).parent


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def assert_forgotten(namespace: str, name: str) -> None:
    """Nothing of the MediaJob stays in the operator's memory either (it runs for months).
    KopfRunner runs the operator in this process, so its runtime is inspectable."""
    from mediaflow_operator import runtime

    rt, key, job = runtime.current(), f"{namespace}/{name}", (namespace, job_name(namespace, name))
    assert key not in rt.deleting and key not in rt.daemons and key not in rt.phases
    assert mediajob_media_id(namespace, name) not in rt.stages_in_flight
    assert rt.jobs.latest(*job) is None
    assert job not in rt.jobs._changed, "a wake-up event of the deleted Job stays behind"
    assert key not in rt.slots.running


def job_deletes(cluster, name: str) -> list:
    return [r for r in cluster.requests("DELETE", f"{JOBS}/{name}")]


async def test_delete_while_transcription_is_in_flight_leaves_nothing(
        cluster, operator, kubelet, sample_video, transcription_service):
    slow = transcription_service.app
    slow.delay_next(12)  # the transcription request hangs on a slow replica for 12 s
    await cluster.create_mediajob("slow", spec_for(sample_video))
    media_id, job = mediajob_media_id(NAMESPACE, "slow"), job_name(NAMESPACE, "slow")
    worker_job = await cluster.wait_for(lambda: cluster.job(job), 30, "the worker Job")
    await kubelet.run(worker_job)
    await cluster.finish_job(worker_job, succeeded=True)

    async def transcribing():
        return condition(await cluster.mediajob("slow"), "Transcribe").get("status") == "Unknown"
    await cluster.wait_for(transcribing, 60, "Transcribe=Unknown")
    await cluster.wait_for(lambda: slow.delayed, 10, "the transcription request")
    assert slow.delayed[0][1] is None, "the slow request should still be in flight"
    assert (media_dir(cluster.data_dir, media_id) / "audio.wav").exists()

    response = await cluster.api.delete(f"{MEDIAJOBS}/slow")
    assert response.status_code in (200, 202), response.text

    # While the stage thread still waits for its answer, the finalizer holds the object.
    await asyncio.sleep(3)
    held = await cluster.mediajob("slow")
    assert held is not None and held["metadata"].get("deletionTimestamp")
    assert slow.delayed[0][1] is None
    assert media_dir(cluster.data_dir, media_id).exists()

    async def gone():
        return await cluster.mediajob("slow") is None
    await cluster.wait_for(gone, 60, "the MediaJob to go")
    gone_at = time.monotonic()
    # The object went only after the slow request had been answered (and its result written).
    answered_at = slow.delayed[0][1]
    assert answered_at is not None and answered_at <= gone_at

    # Nothing comes back later: nothing ran after the cleanup.
    await asyncio.sleep(3)
    assert not media_dir(cluster.data_dir, media_id).exists()
    assert await cluster.job(job) is None
    assert job_deletes(cluster, job), "the finalizer deletes the worker Job"
    assert slow.calls == 1  # the stage was not retried after the delete, and nothing ran after it
    assert_forgotten(NAMESPACE, "slow")
    await operator.stop()  # releases the embedded Qdrant
    assert points_in_qdrant(cluster.data_dir, media_id) == 0
    assert not media_dir(cluster.data_dir, media_id).exists()


async def test_delete_while_the_worker_job_runs_removes_the_job_first(cluster, operator, sample_video):
    await cluster.create_mediajob("busy", spec_for(sample_video))
    media_id, job = mediajob_media_id(NAMESPACE, "busy"), job_name(NAMESPACE, "busy")
    await cluster.wait_for(lambda: cluster.job(job), 30, "the worker Job")
    assert (media_dir(cluster.data_dir, media_id) / "job.json").exists()  # what the pod reads

    # The kubelet never finishes this Job: its pod "runs" until the Job is deleted.
    # A real API server answers a propagationPolicy=Foreground DELETE by adding the
    # `foregroundDeletion` finalizer, and the garbage collector removes it once the pods are
    # gone. KMock ignores propagationPolicy (a finalizer-less object goes at once), so the test
    # puts that finalizer on the Job and later removes it as the garbage collector would.
    response = await cluster.api.patch(f"{JOBS}/{job}", content=json.dumps(
        {"metadata": {"finalizers": ["foregroundDeletion"]}}),
        headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text

    response = await cluster.api.delete(f"{MEDIAJOBS}/busy")
    assert response.status_code in (200, 202), response.text
    await cluster.wait_for(lambda: job_deletes(cluster, job), 30, "the finalizer's DELETE of the Job")
    assert [r.params.get("propagationPolicy") for r in job_deletes(cluster, job)][0] == "Foreground"

    # The pods are still going: the finalizer waits, the artifacts the pod uses stay.
    await asyncio.sleep(4)
    terminating = await cluster.job(job)
    assert terminating is not None and terminating["metadata"].get("deletionTimestamp")
    assert (await cluster.mediajob("busy")) is not None
    assert (media_dir(cluster.data_dir, media_id) / "job.json").exists()

    # The garbage collector: the pods are gone, the Job's finalizer goes, then the Job.
    response = await cluster.api.patch(f"{JOBS}/{job}", content=json.dumps({"metadata": {"finalizers": []}}),
                                       headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text
    assert await cluster.job(job) is None

    async def gone():
        return await cluster.mediajob("busy") is None
    await cluster.wait_for(gone, 30, "the MediaJob to go")
    assert not media_dir(cluster.data_dir, media_id).exists()
    assert (await cluster.api.get(JOBS)).json()["items"] == []
    await asyncio.sleep(1)  # the Job's DELETED watch event reaches the operator
    assert_forgotten(NAMESPACE, "busy")
    await operator.stop()
    assert points_in_qdrant(cluster.data_dir, media_id) == 0
