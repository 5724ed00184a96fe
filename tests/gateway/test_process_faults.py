"""Faults: a real gateway process (``mediaflow-gateway``, embedded backend) SIGKILLed
mid-upload and mid-job, then started again on the same data dir.

One chain of three processes on one data dir (each start costs ~13 s of model imports,
each transcription seconds of CPU: one chain keeps the test near a minute):

1. gateway 1 receives a streamed multipart upload of media A and is killed while the
   body is arriving (MiBs of it staged). Gateway 2 starts: nothing of that upload is
   anywhere (no media, no job, no staging dir, no point in Qdrant); the same upload done
   completely is accepted once, under its content hash, and completes; again: ``existing``.
2. gateway 2 accepts media B and is killed while B is being transcribed (a
   ``sitecustomize`` on its PYTHONPATH holds the transcribe stage of B). Gateway 3 starts
   and resumes B by itself: probe and audio extraction are not run again, transcription
   runs once more and completes, B's points equal its chunks; A is still known (its job
   answers, its bytes again are ``existing``) and was not processed again.

The same hook logs every stage run (pid, stage, media id): "exactly once" is read there.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mediaflow.config import Settings
from mediaflow.sources import media_id_for
from mediaflow.stores import VectorIndex
from tests.conftest import free_port

pytestmark = [pytest.mark.fault, pytest.mark.slow]

KEY = "fault-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
GATEWAY = Path(sys.executable).parent / "mediaflow-gateway"
MiB = 1 << 20
SENT_BEFORE_PAUSE = 4 * MiB  # the upload buffers up to 1 MiB before each write: staged lags
STAGED_BEFORE_KILL = 2 * MiB
PIPELINE_STAGES = ["extract_audio", "transcribe", "chunk", "embed", "index", "summarize"]

# Loaded by every gateway process of this test (sitecustomize on its PYTHONPATH): each
# stage run (and each ingest, the probe) appends "<pid> <stage> <media id>" to the log;
# with MEDIAFLOW_TEST_HOLD_TRANSCRIBE="<media id>=<marker>", that media's transcription
# writes the marker and sleeps there (to be SIGKILLed).
STAGE_HOOK = '''
import os
log_path = os.environ.get("MEDIAFLOW_TEST_STAGE_LOG")
if log_path:
    import dataclasses
    import time

    from mediaflow import pipeline, stages

    hold_media, _, hold_marker = os.environ.get("MEDIAFLOW_TEST_HOLD_TRANSCRIBE", "").partition("=")

    def note(stage, media_id):
        with open(log_path, "a") as fh:
            fh.write(f"{os.getpid()} {stage} {media_id}\\n")

    def logged(stage):
        def run(ctx):
            note(stage.name, ctx.media_id)
            if stage.name == "transcribe" and ctx.media_id == hold_media:
                with open(hold_marker, "w") as fh:
                    fh.write("held")
                time.sleep(600)
            return stage.run(ctx)
        return dataclasses.replace(stage, run=run)

    for name, stage in list(stages.STAGE_BY_NAME.items()):
        stages.STAGE_BY_NAME[name] = logged(stage)

    _ingest = pipeline.Pipeline.ingest

    def ingest(self, source, *, media_id=None, title=None):
        note("probe", media_id)
        return _ingest(self, source, media_id=media_id, title=title)

    pipeline.Pipeline.ingest = ingest
'''


class Gateway:
    """One ``mediaflow-gateway`` process on ``data_dir``, on a free port."""

    def __init__(self, data_dir: Path, hook_dir: Path, stage_log: Path, log_file: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAFLOW_")}
        base.update({
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")])),
            "MEDIAFLOW_DATA_DIR": str(data_dir), "MEDIAFLOW_SUMMARY": "false", "MEDIAFLOW_THREADS": "2",
            "MEDIAFLOW_GATEWAY_API_KEYS": json.dumps([KEY]), "MEDIAFLOW_GATEWAY_WORKERS": "1",
            "MEDIAFLOW_GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
            "MEDIAFLOW_TEST_STAGE_LOG": str(stage_log), **env,
        })
        self._log = open(log_file, "ab")  # noqa: SIM115 - closed by stop/kill
        self.proc = subprocess.Popen([str(GATEWAY), "--host", "127.0.0.1", "--port", str(self.port)],
                                     env=base, stdout=self._log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, headers=AUTH, timeout=60)

    def wait_healthy(self, timeout: float = 90.0) -> Gateway:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the gateway exited ({self.proc.returncode}):\n{self.log_file.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"the gateway did not answer /healthz in {timeout} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (no lifespan exit, no finally, no atexit)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        self.client.close()
        self._log.close()

    def job(self, job_id: str) -> dict:
        response = self.client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_job(self, job_id: str, timeout: float = 150.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["phase"] in ("Succeeded", "Failed"):
                return job
            time.sleep(0.25)
        pytest.fail(f"job {job_id} did not finish in {timeout} s: {job}")

    def upload(self, name: str, payload: bytes) -> httpx.Response:
        return self.client.post("/v1/media", files={"file": (name, payload, "video/mp4")})


@pytest.fixture
def gateways(tmp_path):
    """Starts gateways on one data dir; any still running at the end is stopped."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STAGE_HOOK)
    started: list[Gateway] = []

    def start(**env: str) -> Gateway:
        gateway = Gateway(tmp_path / "data", hook, tmp_path / "stages.log",
                          tmp_path / f"gateway-{len(started) + 1}.log", **env)
        started.append(gateway)
        return gateway.wait_healthy()

    yield start
    for gateway in started:
        if gateway.proc.poll() is None:
            gateway.stop()


