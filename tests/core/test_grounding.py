"""The support check, sentence splitting and key-sentence selection (mediaflow.grounding), on the
real embedder; the support check also on a real answer of the real LLM."""

from __future__ import annotations

import pytest

from mediaflow import grounding
from mediaflow.config import Settings
from mediaflow.models import SearchHit, Segment, Sentence, Transcript, Word
from mediaflow.pipeline import answer_prompt
from mediaflow.samples import PASSAGES

DEFAULTS = Settings()
THRESHOLDS = {"min_similarity": DEFAULTS.grounding_min_similarity,
              "min_coverage": DEFAULTS.grounding_min_coverage}
INVENTED = "They also use solar power at night."
PARAPHRASE = "The children plant mangroves along the lagoon."


@pytest.fixture(scope="module")
def embedder(engines_cache):
    return engines_cache.embedder


def script_sentences() -> list[grounding.SourceSentence]:
    """The sample's script as timed sentences (times: passage order), no ASR involved."""
    out = []
    for n, passage in enumerate(PASSAGES):
        for k, text in enumerate(grounding.split_sentences(passage)):
            out.append(grounding.SourceSentence(text, 10.0 * n + k, 10.0 * n + k + 1, "script"))
    return out


def test_sentences_end_at_full_stops_line_breaks_and_cjk_marks():
    text = "**Summary:** The keeper climbs 3.5 km of stairs. He cleans the glass!\n- Fishermen load nets\n- 2. Bees"
    assert grounding.split_sentences(text) == [
        "Summary: The keeper climbs 3.5 km of stairs.", "He cleans the glass!", "Fishermen load nets", "Bees"]
    # no spaces after 。！？ (Chinese, Japanese): still sentence ends
    assert grounding.split_sentences("孩子们种植红树林。树根保护海岸！为什么？") == ["孩子们种植红树林。", "树根保护海岸！", "为什么？"]
    assert grounding.split_sentences("子供たちはマングローブを植えます。「根が岸を守る。」") == [
        "子供たちはマングローブを植えます。", "「根が岸を守る。」"]


def test_transcript_sentences_follow_the_words_across_segments():
    words = [("School", 1.0), ("children", 1.4), ("plant", 1.9), ("mangroves.", 2.3), ("The", 3.0),
             ("roots", 3.3)]
    seg1 = Segment(start=1.0, end=3.5, text="School children plant mangroves. The roots",
                   words=[Word(word=w, start=t, end=t + 0.3) for w, t in words])
    seg2 = Segment(start=4.0, end=6.0, text="protect the shore.",
                   words=[Word(word=w, start=t, end=t + 0.3) for w, t in (("protect", 4.0), ("the", 4.5), ("shore.", 5.0))])
    seg3 = Segment(start=7.0, end=11.0, text="At night it is dark. Visitors come.")  # no word times
    transcript = Transcript(language="en", duration=12, segments=[seg1, seg2, seg3])
    sentences = grounding.transcript_sentences(transcript, "m")
    assert [s.text for s in sentences] == [
        "School children plant mangroves.", "The roots protect the shore.", "At night it is dark.", "Visitors come."]
    assert (sentences[0].start, sentences[0].end) == pytest.approx((1.0, 2.6))
    assert (sentences[1].start, sentences[1].end) == pytest.approx((3.0, 5.3))  # spans two segments
    assert sentences[2].start == 7.0 and 7.0 < sentences[3].start < 11.0
    assert sentences[3].end == pytest.approx(11.0)
    zh = Transcript(language="zh", duration=3, segments=[Segment(start=0, end=2, text="孩子们种树。", words=[
        Word(word="孩子们", start=0, end=1), Word(word="种树。", start=1, end=2)])])
    assert [s.text for s in grounding.transcript_sentences(zh)] == ["孩子们种树。"]  # no space inserted


def test_an_unpunctuated_transcript_has_its_segments_as_sentences():
    # Whisper sometimes writes no punctuation at all: the cues are the sentences then
    segments = [Segment(start=0.9, end=13.4, text="honey bees keep the orchard alive a single hive can fold"),
                Segment(start=13.4, end=19.5, text="the long stairs every evening to clean the glass")]
    transcript = Transcript(language="en", duration=20, segments=segments)
    assert [(s.text, s.start, s.end) for s in grounding.transcript_sentences(transcript)] == [
        (seg.text, seg.start, seg.end) for seg in segments]


def test_the_models_markers_are_parsed_and_removed():
    raw = "Children plant mangroves [1]. [2] The roots protect the shore [3, 9] [01:05]. [Excerpt 2]\nBees."
    assert grounding.answer_sentences(raw, excerpts=3) == [
        ("Children plant mangroves.", [1, 2]), ("The roots protect the shore.", [3, 2]), ("Bees.", [])]


