"""Retrieval for non-English media (issue 15 item 2), on real models and espeak speech:
German media are embedded with USE-multilingual v3 into their own collection, English media
stay on all-MiniLM-L6-v2; questions in English and in German find the German passage, with
``seek`` inside it; a library of both is searched as one; deleting clears both collections."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from mediaflow import grounding
from mediaflow.engines import Engines, collection_for
from mediaflow.engines.use_embedder import UniversalSentenceEncoder, load_model
from mediaflow.models import Chunk, ChunkSet, EmbeddingSet, IndexRecord, Segment, Transcript
from mediaflow.pipeline import Pipeline
from mediaflow.samples import PASSAGES as ENGLISH_PASSAGES
from mediaflow.samples import make_sample
from mediaflow.spec import MediaJobSpec
from mediaflow.stages import embed as embed_stage
from mediaflow.stages.context import StageContext
from mediaflow.stores import ArtifactStore
from tests.conftest import engines_for, make_settings
from tests.multilingual import QUERIES, speak_passages

pytestmark = pytest.mark.slow

USE = "use-multilingual-v3"
MINILM = "all-MiniLM-L6-v2"
BASE = "mediaflow"
USE_COLLECTION = f"{BASE}-{USE}"
EARLY = 0.5  # word times may start this much before the synthesized passage
# English passages of other topics than the German ones (kitchen, volcano, mangroves)
ENGLISH = ENGLISH_PASSAGES[4:7]
ENGLISH_QUERIES = [
    ("the bread goes into a large stone oven", "Das Brot kommt in einen großen Steinofen", 0),
    ("scientists measure small earthquakes under the old volcano",
     "Wissenschaftler messen kleine Erdbeben unter dem alten Vulkan", 1),
]


@pytest.fixture(scope="module")
def library(tmp_path_factory, engines_cache):
    """One German and one English recording (three passages each, 2.5 s apart), processed."""
    folder = tmp_path_factory.mktemp("multilingual")
    german = speak_passages("de", folder / "hafen.wav")
    english = make_sample(folder / "kitchen.wav", passages=ENGLISH, gap_seconds=2.5, video=False)
    settings = make_settings(folder / "data", summary=False)
    with Pipeline(settings, engines=engines_for(settings, engines_cache)) as pipeline:
        de_id = pipeline.process(str(folder / "hafen.wav"), title="Hafen").media_id
        en_id = pipeline.process(english.media, title="Kitchen").media_id
    return settings, {"de": (de_id, german), "en": (en_id, english.passages)}


def open_pipeline(settings, engines_cache) -> Pipeline:
    return Pipeline(settings, engines=engines_for(settings, engines_cache))


def inside(seek: float, passage) -> bool:
    return passage.start - EARLY <= seek <= passage.end


# -- the engine ------------------------------------------------------------------------
def test_use_gives_unit_vectors_of_512_dimensions_that_match_across_languages():
    use = UniversalSentenceEncoder(threads=2)
    english = ["The lighthouse keeper cleans the lamp every morning.", "Bees visit hundreds of flowers.",
               "The bread is baked in a stone oven."]
    german = ["Der Leuchtturmwärter putzt jeden Morgen die Lampe.", "Bienen besuchen Hunderte von Blumen.",
              "Das Brot wird in einem Steinofen gebacken."]
    en, de = np.asarray(use.embed(english)), np.asarray(use.embed(german))
    assert en.shape == (3, 512) and use.dim == 512 and use.name == USE
    assert np.allclose(np.linalg.norm(en, axis=1), 1.0, atol=1e-5)
    similarity = de @ en.T
    assert list(similarity.argmax(axis=1)) == [0, 1, 2], similarity  # each finds its translation
    assert use.count_tokens(german[:1]) == len(use.tokenizer.encode(german[:1])[0]) > 5
    ids = use.tokenizer.encode(german[:1], add_bos=False, add_eos=False)[0]
    assert use.detokenize([ids]) == german[:1]


def test_use_loads_once_and_is_safe_from_many_threads():
    first, second = UniversalSentenceEncoder(threads=2), UniversalSentenceEncoder(threads=2)
    assert first.model is second.model is load_model(2)
    texts = [f"Satz Nummer {n} über den Hafen und die Fischer." for n in range(40)]
    expected = np.asarray(first.embed(texts))
    results, errors = {}, []

    def work(n: int) -> None:
        try:
            results[n] = np.asarray((first if n % 2 else second).embed(texts[n:] + texts[:n]))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n, got in results.items():
        assert np.allclose(got, np.roll(expected, -n, axis=0), atol=1e-5)


def test_the_language_picks_the_embedder_and_its_collection(engines_cache, tmp_path):
    engines = engines_for(make_settings(tmp_path), engines_cache)
    assert engines.embedder_for("en") is engines.embedder and engines.embedder.name == MINILM
    for language in ("de", "es", "zh", "sw"):  # sw: not a USE language, still USE (beats MiniLM)
        assert engines.embedder_for(language) is engines.multilingual_embedder
        assert engines.collection_for(BASE, language) == USE_COLLECTION
    assert engines.multilingual_embedder.name == USE and engines.multilingual_embedder.dim == 512
    assert engines.collection_for(BASE, "en") == BASE == collection_for(BASE, None)
    assert [name for name, _ in engines.embedders("talks")] == ["talks", f"talks-{USE}"]

    off = Engines(make_settings(tmp_path, multilingual_embedder="none"))
    off.__dict__["embedder"] = engines_cache.embedder
    assert off.embedder_for("de") is off.embedder and off.collection_for(BASE, "de") == BASE
    assert [name for name, _ in off.embedders(BASE)] == [BASE]


def test_a_language_use_was_not_trained_on_is_embedded_with_it_and_noted(engines_cache, tmp_path, caplog):
    settings = make_settings(tmp_path / "data", summary=False)
    store = ArtifactStore(settings.artifacts_uri)
    text = "Watoto wa shule hupanda miti ya mikoko kando ya ziwa kila mwaka."
    store.write_model("sw0001", "transcript.json", Transcript(
        language="sw", duration=5.0, segments=[Segment(start=0.0, end=5.0, text=text)]))
    store.write_model("sw0001", "chunks.json", ChunkSet(
        media_id="sw0001", window_seconds=15, overlap_seconds=3, chunks=[Chunk(index=0, start=0, end=5, text=text)]))
    spec = MediaJobSpec.model_validate({"source": {"uri": "/x.wav"}})
    ctx = StageContext(media_id="sw0001", spec=spec, settings=settings, store=store,
                       engines=engines_for(settings, engines_cache))
    with caplog.at_level(logging.WARNING, logger="mediaflow.stages.embed"):
        record = embed_stage.run(ctx)
    assert (record.model, record.dim, record.language, record.collection) == (USE, 512, "sw", USE_COLLECTION)
    assert "Swahili" in caplog.text and "was not trained on" in caplog.text


# -- the pipeline ----------------------------------------------------------------------------
def test_german_media_go_to_the_multilingual_collection(library, engines_cache):
    settings, media = library
    de_id, _ = media["de"]
    with open_pipeline(settings, engines_cache) as pipeline:
        assert pipeline.transcript(de_id).language == "de"
        embeddings = pipeline.store.read_model(de_id, "embeddings.json", EmbeddingSet)
        record = pipeline.store.read_model(de_id, "index.json", IndexRecord)
        chunks = pipeline.store.read_model(de_id, "chunks.json", ChunkSet)
        assert (embeddings.model, embeddings.dim, embeddings.collection) == (USE, 512, USE_COLLECTION)
        assert (record.collection, record.model, record.points) == (USE_COLLECTION, USE, len(chunks.chunks))
        assert pipeline.index(USE_COLLECTION).count(de_id) == len(chunks.chunks) >= 3
        assert pipeline.index(BASE).count(de_id) == 0
        assert pipeline.points(de_id) == len(chunks.chunks)
        listed = {m["media_id"]: m for m in pipeline.list_media()}
        assert (listed[de_id]["collection"], listed[de_id]["points"]) == (USE_COLLECTION, len(chunks.chunks))
        ctx = pipeline.context(de_id, pipeline.spec_for(de_id))
        assert ctx.media_embedder.name == USE and ctx.embedding_collection == USE_COLLECTION


def test_english_media_still_use_minilm(library, engines_cache):
    settings, media = library
    en_id, _ = media["en"]
    with open_pipeline(settings, engines_cache) as pipeline:
        embeddings = pipeline.store.read_model(en_id, "embeddings.json", EmbeddingSet)
        record = pipeline.store.read_model(en_id, "index.json", IndexRecord)
        assert (embeddings.model, embeddings.dim, embeddings.collection) == (MINILM, 384, BASE)
        assert (record.collection, record.model) == (BASE, MINILM)
        assert pipeline.index(BASE).count(en_id) == record.points > 0
        assert pipeline.index(USE_COLLECTION).count(en_id) == 0
        hits = pipeline.search("the bread goes into a large stone oven", media_id=en_id, top_k=2)
        assert {h.model for h in hits} == {MINILM}
        # the score is MiniLM's cosine of the query and the chunk
        query, chunk = grounding.embed(engines_cache.embedder, ["the bread goes into a large stone oven", hits[0].text])
        assert abs(hits[0].score - float(query @ chunk)) < 1e-3


@pytest.mark.parametrize("asked_in", ["en", "de"])
@pytest.mark.parametrize("english,german,passage", QUERIES["de"])
def test_a_question_in_english_or_german_finds_the_german_passage(library, engines_cache, english, german,
                                                                  passage, asked_in):
    settings, media = library
    de_id, timeline = media["de"]
    query = english if asked_in == "en" else german
    with open_pipeline(settings, engines_cache) as pipeline:
        scoped = pipeline.search(query, media_id=de_id, top_k=3)
        everywhere = pipeline.search(query, top_k=3)
    assert {h.model for h in scoped} == {USE}
    for hits in (scoped, everywhere):
        top = hits[0]
        assert top.media_id == de_id, (query, hits)
        assert top.start <= top.seek < top.end
        assert inside(top.start, timeline[passage]) and inside(top.seek, timeline[passage]), (query, top, timeline)


def test_a_library_of_english_and_german_media_is_searched_as_one(library, engines_cache):
    settings, media = library
    (de_id, german), (en_id, english) = media["de"], media["en"]
    with open_pipeline(settings, engines_cache) as pipeline:
        for english_query, german_query, passage in ENGLISH_QUERIES:
            for query in (english_query, german_query):  # a German question about English speech too
                hits = pipeline.search(query, top_k=6)
                assert hits[0].media_id == en_id and inside(hits[0].seek, english[passage]), (query, hits)
        for english_query, _, passage in QUERIES["de"]:
            hits = pipeline.search(english_query, top_k=6)
            assert hits[0].media_id == de_id and inside(hits[0].seek, german[passage]), (english_query, hits)
            # both media's chunks, ranked on one scale: USE's cosine, in order
            assert {h.media_id for h in hits} == {de_id, en_id}
            assert {h.model for h in hits} == {USE}
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
            assert {h.indexed_with for h in hits} == {USE, MINILM}


def test_an_answer_about_german_media_is_checked_with_their_embedder(library, engines_cache):
    """The support check compares the answer with the German excerpts by USE (MiniLM would
    miss the paraphrase); a sentence the excerpts do not say is dropped."""
    settings, media = library
    de_id, timeline = media["de"]
    with open_pipeline(settings, engines_cache) as pipeline:
        hits = pipeline.search("Wer putzt das Glas des Leuchtturms?", media_id=de_id, top_k=2)
        embedder = pipeline.answer_embedder(hits)
        assert embedder.name == USE
        english_hits = pipeline.search("the bread goes into a stone oven", media_id=media["en"][0], top_k=2)
        assert pipeline.answer_embedder(english_hits).name == MINILM
        assert pipeline.answer_embedder(hits + english_hits).name == USE  # mixed: the one reading both
    # the first sentence is in the excerpt (as Whisper wrote it: espeak's "Leuchtturmwärter"
    # comes out mangled), the second is invented
    raw = ("Jeden Abend steigt er die lange Treppe, um das Glas zu putzen und die Lampe anzuzünden. [1] "
           "Am Nachmittag verkauft er frischen Fisch auf dem Markt. [1]")
    answer = grounding.ground_answer("Wer putzt das Glas?", raw, hits, embedder,
                                     min_similarity=settings.grounding_min_similarity,
                                     min_coverage=settings.grounding_min_coverage)
    kept = [s for s in answer.support if s.kept]
    assert answer.grounded and [s.text for s in kept] == [answer.support[0].text], [s.model_dump() for s in answer.support]
    assert not answer.support[1].kept
    assert answer.citations[0].media_id == de_id and inside(answer.citations[0].seek, timeline[2])


def test_reprocessing_moves_points_between_collections_and_delete_clears_both(tmp_path, engines_cache):
    """Indexed with MiniLM (multilingual off), then with USE: the old points leave the base
    collection. Deleting removes the media's points wherever they are."""
    german = tmp_path / "leuchtturm.wav"
    speak_passages("de", german, passages=None)
    english = make_sample(tmp_path / "kitchen.wav", passages=ENGLISH[:1], gap_seconds=1.0, video=False)
    off = make_settings(tmp_path / "data", summary=False, multilingual_embedder="none")
    with open_pipeline(off, engines_cache) as pipeline:
        de_id = pipeline.process(str(german)).media_id
        assert pipeline.index(BASE).count(de_id) > 0 and pipeline.index(USE_COLLECTION).count(de_id) == 0
    on = make_settings(tmp_path / "data", summary=False)
    with open_pipeline(on, engines_cache) as pipeline:
        result = pipeline.process(str(german))
        assert result.media_id == de_id
        assert result.timings["transcribe"][0] == "cached" and result.timings["embed"][0] == "done"
        assert pipeline.index(BASE).count(de_id) == 0 and pipeline.index(USE_COLLECTION).count(de_id) > 0
        en_id = pipeline.process(english.media).media_id
        assert pipeline.index(BASE).count(en_id) > 0
        assert pipeline.delete(de_id) and pipeline.delete(en_id)
        assert pipeline.index(BASE).count() == 0 and pipeline.index(USE_COLLECTION).count() == 0
        assert pipeline.search("the lighthouse keeper", top_k=3) == []
