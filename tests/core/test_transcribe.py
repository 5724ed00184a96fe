"""WhisperX on the bundled tiny.en model, against speech of known text."""

import difflib
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


# -- the engine's cheaper steps give WhisperX's numbers --------------------------------------
@pytest.fixture(scope="module")
def wav_16k(tmp_path_factory, sample_video):
    wav = tmp_path_factory.mktemp("asr16") / "audio.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", sample_video.media, "-ac", "1", "-ar", "16000",
                    "-c:a", "pcm_s16le", str(wav)], check=True)
    return wav


def test_a_16k_wav_is_read_as_ffmpeg_decodes_it(wav_16k, tmp_path):
    import numpy as np
    import whisperx

    from mediaflow.engines.whisperx_transcriber import load_audio, read_wav_16k_mono

    read = read_wav_16k_mono(wav_16k)
    assert read is not None and read.dtype == np.float32
    assert np.array_equal(read, whisperx.load_audio(str(wav_16k)))
    # cut inside a sample, after a header that promises more: what ffmpeg decodes of it, too
    data = wav_16k.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 3 + 1])
    assert np.array_equal(read_wav_16k_mono(cut), whisperx.load_audio(str(cut)))
    # any other file is ffmpeg's: another rate, another codec, not a WAV
    other = tmp_path / "22k.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav_16k), "-ar", "22050", str(other)], check=True)
    floats = tmp_path / "f32.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav_16k), "-c:a", "pcm_f32le", str(floats)], check=True)
    assert read_wav_16k_mono(other) is None and read_wav_16k_mono(floats) is None
    assert np.array_equal(load_audio(other), whisperx.load_audio(str(other)))
    garbage = tmp_path / "notes.wav"
    garbage.write_bytes(b"RIFF" + b"\x13" * 4000)
    assert read_wav_16k_mono(garbage) is None


