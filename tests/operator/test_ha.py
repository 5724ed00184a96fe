"""Operator HA: two real operator processes, kopf peering, one active at a time.

Two ``python -m kopf run --namespace media main.py`` subprocesses (not KopfRunners: they
would share the ``runtime`` module global) with peering on, against one KMock. Each
draws its own random priority; kopf pauses the lower one. The active one is killed
with SIGKILL while its MediaJob's worker Job runs; the standby must take over once the
dead peer's record expires (MEDIAFLOW_OPERATOR_PEERING_LIFETIME), adopt the same Job
and finish the MediaJob, with no second Job and no duplicate Qdrant points.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime

import kmock as km
import pytest

from mediaflow.config import Settings
from mediaflow.status import mediajob_media_id
from mediaflow.stores import VectorIndex
from mediaflow_operator.jobs import job_name
from tests.operator.conftest import JOBS, NAMESPACE
from tests.operator.processes import KopfProcess

pytestmark = [pytest.mark.asyncio(loop_scope="function"), pytest.mark.fault]

PEERING_NAME = "mediaflow-test"
PEERINGS = f"/apis/kopf.dev/v1/namespaces/{NAMESPACE}/kopfpeerings"
LIFETIME = 6
COLLECTION = "hatest"


@pytest.fixture(scope="module")
def llm_url() -> str:
    """Summaries are off here: the operator needs an LLM endpoint set, never calls it."""
    return "http://127.0.0.1:9/v1"


@pytest.fixture
async def peering(cluster):
    """The namespaced KopfPeering resource and object, there before any operator starts:
    without the object kopf would run every operator as if standalone."""
    cluster.kmock.resources["kopf.dev/v1/kopfpeerings"] = km.ResourceInfo(
        kind="KopfPeering", namespaced=True, singular="kopfpeering",
        verbs={"get", "list", "watch", "patch", "create"})
    response = await cluster.api.post(PEERINGS, json={
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
        "metadata": {"name": PEERING_NAME, "namespace": NAMESPACE}, "status": {}})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
async def operators(cluster, peering, operator_env, tmp_path):
    env = {k: v for k, v in {**os.environ, **operator_env}.items()
           if k not in ("MEDIAFLOW_OPERATOR_STANDALONE", "MEDIAFLOW_OPERATOR_PEERING_PRIORITY", "POD_ID")}
    env.update({"MEDIAFLOW_OPERATOR_PEERING_NAME": PEERING_NAME,
                "MEDIAFLOW_OPERATOR_PEERING_LIFETIME": str(LIFETIME),
                "MEDIAFLOW_OPERATOR_JOB_RECHECK_SECONDS": "1"})
    procs = {peer: KopfProcess(env, tmp_path / f"{peer}.log", peer_id=peer) for peer in ("operator-a", "operator-b")}
    yield procs
    for proc in procs.values():
        await proc.stop()


async def peers(cluster) -> dict[str, dict]:
    response = await cluster.api.get(f"{PEERINGS}/{PEERING_NAME}")
    assert response.status_code == 200, response.text
    return response.json().get("status") or {}


def pause_state(op) -> str:
    """``active`` or ``paused``, by kopf's last pause/resume line (paused until it resumes)."""
    state = "paused"
    for line in op.log().splitlines():
        if "Resuming operations after the pause" in line:
            state = "active"
        elif "Pausing operations" in line:
            state = "paused"
    return state


def spec_for(sample_video) -> dict:
    return {"source": {"uri": sample_video.media, "title": "Island"},
            "stages": {"summary": {"enabled": False}, "index": {"collection": COLLECTION}}}


async def test_one_operator_active_the_standby_takes_over_after_a_kill(
        cluster, operators, kubelet, sample_video):
    ops = operators

    async def both_peered():
        for op in ops.values():
            assert op.proc.poll() is None, f"{op.peer_id} exited:\n{op.log()[-3000:]}"
        status = await peers(cluster)
        return status if set(status) == set(ops) else None
    status = await cluster.wait_for(both_peered, 60, "both operators in the peering status")
    priorities = {peer: info["priority"] for peer, info in status.items()}
    assert len(set(priorities.values())) == 2, f"equal priorities pause everyone: {priorities}"
    assert all(info["lifetime"] == LIFETIME for info in status.values())
    active_id = max(priorities, key=priorities.get)
    active, standby = ops[active_id], next(op for op in ops.values() if op.peer_id != active_id)
    # Peering is mandatory: both start paused; the higher resumes, the lower stays (or goes
    # back to being) paused.
    await cluster.wait_for(lambda: pause_state(active) == "active", 30, "the higher priority to resume")
    assert pause_state(standby) == "paused", standby.log()[-3000:]

    await cluster.create_mediajob("ha", spec_for(sample_video))
    name, media_id = job_name(NAMESPACE, "ha"), mediajob_media_id(NAMESPACE, "ha")
    await cluster.wait_for(lambda: cluster.job(name), 30, "the worker Job")
    await asyncio.sleep(2)  # time for a wrongly active standby to show itself
    assert active.handled(cluster, "ha"), active.log()[-3000:]
    assert not standby.handled(cluster, "ha"), standby.log()[-3000:]
    assert len(cluster.requests("POST", JOBS)) == 1

    # The active operator dies without a word; its peer record stays until it expires.
    await active.kill()
    killed_at = datetime.now()
    job = await cluster.job(name)
    await kubelet.run(job)  # the pod runs on meanwhile (the kubelet does not care about operators)
    await cluster.finish_job(job, succeeded=True)

    resuming = "Resuming operations after the pause"
    def resumed_since_kill() -> bool:
        try:
            standby.logged_at(resuming, after=killed_at)
        except LookupError:
            return False
        return True

    # (with mandatory peering every operator starts paused and may resume once at startup)
    await cluster.wait_for(resumed_since_kill, 60, "the standby to resume")
    # Not at once (that would be two active operators), but once the dead peer's record expired:
    # its last keep-alive was at most ~1 s before the kill.
    resumed_after = (standby.logged_at(resuming, after=killed_at) - killed_at).total_seconds()
    assert LIFETIME - 2 <= resumed_after <= LIFETIME + 10, resumed_after
    done = await cluster.wait_phase("ha", {"Succeeded", "Failed"}, timeout=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert standby.handled(cluster, "ha")
    assert set(await peers(cluster)) == {standby.peer_id}  # the dead peer was cleaned up

    # One Job, ever: the standby's create answered 409 and it adopted the Job (or it saw it first).
    posts = cluster.requests("POST", JOBS)
    assert 1 <= len(posts) <= 2 and {p.data["metadata"]["name"] for p in posts} == {name}
    jobs = (await cluster.api.get(JOBS)).json()["items"]
    assert [j["metadata"]["name"] for j in jobs] == [name]
    assert [r.data["reason"] for r in cluster.requests("POST", "/events")].count("JobCreated") == 1
    assert not cluster.requests("DELETE", JOBS)

    outputs = done["status"]["outputs"]
    assert outputs["chunks"] > 2 and outputs["points"] == outputs["chunks"]
    assert await standby.stop() == 0  # a clean exit; its cleanup releases the embedded Qdrant
    index = VectorIndex.from_settings(Settings(data_dir=cluster.data_dir)).for_collection(COLLECTION)
    try:
        assert index.count(media_id) == outputs["chunks"]  # no duplicate points
    finally:
        index.close()
