"""A German upload through the API (issue 15 item 2): processed with no language given, its
chunks embedded by USE-multilingual v3 into their own collection; search in English and in
German deep-links into the right passage; ask keeps only what the excerpts support, checked
with USE, as the summary is; deleting the media clears its collection."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from mediaflow.models import IndexRecord, SummaryRecord, Transcript
from tests.gateway.conftest import AUTH, multipart, running_app
from tests.multilingual import QUERIES, speak_passages

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.llm, pytest.mark.slow]

USE_COLLECTION = "mediaflow-use-multilingual-v3"
EARLY = 0.5


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def german(tmp_path_factory, engines_cache, llm_url):
    folder = tmp_path_factory.mktemp("gw-german")
    wav = folder / "hafen.wav"
    timeline = speak_passages("de", wav)
    async with running_app(folder / "data", engines_cache, llm_url=llm_url) as client:
        response = await client.post("/v1/media", headers=AUTH, **multipart("hafen.wav", wav.read_bytes(), title="Hafen"))
        assert response.status_code == 202, response.text
        created = response.json()
        events = await client.get(created["events_url"], headers=AUTH)
        assert '"phase":"Succeeded"' in events.text.replace(" ", ""), events.text[-800:]
        yield client, created["media_id"], timeline


def inside(seconds: float, passage) -> bool:
    return passage.start - EARLY <= seconds <= passage.end


async def test_the_upload_is_detected_as_german_and_indexed_by_use(german):
    client, media_id, _ = german
    media = (await client.get(f"/v1/media/{media_id}", headers=AUTH)).json()
    assert media["language"] == "de"
    pipeline = client.app.state.backend.pipeline
    record = pipeline.store.read_model(media_id, "index.json", IndexRecord)
    assert (record.collection, record.model) == (USE_COLLECTION, "use-multilingual-v3")
    with client.app.state.backend.index_lock:
        assert pipeline.index(USE_COLLECTION).count(media_id) == record.points > 0
        assert pipeline.index().count(media_id) == 0


@pytest.mark.parametrize("asked_in", ["en", "de"])
@pytest.mark.parametrize("english,german_query,passage", QUERIES["de"])
async def test_search_in_english_or_german_links_into_the_passage(german, english, german_query, passage, asked_in):
    client, media_id, timeline = german
    query = english if asked_in == "en" else german_query
    for scope in ({}, {"media_id": media_id}):
        response = await client.post("/v1/search", headers=AUTH, json={"query": query, "top_k": 3, **scope})
        assert response.status_code == 200, response.text
        top = response.json()["hits"][0]
        assert top["media_id"] == media_id and inside(top["seek"], timeline[passage]), (query, top, timeline)
        assert top["link"] == f"/media/{media_id}#t={top['seek']:.2f}"


async def test_ask_about_german_media_keeps_only_what_the_excerpts_support_by_use(german):
    """SmolLM2-135M writes poor German (seen: "Die Lechte würde es möglichkeitlich ..."), so the
    answer may well be "not answered"; what must hold: the answer's sentences were checked
    against the German excerpts with USE (each figure is USE's cosine of the sentence and its
    source), only supported ones survive, and citations point into the German media."""
    client, media_id, timeline = german
    response = await client.post("/v1/ask", headers=AUTH, json={
        "question": "Was macht der Leuchtturmwärter jeden Abend?", "media_id": media_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sentences"], body  # the model said something, and it was checked
    use = client.app.state.backend.pipeline.engines.multilingual_embedder
    for sentence in body["sentences"]:
        vectors = np.asarray(use.embed([sentence["text"], sentence["source"]]))
        assert abs(float(vectors[0] @ vectors[1]) - sentence["score"]) < 1e-3, sentence
        assert sentence["kept"] == (sentence["score"] >= body["min_similarity"]
                                    and sentence["coverage"] >= body["min_coverage"])
    if body["grounded"]:
        assert body["citations"] and all(c["media_id"] == media_id for c in body["citations"])
        assert any(inside(c["seek"], p) for c in body["citations"] for p in timeline)
    else:
        assert body["answer"] == "The recordings do not answer this question." and body["citations"] == []


async def test_the_summary_is_written_from_and_checked_against_the_german_transcript(german):
    client, media_id, timeline = german
    record = client.app.state.backend.pipeline.store.read_model(media_id, "summary.json", SummaryRecord)
    assert record is not None and record.method in ("condensed", "extractive", "mixed")
    assert record.sentences and all(timeline[0].start - EARLY <= s.start <= timeline[-1].end for s in record.sentences)
    # the key sentences it condensed are the German transcript's own (which of them the
    # LLM's sentences survive the check varies with the transcript's exact words)
    transcript = client.app.state.backend.pipeline.store.read_model(media_id, "transcript.json", Transcript)
    said = " ".join(" ".join(s.text.split()) for s in transcript.segments)
    assert record.key_sentences and all(" ".join(k.text.split()) in said for k in record.key_sentences)
    keys = " ".join(k.text for k in record.key_sentences)
    assert sum(w in keys for w in ("Hafen", "Radio", "Bienen", "Treppe", "Lampe", "Mangroven")) >= 2, keys


async def test_deleting_the_media_clears_its_collection(german):
    client, media_id, _ = german
    response = await client.delete(f"/v1/media/{media_id}", headers=AUTH)
    assert response.status_code in (200, 204), response.text
    pipeline = client.app.state.backend.pipeline
    with client.app.state.backend.index_lock:
        assert pipeline.index(USE_COLLECTION).count() == 0 and pipeline.index().count() == 0
    hits = (await client.post("/v1/search", headers=AUTH, json={"query": "Leuchtturm"})).json()["hits"]
    assert hits == []