@pytest.fixture(scope="module")
def clips(sample_video, tmp_path_factory) -> tuple[bytes, bytes]:
    """Two media cut from the espeak sample, short (each transcription costs CPU): A, its
    first passage (12 s) re-encoded losslessly at 640x480 (~6.6 MiB: an upload that is MiBs
    in when it is killed), and B, its fifth passage (10 s, ~0.6 MiB)."""
    out = tmp_path_factory.mktemp("clips")
    a, b = out / "a.mp4", out / "b.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(sample_video.media), "-t", "12", "-c:a", "copy",
                    "-vf", "scale=640:480", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(a)],
                   check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "40", "-i", str(sample_video.media), "-t", "10",
                    "-c", "copy", str(b)], check=True)
    return a.read_bytes(), b.read_bytes()


def streamed_upload(url: str, payload: bytes, *, pause_after: int, resume: threading.Event) -> threading.Thread:
    """POST ``payload`` as multipart in 64 KiB chunks, stopping after ``pause_after`` bytes
    until ``resume`` is set (the body is then still arriving), in a thread."""
    boundary = "mediaflow-fault-boundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        for offset in range(0, len(payload), 64 * 1024):
            if offset >= pause_after:
                resume.wait(60)
            yield payload[offset:offset + 64 * 1024]
        yield tail

    def send():
        headers = {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}",
                   "Content-Length": str(len(head) + len(payload) + len(tail))}
        try:
            httpx.post(f"{url}/v1/media", content=body(), headers=headers, timeout=60)
        except httpx.HTTPError:
            pass  # the server died under it: expected

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def staged_files(data: Path) -> list[Path]:
    root = data / "artifacts" / "incoming"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def stage_runs(log: Path) -> list[tuple[int, str, str]]:
    if not log.exists():
        return []
    return [(int(pid), stage, media) for pid, stage, media in (line.split() for line in log.read_text().splitlines())]


def points(data: Path, media_id: str) -> int:
    """Points in the embedded Qdrant (read between processes: it is locked while one runs)."""
    index = VectorIndex.from_settings(Settings(data_dir=data))
    try:
        return index.count(media_id)
    finally:
        index.close()


def chunks(data: Path, media_id: str) -> int:
    return len(json.loads((data / "artifacts" / "media" / media_id / "chunks.json").read_text())["chunks"])


