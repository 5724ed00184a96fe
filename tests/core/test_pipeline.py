"""The whole pipeline on real models: process, search at the right time, ask, resume, delete."""

from __future__ import annotations

import json

import pytest

from mediaflow.models import ChunkSet, IndexRecord, Transcript
from mediaflow.pipeline import Pipeline
from mediaflow.stages import STAGES
from mediaflow.subtitles import mmss, parse_cues
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
    pipeline, result, _ = processed
    answer = pipeline.ask("What do the school children plant along the lagoon?")
    assert answer.grounded and "mangrove" in answer.answer.lower(), answer
    said = sample_video.passages[6].start  # "School children plant mangrove trees along the lagoon."
    assert any(c.start <= said + 0.5 and said - 0.5 <= c.end for c in answer.citations), answer.citations
    mangrove = next(c for c in answer.citations if "mangrove" in (c.quote or "").lower())
    assert abs(mangrove.seek - said) < 1.0 and mangrove.media_id == result.media_id
    assert "[" not in answer.answer  # the model's markers are removed; citations are data


def test_answers_keep_only_supported_sentences_and_cite_only_given_excerpts(processed):
    pipeline, _, _ = processed
    s = pipeline.settings
    for question in ("What do the school children plant along the lagoon?",
                     "Who cleans the glass of the lighthouse?", "What do fishermen do before sunrise?"):
        hits = pipeline.search(question, top_k=4)
        answer = pipeline.answer(question, hits)
        assert (answer.min_similarity, answer.min_coverage) == (s.grounding_min_similarity, s.grounding_min_coverage)
        assert answer.excerpts == len(hits)
        for sentence in answer.support:
            assert sentence.kept == (sentence.score >= s.grounding_min_similarity
                                     and sentence.coverage >= s.grounding_min_coverage), sentence
            assert all(1 <= n <= len(hits) for n in sentence.cited)
        kept = [x for x in answer.support if x.kept]
        assert answer.dropped == len(answer.support) - len(kept)
        assert answer.grounded == bool(kept)
        # every citation is one of the excerpts given, quoting one of its sentences; each kept
        # sentence has one, and nothing else is cited
        given = {(h.media_id, h.start, h.end, h.text) for h in hits}
        for c in answer.citations:
            assert (c.media_id, c.start, c.end, c.text) in given
            assert hits[c.excerpt - 1].text == c.text and c.quote and c.start - 0.05 <= c.seek <= c.end
        assert all(x.citations for x in kept)
        assert sorted({n for x in kept for n in x.citations}) == list(range(1, len(answer.citations) + 1))
        if not kept:
            assert answer.answer == "The recordings do not answer this question." and answer.citations == []


def test_a_question_the_recording_does_not_answer(processed):
    pipeline, _, _ = processed
    answer = pipeline.ask("What is the capital of France?")
    assert answer.answer == "The recordings do not answer this question."
    assert not answer.grounded and answer.citations == [] and answer.dropped >= 1


def test_the_summary_says_only_what_the_transcript_says(processed):
    from mediaflow import grounding
    from mediaflow.models import SummaryRecord

    pipeline, result, _ = processed
    s, media = pipeline.settings, result.media_id
    record = pipeline.store.read_model(media, "summary.json", SummaryRecord)
    assert record.method in ("condensed", "extractive", "mixed")
    assert (record.min_similarity, record.min_coverage) == (s.grounding_min_similarity, s.grounding_min_coverage)
    transcript = pipeline.transcript(media)
    said = grounding.transcript_sentences(transcript, media)
    assert record.transcript_sentences == len(said)
    assert 1 <= len(record.key_sentences) <= s.summary_key_sentences
    assert [k.start for k in record.key_sentences] == sorted(k.start for k in record.key_sentences)
    assert {k.text for k in record.key_sentences} <= {x.text for x in said}
    for sentence in record.support:
        assert sentence.kept == (sentence.score >= s.grounding_min_similarity
                                 and sentence.coverage >= s.grounding_min_coverage), sentence
    assert record.dropped == sum(not x.kept for x in record.support)
    kept = [x.text for x in record.support if x.kept]
    if record.method == "extractive":  # every LLM sentence dropped: the key sentences as said
        assert [x.text for x in record.sentences] == [k.text for k in record.key_sentences]
    else:
        assert set(kept) <= {x.text for x in record.sentences}
    assert record.text == grounding.join_sentences([x.text for x in record.sentences])
    markdown = pipeline.store.read_text(media, "summary.md")
    for x in record.sentences:  # each summary sentence with the time of what it rests on
        assert f"- {x.text} [{mmss(x.start)}]" in markdown


def test_summary_verify_refuses_unchecked_and_stale_records(processed):
    from mediaflow.models import SummaryRecord
    from mediaflow.stages import STAGE_BY_NAME

    pipeline, result, _ = processed
    media = result.media_id
    stage = STAGE_BY_NAME["summarize"]
    ctx = pipeline.context(media, pipeline.spec_for(media))
    record = pipeline.store.read_model(media, "summary.json", SummaryRecord)
    assert pipeline.completed(media, stage, ctx)
    assert not stage.verify(ctx, record.model_copy(update={"method": "unchecked"}))
    assert not stage.verify(ctx, record.model_copy(update={"transcript_sentences": record.transcript_sentences + 1}))
    # a summary.json written before the support check (no figures) parses, and runs again
    old = SummaryRecord.model_validate({"model": "smollm2", "text": "x", "map_calls": 1})
    assert old.method == "unchecked" and not stage.verify(ctx, old)


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


def test_many_key_sentences_are_condensed_in_runs(processed, llm_url):
    from mediaflow.engines.openai_chat import OpenAIChatModel
    from mediaflow.stages.summarize import summarize

    pipeline, result, _ = processed
    transcript = pipeline.transcript(result.media_id)
    s = pipeline.settings
    chat = OpenAIChatModel(llm_url, "smollm2", repetition_penalty=1.15)
    record = summarize(chat, pipeline.engines.embedder, transcript, prompt=None, max_tokens=60,
                       group_tokens=40, key_sentences=8, min_similarity=s.grounding_min_similarity,
                       min_coverage=s.grounding_min_coverage)
    # 8 key sentences in runs of at most ~160 characters: several calls, none over a summary
    assert len(record.key_sentences) == 8 and record.map_calls >= 3
    assert len(record.text.split()) >= 5
    assert all(x.kept == (x.score >= s.grounding_min_similarity and x.coverage >= s.grounding_min_coverage)
               for x in record.support)
