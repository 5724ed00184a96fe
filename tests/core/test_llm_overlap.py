"""The summary off the critical path: a run that will summarize starts the local vLLM server
in the background once its audio is decoded, so the server loads while WhisperX transcribes; the summarize stage waits for what is left of the start and raises
its error if it failed. The summary's LLM calls go out concurrently, their results in order.

Real servers throughout: a cold vLLM start from .venv-llm on a port of its own, a vLLM that
exits during startup (a model dir it cannot load), and the real model for the summaries."""

from __future__ import annotations

import json
import os
import threading

import pytest

from mediaflow.engines.llm_server import LocalLLMServer
from mediaflow.engines.openai_chat import OpenAIChatModel
from mediaflow.errors import EngineUnavailableError
from mediaflow.models import SummaryRecord
from mediaflow.pipeline import Pipeline
from mediaflow.samples import PASSAGES, make_sample
from mediaflow.stages.summarize import summarize
from tests.conftest import engines_for, free_port, make_settings

pytestmark = [pytest.mark.llm, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """~50 s of speech in five passages: several key sentences, a transcription of some seconds."""
    return make_sample(tmp_path_factory.mktemp("llm-overlap") / "talk.wav", passages=PASSAGES[1:6], video=False)


class ServerWatch:
    """Records, at each stage event, the local server's process as its state file names it
    (written when the process is launched) and whether it was running then."""

    def __init__(self, server: LocalLLMServer):
        self.server = server
        self.events = []
        self.launched_at: dict[tuple[str, str], int | None] = {}
        self.running_at: dict[tuple[str, str], bool] = {}

    def __call__(self, event) -> None:
        if event.status == "progress":
            return
        self.events.append(event)
        state = self.server._state()
        key = (event.stage, event.status)
        self.launched_at[key] = state["pid"] if state else None
        self.running_at[key] = bool(state) and _alive(state["pid"])


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory, engines_cache, media):
    """One ``process`` with summary and no server running: the run must start it itself."""
    root = tmp_path_factory.mktemp("cold")
    settings = make_settings(root / "data", llm_port=free_port(), llm_startup_timeout=600,
                             cache_dir=root / "shared-cache")
    server = LocalLLMServer(settings)
    assert not server.healthy() and server._state() is None
    watch = ServerWatch(server)
    pipeline = Pipeline(settings, engines=engines_for(settings, engines_cache))
    try:
        result = pipeline.process(media.media, title="Talk", on_event=watch)
        yield pipeline, result, watch, server
    finally:
        pipeline.close()
        server.stop()


def test_the_server_starts_during_the_run_before_summarize(cold_run):
    pipeline, result, watch, server = cold_run
    statuses = {e.stage: e.status for e in watch.events}
    assert statuses["summarize"] == "done", statuses
    # Not launched before the audio was decoded (bad input starts nothing); launched and
    # loading while WhisperX transcribed, before the summary stage began.
    assert watch.launched_at[("extract_audio", "done")] is None, watch.launched_at
    pid = watch.launched_at[("transcribe", "done")]
    assert pid is not None and watch.running_at[("transcribe", "done")], watch.launched_at
    assert watch.launched_at[("summarize", "started")] == pid and watch.running_at[("summarize", "started")]
    # The summary came from that server (the one the state file names, and still up).
    assert server._state()["pid"] == pid and server.healthy()
    summary = pipeline.store.read_model(result.media_id, "summary.json", SummaryRecord)
    # the model answered (its sentences were checked against the transcript; whether any was
    # supported is the grounding tests' concern)
    assert summary.map_calls >= 1 and summary.support and len(summary.text.split()) >= 3


