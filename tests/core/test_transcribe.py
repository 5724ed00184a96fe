"""WhisperX on the bundled tiny.en model, against speech of known text."""

import subprocess

import pytest

from tests.conftest import wer


@pytest.fixture(scope="module")
def transcript(engines_cache, sample_video, tmp_path_factory):
    wav = tmp_path_factory.mktemp("asr") / "audio.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", sample_video.media, "-ac", "1", "-ar", "16000",
                    str(wav)], check=True)
    return engines_cache.transcriber.transcribe(wav, language="en")


def test_word_error_rate_is_within_bound(transcript, sample_video):
    assert transcript.language == "en"
    assert wer(sample_video.text, transcript.text) <= 0.15


def test_word_times_come_from_alignment_and_are_monotonic(transcript):
    assert transcript.word_timing == "attention"
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) > 100
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(w.end >= w.start for w in words)
    for seg in transcript.segments:
        assert seg.start <= seg.words[0].start and seg.words[-1].end <= seg.end + 1e-6


def test_each_passage_starts_where_it_was_spoken(transcript, sample_video):
    """Deep links need times accurate to a second: the first word of each passage
    must be found within 1.5 s of where the passage starts in the file."""
    words = [w for s in transcript.segments for w in s.words]
    for passage in sample_video.passages:
        first = passage.text.split()[0].strip(".,").lower()
        nearest = min(
            (w for w in words if w.word.strip(".,").lower() == first),
            key=lambda w: abs(w.start - passage.start),
            default=None,
        )
        assert nearest is not None, f"{first!r} not transcribed"
        assert abs(nearest.start - passage.start) <= 1.5, (first, nearest.start, passage.start)


def test_segments_are_sentence_sized(transcript):
    assert max(s.end - s.start for s in transcript.segments) <= 15
