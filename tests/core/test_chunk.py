import pytest

from mediaflow.models import Segment, Transcript, Word
from mediaflow.stages.chunk import chunk_transcript


def _transcript(spans: list[tuple[float, float, str]]) -> Transcript:
    return Transcript(
        language="en",
        duration=spans[-1][1],
        segments=[Segment(start=a, end=b, text=t) for a, b, t in spans],
    )


def test_windows_cover_every_sentence_in_order_with_times():
    spans = [(i * 5.0, i * 5.0 + 4.5, f"sentence {i}.") for i in range(12)]
    chunks = chunk_transcript(_transcript(spans), window_seconds=15, overlap_seconds=5)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    covered = " ".join(c.text for c in chunks)
    for i in range(12):
        assert f"sentence {i}." in covered
    for c in chunks:
        assert c.start < c.end
    # windows reach the target length (but the last) and overlap by whole sentences
    assert all(c.end - c.start >= 15 for c in chunks[:-1])
    assert chunks[1].start < chunks[0].end
    assert chunks[-1].end == spans[-1][1]


def test_long_segment_is_split_at_word_times():
    words = [Word(word=f"w{i}", start=i * 1.0, end=i * 1.0 + 0.8) for i in range(40)]
    seg = Segment(start=0, end=39.8, text=" ".join(w.word for w in words), words=words)
    transcript = Transcript(language="en", duration=40, segments=[seg])
    chunks = chunk_transcript(transcript, window_seconds=10, overlap_seconds=0)
    assert len(chunks) >= 4
    assert all(c.end - c.start <= 20 for c in chunks)
    assert chunks[0].text.startswith("w0 w1")


def test_empty_transcript_gives_no_chunks():
    assert chunk_transcript(Transcript(language="en", duration=1, segments=[]),
                            window_seconds=10, overlap_seconds=2) == []


def test_overlap_must_be_shorter_than_window():
    with pytest.raises(ValueError):
        chunk_transcript(_transcript([(0, 1, "a")]), window_seconds=5, overlap_seconds=5)


def _gaps(chunk) -> list[float]:
    return [b.start - a.end for a, b in zip(chunk.sentences, chunk.sentences[1:], strict=False)]


def test_a_pause_always_ends_a_chunk_and_overlap_never_crosses_it():
    # three passages of six 2 s sentences (0.3 s apart), 2.5 s of silence between passages
    spans, clock = [], 0.0
    for p in range(3):
        for s in range(6):
            spans.append((clock, clock + 2.0, f"passage {p} sentence {s}."))
            clock += 2.3
        clock += 2.5 - 0.3
    passage_of = {t: int(t.split()[1]) for _, _, t in spans}
    chunks = chunk_transcript(_transcript(spans), window_seconds=8, overlap_seconds=3, pause_seconds=1.5)
    for c in chunks:
        assert len({passage_of[s.text] for s in c.sentences}) == 1, c  # never spans a pause
        assert all(gap < 1.5 for gap in _gaps(c))
    # within a passage windows overlap; the first chunk after a pause starts at the passage
    firsts = [next(c for c in chunks if c.sentences[0].text == f"passage {p} sentence 0.") for p in range(3)]
    for p, first in enumerate(firsts[1:], start=1):
        before = chunks[first.index - 1]
        assert passage_of[before.sentences[-1].text] == p - 1
        assert before.sentences[-1].text == f"passage {p - 1} sentence 5."  # ended at the pause
    assert any(a.end > b.start for a, b in zip(chunks, chunks[1:], strict=False))  # overlap
    covered = [s.text for c in chunks for s in c.sentences]
    assert all(t in covered for _, _, t in spans)
    # without a pause rule the same transcript has chunks across the silences
    merged = chunk_transcript(_transcript(spans), window_seconds=8, overlap_seconds=3)
    assert any(len({passage_of[s.text] for s in c.sentences}) > 1 for c in merged)


def test_chunks_end_at_sentences_and_record_them():
    spans = [(0.0, 4.0, "One sentence."), (4.2, 9.0, "Another one."), (9.1, 16.5, "A third one.")]
    [first, *_] = chunks = chunk_transcript(_transcript(spans), window_seconds=8, overlap_seconds=0,
                                            pause_seconds=1.5)
    assert [(s.start, s.end, s.text) for s in first.sentences] == spans[:2]
    assert first.text == "One sentence. Another one." and (first.start, first.end) == (0.0, 9.0)
    assert [c.text for c in chunks] == ["One sentence. Another one.", "A third one."]


def test_a_change_of_speaker_ends_a_chunk():
    segs = [Segment(start=i * 2.0, end=i * 2.0 + 1.8, text=f"line {i}.", speaker=who)
            for i, who in enumerate(["A", "A", None, "A", "B", "B", None, "A"])]
    transcript = Transcript(language="en", duration=16, segments=segs)
    chunks = chunk_transcript(transcript, window_seconds=60, overlap_seconds=5, pause_seconds=1.5)
    # a segment without a speaker belongs to the voice before it
    assert [[s.text for s in c.sentences] for c in chunks] == [
        ["line 0.", "line 1.", "line 2.", "line 3."], ["line 4.", "line 5.", "line 6."], ["line 7."]]


def test_languages_without_spaces_join_without_them():
    segs = [Segment(start=0, end=2, text="今天天气很好。"), Segment(start=2.2, end=4, text="我们去海边。")]
    chunks = chunk_transcript(Transcript(language="zh", duration=4, segments=segs),
                              window_seconds=15, overlap_seconds=3, pause_seconds=1.5)
    assert [c.text for c in chunks] == ["今天天气很好。我们去海边。"]
    # an over-long segment split at word times joins its words the same way
    words = [Word(word=ch, start=i * 0.5, end=i * 0.5 + 0.4) for i, ch in enumerate("一二三四五六七八九十" * 4)]
    long = Segment(start=0, end=words[-1].end, text="".join(w.word for w in words), words=words)
    pieces = chunk_transcript(Transcript(language="ja", duration=20, segments=[long]),
                              window_seconds=5, overlap_seconds=0, pause_seconds=1.5)
    assert len(pieces) >= 3 and all(" " not in c.text for c in pieces)
    assert "".join(c.text for c in pieces) == long.text
    english = chunk_transcript(_transcript([(0, 1, "Hello."), (1.1, 2, "World.")]),
                               window_seconds=15, overlap_seconds=3)
    assert english[0].text == "Hello. World."