def vllm_processes(session: int) -> list[str]:
    """The titles vLLM gives the processes it starts in ``session`` (``VLLM::EngineCore``, ...)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) != session:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmdline.startswith("VLLM::"):
            found.append(cmdline)
    return found


def test_the_server_runs_its_model_in_the_engine_core_process(cold_run):
    # vLLM's CPU platform spawns the engine core and, by default, a worker process for the
    # model as well (its "mp" executor), each importing torch and vLLM again. Ours runs the
    # model in the engine core (VLLM_ENABLE_V1_MULTIPROCESSING=0: the "uni" executor).
    _, _, _, server = cold_run
    session = os.getsid(server._state()["pid"])
    assert vllm_processes(session) == ["VLLM::EngineCore"]
    # and its caches are where the settings put them (several data dirs can share them)
    assert list((server.settings.cache_dir / "vllm" / "modelinfos").iterdir())


def test_a_rerun_with_the_summary_done_starts_nothing(cold_run, media):
    pipeline, _, _, _ = cold_run
    first, fresh = pipeline.engines, engines_for(pipeline.settings, pipeline.engines)
    pipeline.engines = fresh  # same store and index (an embedded index admits one client)
    try:
        timings = pipeline.process(media.media).timings
    finally:
        pipeline.engines = first
    assert timings["summarize"][0] == "cached", timings
    assert fresh._chat_start is None and "chat" not in fresh.__dict__


def test_a_failing_server_start_fails_the_summarize_stage_clearly(tmp_path, engines_cache, media):
    # A model dir vLLM cannot load (marked converted, so no conversion is attempted): the
    # server process exits during its start, in the background, while the run transcribes.
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "mediaflow-converted.json").write_text("{}")
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    settings = make_settings(tmp_path / "data", llm_port=free_port(), llm_model_dir=broken,
                             llm_startup_timeout=600)
    server = LocalLLMServer(settings)
    watch = ServerWatch(server)
    pipeline = Pipeline(settings, engines=engines_for(settings, engines_cache))
    try:
        with pytest.raises(EngineUnavailableError) as failure:
            pipeline.process(media.media, on_event=watch)
    finally:
        pipeline.close()
        server.stop()
    message = str(failure.value)
    assert f"local vLLM server for {server.base_url} exited during startup" in message, message
    assert watch.launched_at[("transcribe", "done")] is not None  # the start was begun early
    statuses = {e.stage: e.status for e in watch.events}
    # The start's failure surfaced at the summary, not earlier: every other stage finished.
    assert statuses == {"probe": "done", "extract_audio": "done", "transcribe": "done", "chunk": "done",
                        "embed": "done", "index": "done", "summarize": "failed"}, statuses
    [failed] = [e for e in watch.events if e.status == "failed"]
    assert failed.message == message
    media_dir = settings.data_dir / "artifacts" / "media" / pipeline_media_id(watch)
    assert not [p.name for p in media_dir.iterdir() if p.name.startswith("summary")]
    # The next use of the engines tries anew rather than re-raising a stale failure forever.
    assert pipeline.engines._chat_start is None


def pipeline_media_id(watch: ServerWatch) -> str:
    return next(e.media_id for e in watch.events if e.media_id)


class InFlight:
    """The real chat model, counting how many of its calls overlap."""

    def __init__(self, chat: OpenAIChatModel):
        self.chat, self.name = chat, chat.name
        self.now = self.most = self.calls = 0
        self.replies: list[tuple[str, str]] = []  # (prompt, reply), in the order they came back
        self.lock = threading.Lock()

    def complete(self, messages, **kwargs) -> str:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        try:
            reply = self.chat.complete(messages, **kwargs)
            with self.lock:
                self.replies.append((" ".join(m["content"] for m in messages), reply))
            return reply
        finally:
            with self.lock:
                self.now -= 1


def test_concurrent_summary_calls_give_the_same_ordered_result(cold_run):
    pipeline, result, _, server = cold_run
    transcript = pipeline.transcript(result.media_id)
    s = pipeline.settings
    options = dict(prompt=None, max_tokens=48, group_tokens=40, key_sentences=8,
                   min_similarity=s.grounding_min_similarity, min_coverage=s.grounding_min_coverage)
    records, chats = {}, {}
    for calls in (1, 8):
        chats[calls] = InFlight(OpenAIChatModel(server.base_url, s.llm_model,
                                                repetition_penalty=s.llm_repetition_penalty))
        records[calls] = summarize(chats[calls], pipeline.engines.embedder, transcript,
                                   concurrent_calls=calls, **options)
    one, many = records[1], records[8]
    assert one.map_calls >= 3 and chats[1].most == 1 and chats[1].calls == one.map_calls
    assert chats[8].most > 1 and chats[8].calls == many.map_calls  # really in flight together
    # The same key sentences and runs of them either way (chosen by embeddings, not the LLM).
    assert many.key_sentences == one.key_sentences and many.map_calls == one.map_calls
    starts = [k.start for k in many.key_sentences]
    assert starts == sorted(starts)
    # Kept in order: each sentence the model wrote comes from the reply to the call that held
    # its run of key sentences, and runs follow each other in time whatever order the calls
    # came back in. (Not the same words as the one-at-a-time run: vLLM's outputs depend on
    # the batch they were computed in unless batch invariance is on, which CPUs lack.)
    def run_of(prompt: str) -> int:
        return min(i for i, k in enumerate(many.key_sentences) if k.text in prompt)
    for record, chat in ((one, chats[1]), (many, chats[8])):
        runs = [next(run_of(prompt) for prompt, reply in chat.replies if support.text in reply)
                for support in record.support]
        assert runs and runs == sorted(runs), runs