def test_an_invented_sentence_is_dropped_and_a_paraphrase_kept(embedder):
    sources = script_sentences()
    text = f"School children plant mangrove trees along the lagoon. {INVENTED} {PARAPHRASE}"
    support = grounding.check_support(grounding.split_sentences(text), sources, embedder, **THRESHOLDS)
    assert [s.kept for s in support] == [True, False, True], support
    verbatim, invented, paraphrase = support
    assert verbatim.score > 0.99 and verbatim.source == "School children plant mangrove trees along the lagoon."
    assert invented.score < THRESHOLDS["min_similarity"] or invented.coverage < THRESHOLDS["min_coverage"]
    assert paraphrase.source == verbatim.source and (paraphrase.start, paraphrase.end) == (verbatim.start, verbatim.end)
    assert paraphrase.media_id == "script"


@pytest.mark.llm
def test_invented_sentences_appended_to_a_real_answer_are_dropped(embedder, llm_url):
    """A real answer of the real LLM, with an invented sentence and a supported paraphrase
    appended: the check drops the one and keeps the other, whatever the model wrote."""
    from mediaflow.engines.openai_chat import OpenAIChatModel

    passage = PASSAGES[6]
    hits = [SearchHit(media_id="m", chunk=0, start=60.0, end=72.0, text=passage, score=0.9,
                      sentences=[Sentence(start=60.0, end=65.0, text=grounding.split_sentences(passage)[0]),
                                 Sentence(start=65.0, end=72.0, text=grounding.split_sentences(passage)[1])])]
    question = "What do the school children plant along the lagoon?"
    chat = OpenAIChatModel(llm_url, "smollm2", repetition_penalty=DEFAULTS.llm_repetition_penalty)
    raw = chat.complete(answer_prompt(question, hits), max_tokens=120)
    answer = grounding.ground_answer(question, f"{raw}\n{INVENTED}\n{PARAPHRASE} [1]", hits, embedder, **THRESHOLDS)
    by_text = {s.text: s for s in answer.support}
    assert by_text[INVENTED].kept is False, by_text[INVENTED]
    assert by_text[PARAPHRASE].kept is True and by_text[PARAPHRASE].cited == [1]
    assert INVENTED not in answer.answer and PARAPHRASE in answer.answer
    assert answer.grounded and [c.excerpt for c in answer.citations] == [1]
    assert by_text[PARAPHRASE].start == 60.0  # the mangrove sentence supports it, not the roots one
    for s in answer.support:
        assert s.kept == (s.score >= THRESHOLDS["min_similarity"] and s.coverage >= THRESHOLDS["min_coverage"])
    assert answer.dropped == sum(not s.kept for s in answer.support) >= 1


def test_an_answer_with_nothing_supported_says_so_without_citations(embedder):
    hits = [SearchHit(media_id="m", chunk=0, start=0.0, end=9.0, text=PASSAGES[3], score=0.5)]
    answer = grounding.ground_answer("What is the capital of France?", "The capital of France is Paris [1].",
                                     hits, embedder, **THRESHOLDS)
    assert answer.answer == grounding.NOT_ANSWERED and not answer.grounded
    assert answer.citations == [] and answer.dropped == 1 and answer.support[0].cited == [1]
    nothing = grounding.ground_answer("Anything?", "", [], embedder, **THRESHOLDS)
    assert nothing.answer == grounding.NOTHING_INDEXED and not nothing.grounded and nothing.citations == []


def test_a_cited_excerpt_counts_only_when_it_supports_the_sentence(embedder):
    mangroves = SearchHit(media_id="m", chunk=6, start=60.0, end=72.0, text=PASSAGES[6], score=0.9)
    lighthouse = SearchHit(media_id="m", chunk=3, start=30.0, end=40.0, text=PASSAGES[3], score=0.4)
    raw = "School children plant mangrove trees along the lagoon [1][2]."
    answer = grounding.ground_answer("What is planted?", raw, [mangroves, lighthouse], embedder, **THRESHOLDS)
    assert [c.excerpt for c in answer.citations] == [1]  # [2] was cited, but says nothing of it
    assert answer.support[0].cited == [1, 2] and answer.support[0].citations == [1]


def test_key_sentences_are_central_diverse_and_in_time_order(embedder):
    sources = script_sentences()
    vectors = grounding.embed(embedder, [s.text for s in sources])
    picked = grounding.select_key_sentences(vectors, 6)
    assert picked == sorted(picked) and len(set(picked)) == 6
    passages = {int(sources[i].start // 10) for i in picked}
    assert len(passages) >= 5, [sources[i].text for i in picked]  # spread over the topics
    assert grounding.select_key_sentences(vectors, 100) == list(range(len(sources)))
    assert grounding.select_key_sentences(vectors[:0], 3) == []
