"""The real operator (KopfRunner) against KMock, with the serving apps as live endpoints."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import REGISTRY

from mediaflow.config import Settings
from mediaflow.models import SummaryRecord
from mediaflow.status import CONDITION_TYPES
from mediaflow.stores import ArtifactStore, VectorIndex
from mediaflow.status import mediajob_media_id
from mediaflow_operator.jobs import job_name
from tests.operator.conftest import JOBS, MEDIAJOBS, NAMESPACE

pytestmark = pytest.mark.asyncio(loop_scope="function")


def spec_for(sample_video, *, summary: bool = False, **extra) -> dict:
    return {"source": {"uri": sample_video.media, "title": "Island"},
            "stages": {"summary": {"enabled": summary}, "index": {"collection": "optest"}}, **extra}


def points_in_qdrant(data_dir, media_id: str) -> int:
    index = VectorIndex.from_settings(Settings(data_dir=data_dir)).for_collection("optest")
    try:
        return index.count(media_id)
    finally:
        index.close()


def artifacts(data_dir) -> ArtifactStore:
    return ArtifactStore(Settings(data_dir=data_dir).artifacts_uri)


def conditions_by_type(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def event_reasons(cluster, event_type: str | None = None) -> list[str]:
    return [r.data["reason"] for r in cluster.requests("POST", "/events")
            if event_type is None or r.data["type"] == event_type]


async def wait_for_events(cluster, reasons: set[str], event_type: str | None = None) -> None:
    """kopf posts events from a background task, after the status patch that caused them."""
    await cluster.wait_for(lambda: reasons <= set(event_reasons(cluster, event_type)), 10,
                           f"{event_type or 'any'} events {sorted(reasons)}")


async def complete_worker_job(cluster, kubelet, name: str) -> dict:
    """Wait for the MediaJob's worker Job, run its containers as a kubelet would, mark it Complete."""
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, name)), 30, "the worker Job")
    await kubelet.run(job)
    await cluster.finish_job(job, succeeded=True)
    return job


async def test_mediajob_runs_a_worker_job_then_remote_stages_to_succeeded(
        cluster, operator, kubelet, sample_video, operator_env, transcription_service):
    retries_before = metric("mediaflow_operator_stage_retries_total", stage="transcribe")
    transcribed_before = metric("mediaflow_operator_stage_seconds_count", stage="transcribe")
    await cluster.create_mediajob("island", spec_for(sample_video, summary=True))
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, "island")), 30, "the worker Job")

    media_id = mediajob_media_id(NAMESPACE, "island")
    pod = job["spec"]["template"]["spec"]
    assert job["metadata"]["ownerReferences"][0]["name"] == "island"
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 3600
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    assert [c["command"][:3] for c in pod["initContainers"] + pod["containers"]] == [
        ["mediaflow", "stage", "probe"], ["mediaflow", "stage", "extract_audio"]]
    assert pod["initContainers"][0]["command"][3:] == ["--media-id", media_id, "--source", sample_video.media]
    assert pod["containers"][0]["image"] == "registry.local/mediaflow/worker:test"
    security = pod["containers"][0]["securityContext"]
    assert security["runAsNonRoot"] and not security["allowPrivilegeEscalation"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"] == {"drop": ["ALL"]}
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "2Gi"}
    running = await cluster.wait_phase("island", {"Running"}, timeout=10)
    assert conditions_by_type(running)["ExtractAudio"]["status"] == "Unknown"

    await kubelet.run(job)  # the real worker commands, against the shared artifact store
    await cluster.finish_job(job, succeeded=True)
    done = await cluster.wait_phase("island", {"Succeeded", "Failed"}, timeout=300)

    status = done["status"]
    assert status["phase"] == "Succeeded", status
    conditions = conditions_by_type(done)
    assert set(conditions) == set(CONDITION_TYPES)
    assert all(c["status"] == "True" for c in conditions.values()), conditions
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in conditions.values())
    assert status["progress"] == 100 and status["observedGeneration"] == 1
    assert set(status["stages"]) == {"probe", "extract_audio", "transcribe", "chunk", "embed", "index",
                                     "summarize"}
    assert all(t["startedAt"] <= t["finishedAt"] for t in status["stages"].values())
    outputs = status["outputs"]
    assert outputs["mediaId"] == media_id and outputs["language"] == "en"
    assert outputs["segments"] > 3 and outputs["chunks"] > 2 and outputs["points"] == outputs["chunks"]
    assert 70 < outputs["durationSeconds"] < 100
    assert outputs["artifacts"]["transcript_json"].endswith(f"{media_id}/transcript.json")
    assert len(outputs["summaryExcerpt"]) > 20  # written by the live vLLM endpoint
    # how it was made, from summary.json: the check's figures reach the status too
    summary = artifacts(cluster.data_dir).read_model(media_id, "summary.json", SummaryRecord)
    assert summary.method != "unchecked"
    assert (outputs["summaryMethod"], outputs["summaryDropped"]) == (summary.method, summary.dropped)
    # Large results stay in the artifact store, never in the object.
    assert len(httpx.Response(200, json=done).content) < 16_000
    # The transcription really went through the serving app: its words are in the transcript.
    assert transcription_service.app.calls == 1
    assert "island" in artifacts(cluster.data_dir).read_text(media_id, "transcript.txt").lower()
    await wait_for_events(cluster, {"JobCreated", "AudioExtracted", "Completed"})
    # Stored as an API server stores them, each named from kopf's generateName: what
    # `kubectl describe mediajob island` lists under Events.
    listed = (await cluster.api.get(f"/api/v1/namespaces/{NAMESPACE}/events")).json()["items"]
    assert {"JobCreated", "AudioExtracted", "Completed"} <= {
        e["reason"] for e in listed if e["involvedObject"]["name"] == "island"}
    assert len({e["metadata"]["name"] for e in listed}) == len(listed) == len(event_reasons(cluster))
    # Progress moved forward through the run, as seen by the API server.
    progress = [r.data["status"]["progress"] for r in cluster.requests("PATCH", "/island/status")
                if "progress" in (r.data or {}).get("status", {})]
    assert progress == sorted(progress) and progress[-1] == 100 and len(set(progress)) >= 3

    port = operator_env["MEDIAFLOW_OPERATOR_METRICS_PORT"]
    exposed = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'mediaflow_operator_mediajobs{phase="Succeeded"} 1.0' in exposed
    assert metric("mediaflow_operator_stage_seconds_count", stage="transcribe") == transcribed_before + 1
    assert metric("mediaflow_operator_stage_retries_total", stage="transcribe") == retries_before

    await operator.stop()  # releases the embedded Qdrant
    assert points_in_qdrant(cluster.data_dir, media_id) == outputs["points"]


