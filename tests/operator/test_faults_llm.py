"""The LLM down under the operator: the MediaJob fails in summarize with its reason, keeps what
the other stages made, and the rerun annotation (the spec is immutable) completes it, running
only the summary: one worker Job, one transcription, no duplicate points."""

from __future__ import annotations

import json

import pytest

from mediaflow.models import SummaryRecord
from mediaflow.samples import PASSAGES, make_sample
from mediaflow.status import CONDITION_TYPES, mediajob_media_id
from mediaflow_operator.handlers.rerun import RERUN_ANNOTATION
from mediaflow_operator.jobs import job_name
from tests.core.test_llm_faults import LLMGate
from tests.operator.conftest import JOBS, MEDIAJOBS, NAMESPACE
from tests.operator.test_operator import (
    artifacts,
    complete_worker_job,
    conditions_by_type,
    event_reasons,
    metric,
    points_in_qdrant,
    wait_for_events,
)

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.fault]


@pytest.fixture(scope="module")
def short_media(tmp_path_factory):
    """~20 s of speech: two passages, quick to transcribe."""
    return make_sample(tmp_path_factory.mktemp("op-llm") / "short.wav", passages=PASSAGES[2:4], video=False)


@pytest.fixture
def gate(llm_url):
    gate = LLMGate(llm_url)  # down until the test brings it up
    yield gate
    gate.close()


def spec(media, *, summary: bool = True) -> dict:
    return {"source": {"uri": media.media, "title": "Short"},
            "stages": {"summary": {"enabled": summary}, "index": {"collection": "optest"}}}


