"""The whole API on real models, in order: upload → SSE progress to Succeeded → transcript in
every format → search finds the phrase at the right time → ask cites it → stream → delete."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import pytest_asyncio

from mediaflow.sources import media_id_for
from mediaflow.stages import STAGES
from mediaflow.subtitles import parse_cues
from tests.gateway.conftest import AUTH, indexed_points, multipart, running_app, staged_uploads

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.llm, pytest.mark.slow]

LIGHTHOUSE_QUERY = "who cleans the glass of the lighthouse every evening"
LIGHTHOUSE_PASSAGE = 3
MANGROVE_QUESTION = "What do the school children plant along the lagoon?"
MANGROVE_PASSAGE = 6


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def client(tmp_path_factory, engines_cache, llm_url):
    async with running_app(tmp_path_factory.mktemp("gw-flow"), engines_cache, llm_url=llm_url) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def uploaded(client, sample_bytes):
    response = await client.post("/v1/media", headers=AUTH, **multipart("island.mp4", sample_bytes, title="Island"))
    assert response.status_code == 202, response.text
    return response.json()


def sse_events(body: str) -> list[dict]:
    events = []
    for block in body.strip().split("\n\n"):
        if all(line.startswith(":") for line in block.splitlines()):
            continue  # keep-alive comment
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        assert lines.get("event") == "job", block
        events.append(json.loads(lines["data"]))
    return events


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def finished(client, uploaded):
    response = await client.get(uploaded["events_url"], headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return sse_events(response.text)


async def test_upload_answers_202_with_media_and_job(uploaded, sample_bytes):
    # ids are content hashes: the CLI's media id for the same bytes
    assert uploaded["media_id"] == uploaded["job_id"] == media_id_for(hashlib.sha256(sample_bytes).hexdigest())
    assert uploaded["job_url"] == f"/v1/jobs/{uploaded['job_id']}" and uploaded["existing"] is False


async def test_sse_shows_progress_up_to_succeeded(finished):
    progress = [e["progress"] for e in finished]
    assert finished[-1]["phase"] == "Succeeded", finished[-1]
    assert any(0 < p < 1 for p in progress) and progress[-1] == 1.0
    assert progress == sorted(progress), "progress never goes back"
    running_stages = {e["stage"] for e in finished if e["phase"] == "Running"}
    assert {"probe", "transcribe", "embed", "summarize"} <= running_stages
    conditions = {c["type"]: c for c in finished[-1]["conditions"]}
    assert list(conditions) == [s.name for s in STAGES]
    assert all(c["status"] == "True" for c in conditions.values())


async def test_job_reads_back_with_outputs(client, uploaded, finished):
    job = (await client.get(uploaded["job_url"], headers=AUTH)).json()
    assert job["phase"] == "Succeeded" and job["progress"] == 1.0 and job["title"] == "Island"
    assert job["outputs"]["transcript_vtt"] == f"/v1/media/{uploaded['media_id']}/transcript?format=vtt"
    listed = (await client.get("/v1/jobs", headers=AUTH)).json()["items"]
    assert [j["id"] for j in listed] == [uploaded["job_id"]]


async def test_media_view(client, uploaded, finished, sample_video):
    media = (await client.get(f"/v1/media/{uploaded['media_id']}", headers=AUTH)).json()
    assert media["title"] == "Island" and media["has_video"]
    assert abs(media["duration"] - sample_video.duration) < 1.0
    assert media["stages_done"] == [s.name for s in STAGES]


async def test_transcript_in_every_format(client, uploaded, finished, sample_video):
    base = f"/v1/media/{uploaded['media_id']}/transcript"
    transcript = (await client.get(base, headers=AUTH)).json()
    segments = transcript["segments"]
    assert "lighthouse" in " ".join(s["text"] for s in segments).lower()
    expected = [(round(s["start"], 3), round(s["end"], 3), s["text"].strip()) for s in segments]
    for fmt, mime in (("srt", "application/x-subrip"), ("vtt", "text/vtt")):
        response = await client.get(base, params={"format": fmt}, headers=AUTH)
        assert response.headers["content-type"].startswith(mime)
        cues = parse_cues(response.text)
        assert [(round(c.start, 3), round(c.end, 3), c.text) for c in cues] == expected
    assert (await client.get(base, params={"format": "vtt"}, headers=AUTH)).text.startswith("WEBVTT")
    txt = (await client.get(base, params={"format": "txt"}, headers=AUTH)).text
    assert txt.splitlines() == [s["text"].strip() for s in segments]


async def test_search_finds_the_phrase_at_the_right_time(client, uploaded, finished, sample_video):
    spoken = sample_video.passages[LIGHTHOUSE_PASSAGE]
    moment = (spoken.start + spoken.end) / 2
    body = (await client.post("/v1/search", headers=AUTH, json={"query": LIGHTHOUSE_QUERY, "top_k": 3})).json()
    top = body["hits"][0]
    assert top["media_id"] == uploaded["media_id"] and top["title"] == "Island"
    assert top["start"] <= moment <= top["end"], (top, moment)
    # the deep link lands where the phrase is said, not at the chunk's start
    assert abs(top["seek"] - spoken.start) < 1.0, (top["seek"], spoken.start)
    assert top["link"] == f"/media/{uploaded['media_id']}#t={top['seek']:.2f}"
    scoped = await client.post("/v1/search", headers=AUTH,
                               json={"query": LIGHTHOUSE_QUERY, "media_id": uploaded["media_id"], "top_k": 1})
    assert scoped.json()["hits"][0]["chunk"] == top["chunk"]


async def test_ask_answers_citing_the_time(client, uploaded, finished, sample_video):
    body = (await client.post("/v1/ask", headers=AUTH, json={"question": MANGROVE_QUESTION})).json()
    passage = sample_video.passages[MANGROVE_PASSAGE]
    assert body["grounded"] is True and "mangrove" in body["answer"].lower(), body
    first = body["citations"][0]
    assert first["start"] <= passage.start + 1 and passage.start - 1 <= first["end"], (first, passage)
    # the deep link plays from the supporting sentence ("School children plant mangrove trees …")
    assert abs(first["seek"] - passage.start) < 1.0, (first, passage)
    assert first["link"] == f"/media/{uploaded['media_id']}#t={first['seek']:.2f}"
    assert "mangrove" in first["quote"].lower()
    kept = [s for s in body["sentences"] if s["kept"]]
    assert kept and all(s["score"] >= body["min_similarity"] and s["coverage"] >= body["min_coverage"]
                        and s["citations"] for s in kept), body
    assert body["dropped"] == len(body["sentences"]) - len(kept)
    assert "[" not in body["answer"]  # the model's markers are not in the text; ``citations`` numbers them


async def test_ask_a_question_the_recording_does_not_answer(client, uploaded, finished):
    body = (await client.post("/v1/ask", headers=AUTH, json={"question": "What is the capital of France?"})).json()
    assert body["grounded"] is False and body["citations"] == [], body
    assert body["answer"] == "The recordings do not answer this question."


async def test_summary(client, uploaded, finished):
    summary = (await client.get(f"/v1/media/{uploaded['media_id']}/summary", headers=AUTH)).json()
    assert summary["markdown"].startswith("# Island") and len(summary["text"].split()) >= 5
    assert summary["model"] == "smollm2"


async def test_stream_serves_ranges_with_a_key_or_a_signed_url(client, uploaded, finished, sample_bytes):
    media = (await client.get(f"/v1/media/{uploaded['media_id']}", headers=AUTH)).json()
    stream = f"/v1/media/{uploaded['media_id']}/stream"
    part = await client.get(stream, headers={**AUTH, "Range": "bytes=100-1123"})
    assert part.status_code == 206 and part.content == sample_bytes[100:1124]
    assert part.headers["content-range"] == f"bytes 100-1123/{len(sample_bytes)}"
    assert part.headers["content-type"] == "video/mp4"
    assert part.headers["content-disposition"] == f'inline; filename="{uploaded["media_id"]}.mp4"'
    whole = await client.get(media["stream_url"])  # signed: no key, as a <video> element does
    assert whole.status_code == 200 and whole.content == sample_bytes
    assert whole.headers["accept-ranges"] == "bytes"
    assert (await client.get(stream)).status_code == 401
    assert (await client.get(media["stream_url"].replace("sig=", "sig=0"))).status_code == 401
    tail = await client.get(stream, headers={**AUTH, "Range": f"bytes={len(sample_bytes)}-"})
    assert tail.status_code == 416


async def test_url_source_that_is_not_allowed_fails_the_job_clearly(client):
    response = await client.post("/v1/media", headers=AUTH, json={"url": "http://localhost:9/talk.mp4", "title": "x"})
    assert response.status_code == 202
    events = sse_events((await client.get(response.json()["events_url"], headers=AUTH)).text)
    job = events[-1]
    assert job["phase"] == "Failed" and "not a public address" in job["message"]
    assert job["conditions"][0]["type"] == "probe" and job["conditions"][0]["status"] == "False"


async def test_the_same_bytes_again_are_the_same_media_not_processed_again(client, uploaded, finished, sample_bytes):
    backend = client.app.state.backend
    jobs_before = (await client.get("/v1/jobs", headers=AUTH)).json()["items"]
    job_before = (await client.get(uploaded["job_url"], headers=AUTH)).json()
    points = indexed_points(client.app)
    assert points > 0
    source = backend.store.path(uploaded["media_id"], "source.mp4")
    written = backend.store.fs.info(source)["mtime"]

    again = await client.post("/v1/media", headers=AUTH, **multipart("copy.mp4", sample_bytes, title="Copy"))
    assert again.status_code == 200, again.text
    assert again.json() == {**uploaded, "existing": True}
    assert (await client.get("/v1/jobs", headers=AUTH)).json()["items"] == jobs_before
    assert (await client.get(uploaded["job_url"], headers=AUTH)).json() == job_before  # not run again
    assert indexed_points(client.app) == points  # not indexed twice
    assert backend.store.fs.info(source)["mtime"] == written and staged_uploads(client.app) == []
    assert (await client.get(f"/v1/media/{uploaded['media_id']}", headers=AUTH)).json()["title"] == "Island"


async def test_delete_removes_everything(client, uploaded, finished):
    media_id = uploaded["media_id"]
    store_dir = os.path.join(client.app.state.backend.store.root, "media", media_id)
    assert os.path.isdir(store_dir)
    assert (await client.delete(f"/v1/media/{media_id}", headers=AUTH)).status_code == 204
    assert not os.path.exists(store_dir)
    for path in (f"/v1/media/{media_id}", f"/v1/media/{media_id}/transcript", f"/v1/jobs/{media_id}"):
        assert (await client.get(path, headers=AUTH)).status_code == 404, path
    hits = (await client.post("/v1/search", headers=AUTH, json={"query": LIGHTHOUSE_QUERY})).json()["hits"]
    assert all(h["media_id"] != media_id for h in hits)
    assert client.app.state.backend.pipeline.index().count(media_id) == 0