def test_killed_mid_upload_and_mid_job_then_restarted(gateways, clips, tmp_path):
    started = time.monotonic()
    clip_a, clip_b = clips
    data, log = tmp_path / "data", tmp_path / "stages.log"
    id_a = media_id_for(hashlib.sha256(clip_a).hexdigest())
    id_b = media_id_for(hashlib.sha256(clip_b).hexdigest())
    assert len(clip_a) > SENT_BEFORE_PAUSE + MiB

    # -- 1. killed while the body of A is arriving ------------------------------------------
    first = gateways()
    resume = threading.Event()
    sender = streamed_upload(first.url, clip_a, pause_after=SENT_BEFORE_PAUSE, resume=resume)
    partial = wait_for(lambda: [p for p in staged_files(data) if p.name == "source.mp4"
                                and p.stat().st_size >= STAGED_BEFORE_KILL], 30, "MiBs of the upload staged")
    owner = json.loads((partial[0].parent / "owner.json").read_text())
    assert owner["pid"] == first.proc.pid  # the staging dir names its (soon dead) owner
    first.kill()
    resume.set()
    sender.join(10)
    assert partial[0].exists() and partial[0].stat().st_size < len(clip_a)  # the dead process left it
    assert points(data, id_a) == 0

    second = gateways(MEDIAFLOW_TEST_HOLD_TRANSCRIBE=f"{id_b}={tmp_path / 'held'}")
    assert staged_files(data) == [] and not partial[0].parent.exists()  # dropped at start
    assert second.client.get("/v1/media").json()["items"] == []
    assert second.client.get("/v1/jobs").json()["items"] == []
    assert second.client.get(f"/v1/jobs/{id_a}").status_code == 404
    assert second.client.get(f"/v1/media/{id_a}").status_code == 404
    assert not (data / "artifacts" / "media").exists() or list((data / "artifacts" / "media").iterdir()) == []
    assert stage_runs(log) == []  # nothing of A was processed, so nothing indexed either

    # ... and the same upload, complete, is one media under its content hash, processed once
    accepted = second.upload("a.mp4", clip_a)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["media_id"] == accepted.json()["job_id"] == id_a and not accepted.json()["existing"]
    job_a = second.wait_job(id_a)
    assert job_a["phase"] == "Succeeded", (job_a.get("message"), job_a.get("conditions"))
    again = second.upload("a-again.mp4", clip_a)
    assert again.status_code == 200 and again.json()["existing"] and again.json()["job_id"] == id_a, again.text
    assert [m["media_id"] for m in second.client.get("/v1/media").json()["items"]] == [id_a]
    assert sorted(s for pid, s, m in stage_runs(log) if m == id_a) == sorted(["probe", *PIPELINE_STAGES])

    # -- 2. killed while B is being transcribed --------------------------------------------
    accepted = second.upload("b.mp4", clip_b)
    assert accepted.status_code == 202 and accepted.json()["media_id"] == id_b, accepted.text
    wait_for(lambda: (tmp_path / "held").exists(), 60, "the transcription of B")
    running = second.job(id_b)
    assert running["phase"] == "Running" and running["stage"] == "transcribe", running
    second.kill()
    assert points(data, id_a) == chunks(data, id_a) > 0 and points(data, id_b) == 0
    assert staged_files(data) == []

    third = gateways()  # no hold: B's transcription may finish now
    job_b = third.wait_job(id_b)  # resumed by the start itself, not by a new request
    assert job_b["phase"] == "Succeeded", job_b
    assert job_b["message"] == "resumed after the gateway restarted (interrupted while transcribe)", job_b
    reasons = {c["type"]: c["reason"] for c in job_b["conditions"]}
    assert reasons == {"probe": "AlreadyDone", "extract_audio": "AlreadyDone", "transcribe": "Completed",
                       "chunk": "Completed", "embed": "Completed", "index": "Completed",
                       "summarize": "Skipped"}, reasons
    runs_b = [(pid, s) for pid, s, m in stage_runs(log) if m == id_b]
    assert runs_b == [(second.proc.pid, "probe"), (second.proc.pid, "extract_audio"),
                      (second.proc.pid, "transcribe"),  # killed in there
                      *((third.proc.pid, s) for s in PIPELINE_STAGES[1:])], runs_b
    assert [pid for pid, s, m in stage_runs(log) if m == id_a and pid == third.proc.pid] == []
    assert third.job(id_a)["phase"] == "Succeeded"  # A's job is known after the restart
    for name, clip, media_id in (("a.mp4", clip_a, id_a), ("b.mp4", clip_b, id_b)):
        again = third.upload(name, clip)
        assert again.status_code == 200 and again.json()["existing"], again.text
        assert again.json()["job_id"] == media_id
    assert sorted(m["media_id"] for m in third.client.get("/v1/media").json()["items"]) == sorted([id_a, id_b])
    assert sorted(j["id"] for j in third.client.get("/v1/jobs").json()["items"]) == sorted([id_a, id_b])
    assert staged_files(data) == []
    third.stop()
    assert points(data, id_a) == chunks(data, id_a) and points(data, id_b) == chunks(data, id_b) > 0
    assert time.monotonic() - started < 150