async def annotate_rerun(cluster, name: str, value: str) -> None:
    patch = {"metadata": {"annotations": {RERUN_ANNOTATION: value}}}
    response = await cluster.api.patch(f"{MEDIAJOBS}/{name}", content=json.dumps(patch),
                                       headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text


async def job_names(cluster) -> list[str]:
    return [j["metadata"]["name"] for j in (await cluster.api.get(JOBS)).json()["items"]]


async def test_llm_down_fails_summarize_keeps_outputs_and_the_rerun_annotation_completes(
        cluster, operator_process, kubelet, short_media, transcription_service, gate, monkeypatch):
    monkeypatch.setenv("MEDIAFLOW_LLM_URL", gate.url)  # nothing listens there yet
    retries_before = metric("mediaflow_operator_stage_retries_total", stage="summarize")
    await operator_process.start()
    await cluster.create_mediajob("llmdown", spec(short_media))
    await complete_worker_job(cluster, kubelet, "llmdown")

    failed = await cluster.wait_phase("llmdown", {"Succeeded", "Failed"}, timeout=300)
    status, conditions = failed["status"], conditions_by_type(failed)
    media_id = mediajob_media_id(NAMESPACE, "llmdown")
    assert status["phase"] == "Failed", status
    assert status["reason"] == "EngineUnavailable"
    assert status["message"].startswith("summarize: ") and f"LLM at {gate.url} unavailable" in status["message"]
    assert conditions["Summarize"]["status"] == "False"
    assert conditions["Summarize"]["reason"] == "EngineUnavailable"
    assert conditions["Ready"]["status"] == "False"
    assert all(c["status"] == "True" for t, c in conditions.items() if t not in ("Summarize", "Ready")), conditions
    assert set(conditions) == set(CONDITION_TYPES)
    # kopf retried the stage stage_retries times before giving up.
    assert metric("mediaflow_operator_stage_retries_total", stage="summarize") == retries_before + 3
    # What the other stages made is kept, in the status and in the store.
    outputs = status["outputs"]
    assert outputs["mediaId"] == media_id and outputs["chunks"] >= 1 and outputs["points"] == outputs["chunks"]
    assert outputs["artifacts"]["transcript_json"].endswith(f"{media_id}/transcript.json")
    assert "summaryExcerpt" not in outputs and "summary_md" not in outputs["artifacts"]
    store = artifacts(cluster.data_dir)
    assert store.exists(media_id, "index.json")
    assert not store.exists(media_id, "summary.json") and not store.exists(media_id, "summary.md")
    assert transcription_service.app.calls == 1
    assert await job_names(cluster) == [job_name(NAMESPACE, "llmdown")]
    assert "observedRerun" not in status  # created without the annotation
    await wait_for_events(cluster, {"EngineUnavailable"}, "Warning")

    # The LLM is back; the spec cannot change, so the rerun is asked for with the annotation.
    gate.up()
    await annotate_rerun(cluster, "llmdown", "1")
    done = await cluster.wait_phase("llmdown", {"Succeeded"}, timeout=300)
    status, conditions = done["status"], conditions_by_type(done)
    assert status["observedRerun"] == "1" and status["reason"] == "Completed"
    assert all(c["status"] == "True" for c in conditions.values()), conditions
    assert status["progress"] == 100
    outputs = status["outputs"]
    assert len(outputs["summaryExcerpt"]) > 10 and outputs["artifacts"]["summary_md"].endswith("summary.md")
    assert outputs["points"] == outputs["chunks"]
    assert store.read_model(media_id, "summary.json", SummaryRecord) is not None
    assert gate.posts >= 1  # the summary came through the gate from the real vLLM
    # Only the summary ran again: the same Job, one transcription, the done stages untouched.
    assert await job_names(cluster) == [job_name(NAMESPACE, "llmdown")]
    assert event_reasons(cluster).count("JobCreated") == 1
    assert transcription_service.app.calls == 1
    await wait_for_events(cluster, {"RerunRequested", "Completed"})
    # The phases the API server saw: Failed, then Pending (rerun), Succeeded, with Running
    # between them unless the summary-only rerun ended within the operator's status folding
    # (status_grace_seconds: seen in a fresh-clone CI run, Failed, Pending, Succeeded).
    phases = [r.data["status"]["phase"] for r in cluster.requests("PATCH", "/llmdown/status")
              if "phase" in (r.data or {}).get("status", {})]
    after = phases[phases.index("Failed"):]
    assert after[:2] == ["Failed", "Pending"] and after[-1] == "Succeeded", phases
    assert set(after[2:-1]) <= {"Running"}, phases

    await operator_process.stop()  # releases the embedded Qdrant
    assert points_in_qdrant(cluster.data_dir, media_id) == outputs["chunks"]


async def test_the_rerun_annotation_makes_a_failed_worker_job_again(cluster, operator, short_media):
    name = job_name(NAMESPACE, "retry-job")

    async def fresh_job():
        found = await cluster.job(name)
        return found if found and not (found.get("status") or {}).get("conditions") else None

    async def fail_the_job() -> dict:
        job = await cluster.wait_for(fresh_job, 30, "a running worker Job")
        await cluster.finish_job(job, succeeded=False)
        return await cluster.wait_phase("retry-job", {"Failed"}, timeout=30)

    await cluster.create_mediajob("retry-job", spec(short_media, summary=False))
    failed = await fail_the_job()
    assert conditions_by_type(failed)["ExtractAudio"]["status"] == "False"

    await annotate_rerun(cluster, "retry-job", "a")
    running = await cluster.wait_phase("retry-job", {"Running"}, timeout=30)
    assert running["status"]["observedRerun"] == "a"
    assert conditions_by_type(running)["ExtractAudio"]["status"] == "Unknown"
    # The failed Job was deleted and made again under its name: still one Job.
    failed = await fail_the_job()
    await cluster.wait_for(lambda: event_reasons(cluster).count("JobCreated") == 2, 10, "a second JobCreated")
    assert await job_names(cluster) == [name]

    # The value already acted on asks for nothing; a new one does.
    await annotate_rerun(cluster, "retry-job", "a")
    with pytest.raises(TimeoutError):
        await cluster.wait_phase("retry-job", {"Pending", "Running"}, timeout=3)
    await annotate_rerun(cluster, "retry-job", "b")
    running = await cluster.wait_phase("retry-job", {"Running"}, timeout=30)
    assert running["status"]["observedRerun"] == "b"
    await cluster.wait_for(fresh_job, 30, "a third worker Job")