async def test_a_failed_worker_job_fails_the_mediajob_with_its_reason(cluster, operator, sample_video):
    await cluster.create_mediajob("broken", spec_for(sample_video))
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, "broken")), 30, "the worker Job")
    await cluster.finish_job(job, succeeded=False, reason="BackoffLimitExceeded",
                             message="Job has reached the specified backoff limit")

    failed = await cluster.wait_phase("broken", {"Succeeded", "Failed"}, timeout=30)
    status, conditions = failed["status"], conditions_by_type(failed)
    assert status["phase"] == "Failed" and status["reason"] == "BackoffLimitExceeded"
    assert conditions["ExtractAudio"]["status"] == "False"
    assert conditions["ExtractAudio"]["reason"] == "BackoffLimitExceeded"
    assert "backoff limit" in conditions["ExtractAudio"]["message"]
    assert conditions["Ready"]["status"] == "False"
    assert "Transcribe" not in conditions  # nothing ran after the failed stage
    await wait_for_events(cluster, {"BackoffLimitExceeded"}, "Warning")


async def test_serving_503_is_retried_with_backoff_then_succeeds(
        cluster, operator, kubelet, sample_video, transcription_service):
    retries_before = metric("mediaflow_operator_stage_retries_total", stage="transcribe")
    # More refusals than the HTTP client's own retries (MEDIAFLOW_REMOTE_RETRIES=1 → 2 attempts):
    # the stage fails temporarily and kopf retries the handler.
    transcription_service.app.fail_next(3, status=503)
    await cluster.create_mediajob("busy", spec_for(sample_video))
    await complete_worker_job(cluster, kubelet, "busy")

    done = await cluster.wait_phase("busy", {"Succeeded", "Failed"}, timeout=300)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert transcription_service.app.refused == 3 and transcription_service.app.calls == 4
    assert metric("mediaflow_operator_stage_retries_total", stage="transcribe") == retries_before + 1
    await wait_for_events(cluster, {"Retrying"})
    transcribe = [r.data["status"]["conditions"] for r in cluster.requests("PATCH", "/busy/status")]
    reasons = {c["reason"] for conds in transcribe for c in conds if c["type"] == "Transcribe"}
    assert "EngineUnavailable" in reasons  # the retry was visible on the condition meanwhile


