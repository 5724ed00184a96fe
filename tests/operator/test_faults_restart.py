"""Faults: the operator SIGKILLed mid-stage and started again; replayed and duplicated watch events.

The operator is a real ``python -m kopf run --standalone`` subprocess against KMock (a
KopfRunner shares the process, so it cannot be SIGKILLed). It is killed while the worker
Job runs; and, for another MediaJob, while an embeddings request is held by the service,
then (the next process) inside the index stage, Qdrant points written and ``index.json``
not yet (a ``sitecustomize`` on that process's PYTHONPATH holds it there). The last process
on the same data dir must finish the MediaJob with the media processed exactly once.

Watch events are replayed with KMock's own machinery: an event put on KMock's per-resource
bus goes to every open watch stream (identical duplicates of ADDED/MODIFIED), a "410 Gone"
ERROR event makes kopf end the stream, list again and watch again (KMock then replays every
object as ADDED), an unrelated label patch is a real MODIFIED, and a restart after
Succeeded replays everything to a fresh process.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from mediaflow.config import Settings
from mediaflow.crd import PLURAL
from mediaflow.status import CONDITION_TYPES, mediajob_media_id
from mediaflow.stores import VectorIndex
from mediaflow_operator.jobs import job_name
from tests.operator.conftest import JOBS, MEDIAJOBS, NAMESPACE, Flaky, UvicornThread
from tests.operator.processes import KopfProcess

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.fault]

COLLECTION = "restarttest"

# Loaded by the operator process whose env names a marker file: once the index stage has
# written its points to Qdrant, it writes the marker and sleeps there (to be SIGKILLed).
HOLD_INDEX_HOOK = '''
import os
marker = os.environ.get("MEDIAFLOW_TEST_HOLD_INDEX_MARKER")
if marker:
    import pathlib
    import time
    from mediaflow.stores import vector

    _upsert = vector.VectorIndex.upsert

    def _held_upsert(self, *args, **kwargs):
        ids = _upsert(self, *args, **kwargs)
        pathlib.Path(marker).write_text(str(len(ids)))
        time.sleep(120)
        return ids

    vector.VectorIndex.upsert = _held_upsert
'''


@pytest.fixture(scope="module")
def llm_url() -> str:
    """Summaries are off here: the operator needs an LLM endpoint set, never calls it."""
    return "http://127.0.0.1:9/v1"


@pytest.fixture
def embeddings(engines_cache):
    """The embeddings app of this test only, behind ``Flaky``: it counts and can hold requests."""
    from mediaflow_serving.apps.embeddings_api import create_app

    app = Flaky(create_app(lambda: engines_cache.embedder))
    with UvicornThread(app) as server:
        server.app = app
        yield server


@pytest.fixture(scope="module")
def short_video(media_dir):
    """Three passages (~35 s, three chunks): each test transcribes once, on shared CPUs."""
    from mediaflow.samples import PASSAGES, make_sample

    return make_sample(media_dir / "restart-short.mp4", passages=PASSAGES[:3])


def spec_for(video) -> dict:
    return {"source": {"uri": video.media, "title": "Island"},
            "stages": {"summary": {"enabled": False}, "index": {"collection": COLLECTION}}}


def watches(cluster, plural: str) -> int:
    return len([r for r in cluster.requests("GET", f"/{plural}") if "watch=true" in str(r.url)])


@pytest.fixture
async def start_operator(cluster, operator_env, embeddings, tmp_path):
    """``await start_operator(**extra_env)``: a new operator process, once it watches MediaJobs and Jobs."""
    procs: list[KopfProcess] = []
    base = {**os.environ, **operator_env, "MEDIAFLOW_EMBEDDING_URL": embeddings.url,
            "MEDIAFLOW_OPERATOR_JOB_RECHECK_SECONDS": "1"}

    async def start(**extra: str) -> KopfProcess:
        before = watches(cluster, PLURAL), watches(cluster, "jobs")
        op = KopfProcess({**base, **extra}, tmp_path / f"operator-{len(procs)}.log", verbose=True)
        procs.append(op)

        def watching() -> bool:
            assert op.proc.poll() is None, f"the operator exited:\n{op.log()[-3000:]}"
            return watches(cluster, PLURAL) > before[0] and watches(cluster, "jobs") > before[1]
        await cluster.wait_for(watching, 60, "the operator's watches")
        return op

    yield start
    for op in procs:
        await op.stop()


# -- what "processed exactly once" means ------------------------------------------------------

def event_reasons(cluster) -> list[str]:
    return [r.data["reason"] for r in cluster.requests("POST", "/events")]


def status_patches(cluster, name: str) -> list[dict]:
    return [r.data.get("status") or {} for r in cluster.requests("PATCH", f"{MEDIAJOBS}/{name}/status")]


def points_in_qdrant(data_dir, media_id: str) -> int:
    index = VectorIndex.from_settings(Settings(data_dir=data_dir)).for_collection(COLLECTION)
    try:
        return index.count(media_id)
    finally:
        index.close()


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


async def wait_for_events(cluster, reasons: set[str]) -> None:
    """kopf posts events from a background task, after the status patch that caused them."""
    await cluster.wait_for(lambda: reasons <= set(event_reasons(cluster)), 15, f"events {sorted(reasons)}")


async def assert_processed_once(cluster, name: str, done: dict, transcription) -> dict:
    """One Job, one transcription, every condition True, outputs filled; the caller checks Qdrant."""
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    jname = job_name(NAMESPACE, name)
    posts = cluster.requests("POST", JOBS)
    assert posts and {p.data["metadata"]["name"] for p in posts} == {jname}
    assert [j["metadata"]["name"] for j in (await cluster.api.get(JOBS)).json()["items"]] == [jname]
    assert not cluster.requests("DELETE", JOBS)
    assert transcription.app.calls == 1, "the transcription was done again"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == dict.fromkeys(CONDITION_TYPES, "True"), conditions
    outputs = status["outputs"]
    assert outputs["mediaId"] == mediajob_media_id(NAMESPACE, name)
    assert outputs["chunks"] >= 2 and outputs["points"] == outputs["chunks"]
    assert outputs["segments"] > 0 and outputs["artifacts"]
    assert status["finishedAt"] and status["progress"] == 100
    await wait_for_events(cluster, {"JobCreated", "AudioExtracted", "Completed"})
    # A restart repeats no event of work already reported (a 409 adoption posts no JobCreated),
    # and kopf adds none of its own.
    assert sorted(event_reasons(cluster)) == ["AudioExtracted", "Completed", "JobCreated"], event_reasons(cluster)
    # Once Succeeded, no patch took the status anywhere else.
    phases = [p["phase"] for p in status_patches(cluster, name) if "phase" in p]
    assert phases[-1] == "Succeeded" and phases.count("Succeeded") == 1, phases
    return outputs


# -- 1. SIGKILL mid-stage, then started again ------------------------------------------------

async def test_killed_while_the_worker_job_runs_then_started_again(
        cluster, start_operator, kubelet, short_video, transcription_service, embeddings):
    name = "killjob"
    first = await start_operator()
    await cluster.create_mediajob(name, spec_for(short_video))
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, name)), 30, "the worker Job")
    await wait_for_events(cluster, {"JobCreated"})
    assert (await cluster.mediajob(name))["status"]["phase"] == "Running"
    await first.kill()

    # The Job still runs (its pod does not care about operators); the new operator follows it.
    second = await start_operator()
    await cluster.wait_for(lambda: second.daemon_invocations(name) == 1, 30, "the new operator's daemon")
    await kubelet.run(job)
    await cluster.finish_job(job, succeeded=True)

    done = await cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout=150)
    outputs = await assert_processed_once(cluster, name, done, transcription_service)
    assert len(cluster.requests("POST", JOBS)) <= 2  # the first, and at most one answered 409
    assert second.daemon_invocations(name) == 1
    assert embeddings.app.calls == 1
    assert await second.stop() == 0  # a clean exit releases the embedded Qdrant
    assert points_in_qdrant(cluster.data_dir, mediajob_media_id(NAMESPACE, name)) == outputs["chunks"]


async def test_killed_during_embed_then_again_during_index_then_started_again(
        cluster, start_operator, kubelet, short_video, transcription_service, embeddings, tmp_path):
    name = "killstages"
    embeddings.app.delay_next(6)  # the first embeddings request is held: killed meanwhile
    first = await start_operator()
    await cluster.create_mediajob(name, spec_for(short_video))
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, name)), 30, "the worker Job")
    await kubelet.run(job)
    await cluster.finish_job(job, succeeded=True)

    async def embedding() -> bool:
        held = len(embeddings.app.delayed) == 1 and embeddings.app.delayed[0][1] is None
        obj = await cluster.mediajob(name)
        return (held and condition(obj, "Transcribe").get("status") == "True"
                and condition(obj, "Embed").get("status") == "Unknown")
    await cluster.wait_for(embedding, 120, "the embeddings request held, Transcribe=True, Embed=Unknown")
    await wait_for_events(cluster, {"JobCreated", "AudioExtracted"})
    await first.kill()

    # Started again, and killed inside the index stage: points upserted, index.json not written.
    marker, hook = tmp_path / "index-held", tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_INDEX_HOOK)
    second = await start_operator(
        PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
        MEDIAFLOW_TEST_HOLD_INDEX_MARKER=str(marker))
    await cluster.wait_for(marker.exists, 60, "the index stage to have written its points")
    assert second.daemon_invocations(name) == 1
    assert condition(await cluster.mediajob(name), "Index").get("status") != "True"
    await second.kill()
    written = int(marker.read_text())
    assert written >= 2

    third = await start_operator()
    done = await cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout=120)
    outputs = await assert_processed_once(cluster, name, done, transcription_service)
    assert outputs["points"] == written
    assert len(cluster.requests("POST", JOBS)) == 1  # the Job was complete: never created again
    assert third.daemon_invocations(name) == 1
    # One embeddings request served to a live operator (the second's); the held one, if its
    # delay ran out meanwhile, went to the dead first operator; the third found embeddings.json.
    held_served = sum(1 for _, sent in embeddings.app.delayed if sent is not None)
    assert embeddings.app.calls - held_served == 1
    assert await third.stop() == 0  # a clean exit releases the embedded Qdrant
    assert points_in_qdrant(cluster.data_dir, mediajob_media_id(NAMESPACE, name)) == outputs["chunks"]


# -- 2. replayed and duplicated watch events ---------------------------------------------------

async def put_watch_events(cluster, plural: str, *events: dict) -> None:
    """Deliver ``events`` on every open watch stream of ``plural`` (KMock's bus of that resource)."""
    buses = [bus for resource, bus in cluster.kmock._buses.items() if getattr(resource, "plural", None) == plural]
    assert buses, f"no watch of {plural}"
    for bus in buses:
        await bus.put(*events)


async def duplicate_everything(cluster, name: str) -> None:
    """Identical ADDED/MODIFIED duplicates of the MediaJob and its Job, an unrelated label
    patch (a real MODIFIED), then "410 Gone" on both watches: kopf lists and watches again,
    and KMock's new watch replays every object as ADDED."""
    obj = await cluster.mediajob(name)
    job = await cluster.job(job_name(NAMESPACE, name))
    relists = watches(cluster, PLURAL), watches(cluster, "jobs")
    await put_watch_events(cluster, PLURAL, *[{"type": t, "object": obj} for t in ("ADDED", "MODIFIED") * 3])
    if job is not None:
        await put_watch_events(cluster, "jobs", *[{"type": t, "object": job} for t in ("ADDED", "MODIFIED") * 2])
    labels = {**(obj["metadata"].get("labels") or {}), "replay": str(relists[0])}
    response = await cluster.api.patch(f"{MEDIAJOBS}/{name}", json={"metadata": {"labels": labels}},
                                       headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 200, response.text
    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired",
            "message": "too old resource version", "metadata": {"namespace": NAMESPACE, "name": name}}
    await put_watch_events(cluster, PLURAL, {"type": "ERROR", "object": gone})
    await put_watch_events(cluster, "jobs", {"type": "ERROR", "object": gone})
    await cluster.wait_for(lambda: watches(cluster, PLURAL) > relists[0] and watches(cluster, "jobs") > relists[1],
                           15, "kopf to watch again after 410 Gone")
    await put_watch_events(cluster, PLURAL, {"type": "MODIFIED", "object": await cluster.mediajob(name)})
    await asyncio.sleep(1.5)  # time for the replay to be handled


async def test_replayed_and_duplicated_watch_events_cause_no_double_work(
        cluster, start_operator, kubelet, short_video, transcription_service, embeddings):
    name = "replay"
    op = await start_operator()
    await cluster.create_mediajob(name, spec_for(short_video))
    job = await cluster.wait_for(lambda: cluster.job(job_name(NAMESPACE, name)), 30, "the worker Job")
    await wait_for_events(cluster, {"JobCreated"})

    # While the worker Job runs: still one daemon, one Job, one creation.
    await duplicate_everything(cluster, name)
    assert op.daemon_invocations(name) == 1, op.log()[-3000:]
    assert len(cluster.requests("POST", JOBS)) == 1
    transcription_service.app.delay_next(6)  # the transcription request, once sent, is held
    await kubelet.run(job)
    await cluster.finish_job(job, succeeded=True)

    # While the transcription request is held: no second pipeline run in parallel.
    await cluster.wait_for(lambda: transcription_service.app.delayed, 60, "the transcription request")
    await duplicate_everything(cluster, name)
    assert op.daemon_invocations(name) == 1, op.log()[-3000:]

    done = await cluster.wait_phase(name, {"Succeeded", "Failed"}, timeout=120)
    outputs = await assert_processed_once(cluster, name, done, transcription_service)
    assert embeddings.app.calls == 1
    patches, events = len(status_patches(cluster, name)), len(event_reasons(cluster))

    # After Succeeded: duplicates, a re-list, then a restart (a fresh process sees it all as ADDED).
    await duplicate_everything(cluster, name)
    assert await op.stop() == 0
    again = await start_operator()
    await cluster.wait_for(lambda: again.exited_daemon(name), 30, "the replayed daemon to find it finished")
    await duplicate_everything(cluster, name)

    final = await cluster.mediajob(name)
    assert final["status"] == done["status"]  # not rewritten: same phase, finishedAt, conditions
    assert len(status_patches(cluster, name)) == patches, status_patches(cluster, name)[patches:]
    assert len(cluster.requests("POST", JOBS)) == 1
    assert transcription_service.app.calls == 1 and embeddings.app.calls == 1
    assert event_reasons(cluster)[events:] == []  # no event repeated for the replays
    assert again.daemon_invocations(name) == 1
    assert await again.stop() == 0
    assert points_in_qdrant(cluster.data_dir, mediajob_media_id(NAMESPACE, name)) == outputs["chunks"]