def test_chunk_features_are_whisperx_log_mel_bit_for_bit(wav_16k):
    """The features skip the STFT of the zeros padding a chunk to 30 s: they must still be
    exactly WhisperX's, for every length a VAD chunk can have, silence included."""
    import numpy as np
    import torch
    from whisperx.audio import N_SAMPLES, log_mel_spectrogram

    from mediaflow.engines.whisperx_transcriber import load_audio, log_mel_features

    audio = load_audio(wav_16k)
    noise = np.random.default_rng(7).standard_normal(N_SAMPLES).astype(np.float32) * 0.05
    chunks = [audio[16000:16000 + n] for n in (320_000, 160_001, 12_345, 1_600, 401, N_SAMPLES - 1, N_SAMPLES)]
    chunks += [noise[:200_000], np.zeros(48_000, np.float32)]
    lengths = np.random.default_rng(11).integers(1, N_SAMPLES, 40)
    chunks += [audio[int(n) // 2:int(n) // 2 + int(n)] for n in lengths if n // 2 + n <= len(audio)]
    for chunk in chunks:
        expected = log_mel_spectrogram(chunk, n_mels=80, padding=N_SAMPLES - len(chunk))
        got = log_mel_features(chunk, 80)
        assert got.shape == expected.shape == (80, 3000)
        assert torch.equal(got, expected), (len(chunk), float((got - expected).abs().max()))


def test_chunks_and_text_are_whisperx_own(wav_16k):
    """The engine's batched transcription against WhisperX's own pipeline (``whisperx.load_model``,
    its FasterWhisperPipeline and pyannote VAD) on the same audio: the same VAD chunks and the
    same text in each, given WhisperX's 30 s encoder window (the default window is the chunk
    ceiling: see test_the_chunk_ceiling_window_keeps_the_words_and_their_times)."""
    import whisperx

    from mediaflow.engines.whisper_models import bundled_english_model
    from mediaflow.engines.whisperx_transcriber import WhisperXTranscriber, load_audio

    audio = load_audio(wav_16k)
    engine = WhisperXTranscriber(bundled_english_model(), vad="pyannote", word_timestamps=False,
                                 encoder_window_seconds=30)
    ours = engine.transcribe_array(audio, language="en")
    pipeline = whisperx.load_model(bundled_english_model(), "cpu", compute_type="int8", language="en",
                                   threads=2, vad_method="pyannote", vad_options={"chunk_size": 20.0},
                                   asr_options={"beam_size": 5})
    theirs = pipeline.transcribe(audio, batch_size=8, language="en", chunk_size=20.0)["segments"]
    assert ours.word_timing == "none"
    assert len(theirs) > 3
    assert [(s.start, s.end, s.text) for s in ours.segments] == [
        (s["start"], s["end"], s["text"].strip()) for s in theirs if s["text"].strip()]


def test_vad_chunks_merge_as_whisperx_merges_them():
    """``merge_vad_chunks`` against WhisperX's ``Vad.merge_chunks`` on speech of every shape:
    short and long segments, one longer than a chunk, gaps."""
    import random

    from whisperx.diarize import Segment as VadSegment
    from whisperx.vads.vad import Vad

    from mediaflow.engines.whisperx_transcriber import merge_vad_chunks

    rng = random.Random(7)
    for _ in range(200):
        t, speech = rng.uniform(0, 3), []
        for _ in range(rng.randint(1, 40)):
            length = rng.choice([rng.uniform(0.2, 4), rng.uniform(4, 25)])
            speech.append((round(t, 3), round(t + length, 3)))
            t += length + rng.uniform(0.05, 3)
        size = rng.choice([10.0, 20.0, 30.0])
        theirs = Vad.merge_chunks([VadSegment(a, b, "UNKNOWN") for a, b in speech], size, 0.5, 0.363)
        assert merge_vad_chunks(speech, size) == [(m["start"], m["end"]) for m in theirs]
    assert merge_vad_chunks([], 20.0) == []


def test_the_engine_loads_without_transformers_or_pyannote():
    """Building the engine (Silero VAD) imports neither transformers' pipelines nor pyannote,
    which WhisperX's asr module pulls in (seconds of a run's start): only alignment,
    diarization or the pyannote VAD bring them."""
    import sys

    code = (
        "import sys\n"
        "from mediaflow.engines.whisper_models import bundled_english_model\n"
        "from mediaflow.engines.whisperx_transcriber import WhisperXTranscriber\n"
        "engine = WhisperXTranscriber(bundled_english_model())\n"
        "print(sorted(m for m in ('transformers', 'pyannote.audio', 'whisperx.asr', 'lightning') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# -- the encoder window and the workers -------------------------------------------------------
def _passage_start_errors(transcript, sample) -> list[float]:
    words = [w for s in transcript.segments for w in s.words]
    errors = []
    for passage in sample.passages:
        first = passage.text.split()[0].strip(".,").lower()
        starts = [w.start for w in words if w.word.strip(".,").lower() == first]
        errors.append(min((abs(t - passage.start) for t in starts), default=float("inf")))
    return errors


def test_the_chunk_ceiling_window_keeps_the_words_and_their_times(wav_16k, sample_video):
    """The encoder sees the VAD's chunk ceiling (20 s), not WhisperX's 30 s: as many words
    right, and every passage's first word as close to where it is spoken."""
    from mediaflow.engines.whisper_models import bundled_english_model
    from mediaflow.engines.whisperx_transcriber import WhisperXTranscriber, load_audio

    ceiling = WhisperXTranscriber(bundled_english_model())
    whisper = WhisperXTranscriber(bundled_english_model(), encoder_window_seconds=30)
    assert ceiling.encoder_frames(12.0) == 2002 and ceiling.encoder_frames(20.0) == 2002
    assert ceiling.encoder_frames(25.0) == 2502  # a longer chunk (pyannote's) is never cut
    assert whisper.encoder_frames(12.0) == 3000 and ceiling.encoder_frames(40.0) == 3000
    audio = load_audio(wav_16k)
    widths: list[int] = []
    encode = ceiling.model.encode
    ceiling.model.encode = lambda features, *a, **k: widths.append(features.shape[-1]) or encode(features, *a, **k)
    short, full = ceiling.transcribe_array(audio, language="en"), whisper.transcribe_array(audio, language="en")
    assert widths and set(widths) == {2002}  # what the encoder was given
    assert wer(sample_video.text, short.text) <= min(0.15, wer(sample_video.text, full.text) + 0.03), short.text
    for mine, theirs in zip(_passage_start_errors(short, sample_video), _passage_start_errors(full, sample_video),
                            strict=True):
        assert mine <= 1.5 and mine <= theirs + 0.5, (mine, theirs)


def test_batches_side_by_side_give_the_text_and_times_of_one_at_a_time(wav_16k):
    """Two CTranslate2 workers of one thread each decode two batches at once: the transcript is
    the one a single worker of two threads makes, and progress still rises to the end."""
    from mediaflow.engines.whisper_models import bundled_english_model
    from mediaflow.engines.whisperx_transcriber import WhisperXTranscriber, load_audio

    audio = load_audio(wav_16k)
    one = WhisperXTranscriber(bundled_english_model(), threads=2, workers=1, batch_size=2)
    two = WhisperXTranscriber(bundled_english_model(), threads=2, batch_size=2)
    assert (one.workers, two.workers) == (1, 2)
    seen: list[float] = []
    a = one.transcribe_array(audio, language="en")
    b = two.transcribe_array(audio, language="en", on_progress=seen.append)
    assert len(one.vad.chunks(audio)) >= 4  # several batches, so both workers had one
    # the same text (seen here: identical); a batch put back out of order would not be near it.
    # Batches of other sizes pad differently, which another CPU's kernels might round apart.
    assert wer(a.text, b.text) <= 0.02, (a.text, b.text)
    words_a = [w for s in a.segments for w in s.words]
    words_b = [w for s in b.segments for w in s.words]
    matcher = difflib.SequenceMatcher(a=[w.word for w in words_a], b=[w.word for w in words_b], autojunk=False)
    pairs = [(words_a[block.a + k], words_b[block.b + k]) for block in matcher.get_matching_blocks()
             for k in range(block.size)]
    assert len(pairs) >= 0.98 * len(words_a)
    assert max(abs(x.start - y.start) for x, y in pairs) <= 0.1
    assert seen == sorted(seen) and len(seen) >= 4 and seen[-1] == 1.0


def test_decode_batches_keep_every_worker_busy_to_the_last_round():
    from mediaflow.engines.whisperx_transcriber import decode_batches

    def sizes(*args):
        bounds = decode_batches(*args)
        assert [lo for lo, _ in bounds] == [0] + [hi for _, hi in bounds[:-1]]  # contiguous, in order
        return [hi - lo for lo, hi in bounds]

    assert sizes(33, 8, 2) == [6, 6, 6, 5, 5, 5]  # 3 rounds of 2 (not 5 batches, the last alone)
    assert sizes(16, 8, 2) == [8, 8] and sizes(3, 8, 2) == [2, 1] and sizes(1, 8, 2) == [1]
    assert sizes(17, 8, 1) == [6, 6, 5] and sizes(8, 8, 1) == [8]
    assert decode_batches(0, 8, 2) == []
