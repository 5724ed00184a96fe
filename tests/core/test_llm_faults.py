"""The LLM server down, or killed mid-summary: ``mediaflow process`` (a real subprocess) fails
with a one-line reason naming the summarize stage and the LLM URL, keeps what the other
stages made (search works), leaves no summary behind, and the same command run again once
the LLM is up (the session's real vLLM) runs only the summary."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mediaflow.config import Settings
from mediaflow.models import ChunkSet, SummaryRecord
from mediaflow.samples import PASSAGES, make_sample
from mediaflow.stores import ArtifactStore
from tests.conftest import LLM_MODEL_DIR, free_port

pytestmark = pytest.mark.fault
CACHED_STAGES = ("extract_audio", "transcribe", "chunk", "embed", "index")


class LLMGate:
    """A TCP gate in front of the real vLLM server, on a port of its own.

    ``down()``: nothing listens (connection refused, as with a stopped server); ``up()``:
    every connection is forwarded; ``kill_during_post(n)``: the n-th POST is forwarded and,
    while vLLM works on it, every connection is cut and the port closed: to the client, the
    server died mid-request.
    """

    def __init__(self, upstream_url: str):
        parts = urlsplit(upstream_url)
        self.upstream = (parts.hostname, parts.port)
        self.path = parts.path
        self.port = free_port()
        self.posts = 0
        self.kill_at: int | None = None
        self.killed = threading.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def up(self) -> None:
        self._call(self._listen())

    def down(self) -> None:
        self._call(self._close())

    def kill_during_post(self, n: int) -> None:
        self.kill_at = n

    def close(self) -> None:
        self.down()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # RST: what a killed process's sockets do
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, requests: bool) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    if requests:
                        self.posts += data.count(b"POST /")
                        if self.kill_at is not None and self.posts >= self.kill_at:
                            self.kill_at = None
                            await asyncio.sleep(0.5)  # vLLM is generating now
                            self.killed.set()
                            await self._close()
                            return
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        self._writers -= {writer, up_writer}


@pytest.fixture
def gate(llm_url):
    gate = LLMGate(llm_url)
    yield gate
    gate.close()


@pytest.fixture(scope="module")
def short_media(tmp_path_factory):
    """~20 s of speech: two passages, quick to transcribe."""
    return make_sample(tmp_path_factory.mktemp("llm-faults") / "short.wav", passages=PASSAGES[2:4], video=False)


def run_cli(data_dir: Path, llm_url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, MEDIAFLOW_DATA_DIR=str(data_dir), MEDIAFLOW_LLM_URL=llm_url,
                   MEDIAFLOW_LLM_MODEL_DIR=str(LLM_MODEL_DIR), MEDIAFLOW_REMOTE_RETRIES="1",
                   MEDIAFLOW_SUMMARY_MAX_TOKENS="48", **env)
    environ.pop("MEDIAFLOW_SUMMARY", None)
    return subprocess.run([sys.executable, "-m", "mediaflow.cli", *args], env=environ,
                          capture_output=True, text=True, timeout=300)


def store_for(data_dir: Path) -> ArtifactStore:
    return ArtifactStore(Settings(data_dir=data_dir).artifacts_uri)


def assert_failed_in_summarize(proc: subprocess.CompletedProcess, url: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: summarize failed: "), line
    assert f"LLM at {url} unavailable" in line, line
    assert "run the same command again" in line, line


def assert_kept_without_summary(data_dir: Path) -> tuple[str, int, float]:
    """The other stages' outputs are there and searchable; nothing of a summary is."""
    store = store_for(data_dir)
    [media_id] = store.list_media()
    for name in ("transcript.json", "transcript.txt", "chunks.json", "embeddings.json", "index.json"):
        assert store.exists(media_id, name), name
    files = sorted(p.name for p in (data_dir / "artifacts" / "media" / media_id).iterdir())
    assert not [f for f in files if f.startswith("summary") or f.endswith(".part")], files
    chunks = len(store.read_model(media_id, "chunks.json", ChunkSet).chunks)
    mtime = (data_dir / "artifacts" / "media" / media_id / "transcript.json").stat().st_mtime
    return media_id, chunks, mtime


def assert_rerun_ran_only_the_summary(proc, data_dir: Path, media_id: str, chunks: int, mtime: float) -> dict:
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["media_id"] == media_id
    stages = {name: s["status"] for name, s in result["stages"].items()}
    assert {name: stages[name] for name in CACHED_STAGES} == dict.fromkeys(CACHED_STAGES, "cached"), stages
    assert stages["summarize"] == "done", stages
    assert stages["probe"] == "done"  # the input is validated again (ffprobe, a fraction of a second)
    media_dir = data_dir / "artifacts" / "media" / media_id
    assert (media_dir / "transcript.json").stat().st_mtime == mtime  # not transcribed again
    assert result["points"] == chunks
    assert "summary.md" in result["files"]
    summary = store_for(data_dir).read_model(media_id, "summary.json", SummaryRecord)
    assert summary is not None and len(summary.text.split()) >= 3
    assert "## Summary" in (media_dir / "summary.md").read_text()
    return result


def test_llm_down_fails_the_summary_keeps_the_rest_and_a_rerun_completes(tmp_path, gate, short_media):
    data_dir = tmp_path / "data"
    # Nothing listens at the gate's port yet: connection refused, like an LLM server that is down.
    proc = run_cli(data_dir, gate.url, "process", str(short_media.media), "--json")
    assert_failed_in_summarize(proc, gate.url)
    assert "Connection refused" in proc.stderr
    assert proc.stdout == ""  # no partial JSON result
    media_id, chunks, mtime = assert_kept_without_summary(data_dir)

    # The finished stages are useful as they are: search and list work without the LLM.
    hits = run_cli(data_dir, gate.url, "search", "lighthouse keeper climbs the stairs", "--json")
    assert hits.returncode == 0, hits.stderr
    assert json.loads(hits.stdout)[0]["media_id"] == media_id
    [listed] = json.loads(run_cli(data_dir, gate.url, "list", "--json").stdout)
    assert listed["points"] == chunks and listed["summary"] is None

    gate.up()  # the LLM is back at the same URL
    proc = run_cli(data_dir, gate.url, "process", str(short_media.media), "--json")
    assert_rerun_ran_only_the_summary(proc, data_dir, media_id, chunks, mtime)
    assert gate.posts == 1  # one transcript group: one chat call


def test_llm_killed_mid_summary_leaves_no_summary_and_a_rerun_completes(tmp_path, gate, short_media):
    data_dir = tmp_path / "data"
    # Small groups: several chat calls (each condensing a run of key sentences); the server
    # dies during the second.
    group = {"MEDIAFLOW_SUMMARY_GROUP_TOKENS": "20"}
    gate.up()
    gate.kill_during_post(2)
    proc = run_cli(data_dir, gate.url, "process", str(short_media.media), **group)
    assert gate.killed.is_set()
    assert_failed_in_summarize(proc, gate.url)
    # Every group is sent at once (summary_concurrent_calls): the others were in flight when it
    # died, and their retries found the port closed.
    assert gate.posts >= 2
    media_id, chunks, mtime = assert_kept_without_summary(data_dir)

    gate.up()
    before = gate.posts
    proc = run_cli(data_dir, gate.url, "process", str(short_media.media), "--json", **group)
    assert_rerun_ran_only_the_summary(proc, data_dir, media_id, chunks, mtime)
    summary = store_for(data_dir).read_model(media_id, "summary.json", SummaryRecord)
    assert summary.map_calls >= 2 and gate.posts - before == summary.map_calls
