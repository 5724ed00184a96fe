"""Deep links into the sentence: on real models, a recording of three passages with 2.5 s
pauses between them is chunked at the pauses, and every hit's ``seek`` (computed once, in
``Pipeline.search``) is the start of the sentence that answers the query, inside the passage
that says it: through the pipeline, ``mediaflow search --json``, and for points indexed
before chunks recorded their sentences (the transcript is the fallback)."""

from __future__ import annotations

import json

import pytest
import qdrant_edge as qe

from mediaflow.models import ChunkSet, EmbeddingSet
from mediaflow.pipeline import Pipeline
from mediaflow.samples import PASSAGES, make_sample
from mediaflow.stores import vector as vector_store
from mediaflow.subtitles import mmss
from tests.conftest import engines_for, make_settings
from tests.core.test_cli import run_cli

pytestmark = pytest.mark.slow

# (query, passage, a word of the transcript sentence that answers it)
QUERIES = [
    ("the weather report on an old radio", 0, "radio"),
    ("how many flowers does a bee visit in one afternoon", 1, "flowers"),
    ("who climbs the long stairs to clean the lighthouse glass", 2, "stairs"),
]
EARLY = 0.5  # word times may start this much before the synthesized passage


@pytest.fixture(scope="module")
def paused(tmp_path_factory, engines_cache):
    """The three passages, 2.5 s apart, processed; the pipeline is closed again (the embedded
    index allows one process at a time: the CLI opens it next)."""
    directory = tmp_path_factory.mktemp("paused")
    sample = make_sample(directory / "three.wav", passages=PASSAGES[1:4], gap_seconds=2.5, video=False)
    settings = make_settings(directory / "data", summary=False)
    with Pipeline(settings, engines=engines_for(settings, engines_cache)) as pipeline:
        media_id = pipeline.process(sample.media, title="Three passages").media_id
        transcript = pipeline.transcript(media_id)
        chunks = pipeline.store.read_model(media_id, "chunks.json", ChunkSet)
    return settings, sample, media_id, transcript, chunks


def _sentence_start(transcript, word: str) -> float:
    [segment] = [s for s in transcript.segments if word in s.text.lower()]
    return segment.start


def _inside(seek: float, passage) -> bool:
    return passage.start - EARLY <= seek <= passage.end


def test_chunks_never_span_the_pauses(paused):
    _, sample, _, _, chunks = paused
    assert chunks.pause_seconds == 1.5
    for chunk in chunks.chunks:
        spoken = [p for p in sample.passages if chunk.start < p.end and p.start - EARLY < chunk.end]
        assert len(spoken) == 1, (chunk.start, chunk.end, chunk.text)
        assert chunk.sentences and chunk.sentences[0].start == chunk.start
        assert chunk.sentences[-1].end == chunk.end
        assert chunk.text == " ".join(s.text for s in chunk.sentences)


@pytest.mark.parametrize("query,passage,word", QUERIES)
def test_the_top_hit_seeks_to_the_sentence_inside_its_passage(paused, engines_cache, query, passage, word):
    settings, sample, media_id, transcript, _ = paused
    with Pipeline(settings, engines=engines_for(settings, engines_cache)) as pipeline:
        hits = pipeline.search(query, top_k=3)
    top = hits[0]
    assert top.media_id == media_id and top.start <= top.seek < top.end
    assert _inside(top.seek, sample.passages[passage]), (query, top, sample.passages[passage])
    assert top.seek == _sentence_start(transcript, word), (query, top.seek, transcript.segments)
    assert all(h.start <= h.seek < h.end for h in hits)


def test_cli_search_json_and_text_show_the_seek(paused):
    settings, sample, media_id, transcript, _ = paused
    for query, passage, word in QUERIES:
        proc = run_cli(settings.data_dir, "search", query, "--json", "--top-k", "2")
        assert proc.returncode == 0, proc.stderr
        top = json.loads(proc.stdout)[0]
        assert top.keys() == {"media_id", "title", "chunk", "start", "end", "text", "score", "model", "seek"}
        assert top["model"] == "all-MiniLM-L6-v2"  # English media: the English embedder scored it
        assert top["media_id"] == media_id
        assert _inside(top["seek"], sample.passages[passage]), (query, top)
        assert top["seek"] == _sentence_start(transcript, word)
    query, _, word = QUERIES[1]
    text = run_cli(settings.data_dir, "search", query, "--top-k", "1")
    assert text.returncode == 0, text.stderr
    assert f"▶ {mmss(_sentence_start(transcript, word))} [" in text.stdout, text.stdout


def test_points_indexed_before_sentences_seek_from_the_transcript(paused, engines_cache):
    # an index written by an earlier version: the same chunks, no sentences in the payload
    settings, sample, media_id, transcript, chunks = paused
    with Pipeline(settings, engines=engines_for(settings, engines_cache)) as pipeline:
        vectors = pipeline.store.read_model(media_id, "embeddings.json", EmbeddingSet).vectors
        legacy = pipeline.index("legacy")
        ids = legacy.upsert(media_id, chunks.chunks, vectors)
        # the same points again, written straight to the embedded shard with an earlier
        # version's payload (no "sentences")
        legacy._edge.upsert("legacy", [
            qe.Point(id=point, vector=[float(x) for x in vector], payload={
                key: value for key, value in vector_store._payload(media_id, None, chunk).items()
                if key != "sentences"})
            for point, vector, chunk in zip(ids, vectors, chunks.chunks, strict=True)
        ])
        assert legacy.count(media_id) == len(chunks.chunks)
        for query, passage, word in QUERIES:
            [top] = pipeline.search(query, top_k=1, collection="legacy")
            assert top.sentences == []
            assert top.seek == _sentence_start(transcript, word), (query, top)
            assert _inside(top.seek, sample.passages[passage])