# -- the pieces, in this process ---------------------------------------------------------------

async def test_a_live_upload_keeps_its_lease_and_a_discarded_one_is_not_recreated(tmp_path, monkeypatch,
                                                                                   sample_bytes):
    import asyncio

    from mediaflow.stores import ArtifactStore
    from mediaflow_gateway.api import upload

    monkeypatch.setattr(upload, "LEASE_REFRESH_SECONDS", 0.05)
    store = ArtifactStore(str(tmp_path / "artifacts"))
    sink = upload._FileSink(store, len(sample_bytes))
    lease = asyncio.create_task(sink.keep_lease())
    try:
        await sink.write(sample_bytes[:64 * 1024])  # sniffed, staging dir and owner file written
        owner = Path(sink.staging_dir) / upload.OWNER_FILE
        assert json.loads(owner.read_text())["pid"] == os.getpid()
        long_ago = time.time() - 10 * upload.LEASE_STALE_SECONDS
        os.utime(owner, (long_ago, long_ago))  # as if the client had stalled for long
        await asyncio.sleep(0.3)
        assert time.time() - owner.stat().st_mtime < upload.LEASE_STALE_SECONDS  # refreshed meanwhile
        assert not upload.stale_staging(store, sink.staging_dir, age=0)
        sink.abort()  # the client went away: the dir goes, and no refresh brings it back
        await asyncio.sleep(0.3)
        assert not Path(sink.staging_dir).exists()
    finally:
        lease.cancel()


async def test_an_unfinished_job_of_a_stopped_backend_is_resumed_by_the_next(tmp_path, engines_cache, monkeypatch):
    from mediaflow_gateway.backends.embedded import EmbeddedBackend
    from tests.gateway.conftest import AUTH as APP_AUTH
    from tests.gateway.conftest import multipart, running_app, tone

    payload = tone(tmp_path, 1500)
    media_id = media_id_for(hashlib.sha256(payload).hexdigest())
    runs: list[tuple[str, bool]] = []
    monkeypatch.setattr(EmbeddedBackend, "_run", lambda self, job_id, spec, resume=False: runs.append((job_id, resume)))
    async with running_app(tmp_path / "data", engines_cache) as client:  # accepts; its job never runs
        created = await client.post("/v1/media", headers=APP_AUTH, **multipart("t.wav", payload))
        assert created.status_code == 202, created.text
    assert runs == [(media_id, False)]
    async with running_app(tmp_path / "data", engines_cache) as client:
        assert runs == [(media_id, False), (media_id, True)]  # queued again at start, as a resume
        job = (await client.get(f"/v1/jobs/{media_id}", headers=APP_AUTH)).json()
        assert job["phase"] == "Pending" and job["message"].startswith("resumed after the gateway restarted"), job
        again = await client.post("/v1/media", headers=APP_AUTH, **multipart("t.wav", payload))
        assert again.status_code == 200 and again.json()["existing"], again.text
        client.app.state.backend.tracker.finish(media_id, error="test: done with it")
        deleted = await client.delete(f"/v1/media/{media_id}", headers=APP_AUTH)
        assert deleted.status_code == 204, deleted.text
    async with running_app(tmp_path / "data", engines_cache) as client:  # deleted: nothing comes back
        assert runs == [(media_id, False), (media_id, True)]
        assert (await client.get("/v1/jobs", headers=APP_AUTH)).json()["items"] == []
