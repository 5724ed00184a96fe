"""The whole pipeline on real models: process, search at the right time, ask, resume, delete."""

from __future__ import annotations

import json

import pytest

from mediaflow.models import ChunkSet, IndexRecord, Transcript
from mediaflow.pipeline import Pipeline
from mediaflow.stages import STAGES
from mediaflow.subtitles import parse_cues
from tests.conftest import engines_for, make_settings

pytestmark = pytest.mark.llm

# (query, index of the passage that answers it) — see mediaflow.samples.PASSAGES
QUERIES = [
    ("who cleans the glass of the lighthouse every evening", 3),
    ("planting mangroves to protect the shore from storms", 6),
    ("fishermen loading nets before sunrise", 1),
    ("earthquakes under the old volcano", 5),
]


@pytest.fixture(scope="module")
def processed(tmp_path_factory, engines_cache, sample_video, llm_url):
    settings = make_settings(tmp_path_factory.mktemp("pipeline"), llm_url=llm_url)
    pipeline = Pipeline(settings, engines=engines_for(settings, engines_cache))
    events = []
    result = pipeline.process(sample_video.media, title="Island", on_event=events.append)
    yield pipeline, result, events
    pipeline.close()


def test_every_stage_ran_and_reported_progress(processed):
    pipeline, result, events = processed
    assert [name for name in result.timings] == [s.name for s in STAGES]
    assert all(status == "done" for status, _ in result.timings.values())
    assert any(e.status == "progress" and 0 < e.fraction < 1 for e in events if e.stage == "transcribe")


def test_outputs_have_the_documented_shapes(processed):
    pipeline, result, _ = processed
    store, media = pipeline.store, result.media_id
    raw = json.loads(store.read_text(media, "transcript.json"))
    assert {"language", "duration", "segments"} <= raw.keys()
    assert {"start", "end", "text", "words"} <= raw["segments"][0].keys()
    transcript = Transcript.model_validate(raw)
    for fmt in ("srt", "vtt"):
        cues = parse_cues(store.read_text(media, f"transcript.{fmt}"))
        assert [(round(c.start, 3), round(c.end, 3), c.text) for c in cues] == [
            (round(s.start, 3), round(s.end, 3), s.text) for s in transcript.segments
        ]
    assert store.read_text(media, "transcript.txt").count("\n") == len(transcript.segments)
    summary = store.read_text(media, "summary.md")
    assert summary.startswith("# Island") and "## Summary" in summary
    body = summary.split("## Summary", 1)[1].split("## Outline", 1)[0].strip()
    assert len(body.split()) >= 5, body
    assert "[00:00]" in summary  # outline with deep-linkable times


@pytest.mark.parametrize("query,passage", QUERIES)
def test_search_top_hit_contains_the_time_the_phrase_was_spoken(processed, sample_video, query, passage):
    pipeline, result, _ = processed
    spoken = sample_video.passages[passage]
    moment = (spoken.start + spoken.end) / 2
    hits = pipeline.search(query, top_k=3)
    assert hits, "no hits"
    top = hits[0]
    assert top.media_id == result.media_id
    assert top.start <= moment <= top.end, (query, top.start, top.end, moment)
    assert top.score >= hits[-1].score


def test_ask_answers_with_a_citation_of_the_right_time(processed, sample_video):
    pipeline, _, _ = processed
    answer = pipeline.ask("What do the school children plant along the lagoon?")
    assert "mangrove" in answer.answer.lower()
    passage = sample_video.passages[6]
    assert any(c.start <= passage.start + 1 and passage.start - 1 <= c.end for c in answer.citations[:1])
    assert "[01:0" in answer.answer or "[01:1" in answer.answer  # cites ~01:02


def test_rerun_resumes_and_never_duplicates_points(processed, sample_video):
    pipeline, result, _ = processed
    before = pipeline.index().count(result.media_id)
    chunks = pipeline.store.read_model(result.media_id, "chunks.json", ChunkSet)
    assert before == len(chunks.chunks) > 0
    again = pipeline.process(sample_video.media, title="Island")
    assert again.media_id == result.media_id
    statuses = {name: status for name, (status, _) in again.timings.items()}
    assert all(statuses[s.name] == "cached" for s in STAGES[1:])
    assert pipeline.index().count(result.media_id) == before


def test_crash_mid_pipeline_resumes_from_the_last_valid_artifact(processed, sample_video):
    pipeline, result, _ = processed
    store, media = pipeline.store, result.media_id
    before = pipeline.index().count(media)
    # a crash while writing the index record, and a torn embeddings file
    store.delete(media, "index.json")
    store.write_text(media, "embeddings.json", '{"model": "x", "dim": 3, "vec')
    again = pipeline.process(sample_video.media, title="Island")
    statuses = {name: status for name, (status, _) in again.timings.items()}
    assert statuses["transcribe"] == "cached" and statuses["chunk"] == "cached"
    assert statuses["embed"] == "done" and statuses["index"] == "done"
    assert pipeline.index().count(media) == before
    record = store.read_model(media, "index.json", IndexRecord)
    assert record.points == before and len(set(record.point_ids)) == before


def test_delete_removes_artifacts_and_points(tmp_path, engines_cache, sample_video):
    settings = make_settings(tmp_path / "data", summary=False)
    with Pipeline(settings, engines=engines_for(settings, engines_cache)) as pipeline:
        result = pipeline.process(sample_video.media)
        assert pipeline.index().count(result.media_id) > 0
        assert pipeline.delete(result.media_id)
        assert pipeline.index().count(result.media_id) == 0
        assert pipeline.index().count() == 0
        assert pipeline.list_media() == []
        assert pipeline.search("lighthouse") == []


def test_long_transcripts_are_summarized_map_reduce(processed, llm_url):
    from mediaflow.engines.openai_chat import OpenAIChatModel
    from mediaflow.stages.summarize import _groups, summarize

    pipeline, result, _ = processed
    transcript = pipeline.transcript(result.media_id)
    groups = _groups(transcript, max_tokens=120)
    assert len(groups) >= 3
    assert " ".join(groups) == " ".join(s.text.strip() for s in transcript.segments)
    chat = OpenAIChatModel(llm_url, "smollm2", repetition_penalty=1.15)
    text, calls = summarize(chat, transcript, prompt=None, max_tokens=60, group_tokens=120)
    assert calls == len(groups) + 1
    assert len(text.split()) >= 5
