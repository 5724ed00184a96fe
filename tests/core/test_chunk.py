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