async def test_a_4xx_from_serving_fails_the_stage_for_good(
        cluster, operator, kubelet, sample_video, transcription_service):
    transcription_service.app.fail_next(1, status=400)
    await cluster.create_mediajob("rejected", spec_for(sample_video))
    await complete_worker_job(cluster, kubelet, "rejected")

    failed = await cluster.wait_phase("rejected", {"Succeeded", "Failed"}, timeout=120)
    transcribe = conditions_by_type(failed)["Transcribe"]
    assert failed["status"]["phase"] == "Failed"
    assert transcribe["status"] == "False" and transcribe["reason"] == "RequestRejected"
    assert "audio could not be decoded" in transcribe["message"]
    assert transcription_service.app.calls == 1  # a 4xx is not retried


async def test_restart_mid_stage_resumes_without_duplicates_and_delete_cleans_up(
        cluster, operator_process, kubelet, sample_video, transcription_service):
    operator = operator_process
    await operator.start()
    await cluster.create_mediajob("resume", spec_for(sample_video))
    await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, "resume")), 30, "the worker Job")

    # Killed while the worker Job runs: the new operator follows the same Job.
    await operator.stop()
    await operator.start()
    await complete_worker_job(cluster, kubelet, "resume")

    # Killed again once transcription is done, while the later stages run or wait.
    async def transcribed():
        obj = await cluster.mediajob("resume")
        return obj and conditions_by_type(obj).get("Transcribe", {}).get("status") == "True"
    await cluster.wait_for(transcribed, 120, "Transcribe=True")
    await operator.stop()
    await operator.start()

    done = await cluster.wait_phase("resume", {"Succeeded", "Failed"}, timeout=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    # The restarted operator adopted the Job it had made (its create answered 409) instead of a second.
    jobs = (await cluster.api.get(JOBS)).json()["items"]
    assert [j["metadata"]["name"] for j in jobs] == [job_name(NAMESPACE, "resume")]
    assert event_reasons(cluster).count("JobCreated") == 1
    assert transcription_service.app.calls == 1  # the finished stage was not redone
    media_id, points = mediajob_media_id(NAMESPACE, "resume"), done["status"]["outputs"]["points"]
    assert points == done["status"]["outputs"]["chunks"]

    # Delete: the finalizer removes the points and the artifacts, then the object goes.
    assert "finalizers" in done["metadata"]
    response = await cluster.api.delete(f"{MEDIAJOBS}/resume")
    assert response.status_code in (200, 202)
    await cluster.wait_for(lambda: _gone(cluster, "resume"), 60, "the MediaJob to go")
    await operator.stop()
    assert points_in_qdrant(cluster.data_dir, media_id) == 0
    assert not artifacts(cluster.data_dir).exists(media_id, "transcript.json")


async def _gone(cluster, name: str) -> bool:
    return await cluster.mediajob(name) is None


async def test_concurrency_limit_keeps_the_rest_pending_with_a_reason(
        cluster, operator_process, sample_video, monkeypatch):
    monkeypatch.setenv("MEDIAFLOW_OPERATOR_MAX_RUNNING", "1")
    await operator_process.start()
    await cluster.create_mediajob("first", spec_for(sample_video))
    first_job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, "first")), 30, "the first Job")
    await cluster.create_mediajob("second", spec_for(sample_video))

    waiting = await cluster.wait_phase("second", {"Pending"}, timeout=30)
    assert waiting["status"]["reason"] == "WaitingForSlot"
    assert await cluster.job(job_name(NAMESPACE, "second")) is None

    await cluster.finish_job(first_job, succeeded=False)  # frees the slot
    await cluster.wait_phase("first", {"Failed"}, timeout=30)
    await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, "second")), 30, "the second Job")
    assert (await cluster.mediajob("second"))["status"]["phase"] == "Running"


async def test_a_spec_the_model_rejects_fails_at_once(cluster, operator):
    # KMock does not apply the CRD schema; the operator validates with the same model.
    await cluster.create_mediajob("bad", {"source": {"uri": "ftp://example.com/a.mp4"}})
    failed = await cluster.wait_phase("bad", {"Failed"}, timeout=30)
    assert failed["status"]["reason"] == "InvalidSpec"
    assert "uri" in failed["status"]["message"]
    assert await cluster.job(job_name(NAMESPACE, "bad")) is None
