"""The transcription app under Ray Serve, spoken to with the official openai client and
with Mediaflow's remote engine."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from mediaflow.engines.remote import RemoteTranscriber
from mediaflow.errors import EngineRequestError
from mediaflow.models import Transcript
from mediaflow.subtitles import parse_cues
from tests.conftest import wer
from tests.serving.conftest import MAX_UPLOAD_BYTES

MAX_WER = 0.15


@pytest.fixture(scope="module")
def client(transcription_url) -> OpenAI:
    return OpenAI(base_url=f"{transcription_url}/v1", api_key="not-needed", max_retries=0, timeout=300)


def spoken_text(result, response_format: str) -> str:
    if response_format == "json":
        return result.text
    if response_format == "verbose_json":
        return Transcript.model_validate(result.model_dump()).text
    if response_format in ("srt", "vtt"):
        cues = parse_cues(result)
        assert cues, f"no cues in the {response_format} answer"
        return " ".join(c.text for c in cues)
    return result


@pytest.mark.parametrize("response_format", ["json", "verbose_json", "text", "srt", "vtt"])
def test_transcription_matches_the_script_in_every_format(client, speech, response_format):
    with open(speech.media, "rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=audio, language="en", response_format=response_format
        )
    text = spoken_text(result, response_format)
    assert wer(speech.text, text) <= MAX_WER, text


def test_verbose_json_has_word_times_near_the_passages(client, speech):
    with open(speech.media, "rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1", file=audio, language="en", response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    transcript = Transcript.model_validate(result.model_dump())
    assert abs(transcript.duration - speech.duration) < 0.5
    assert result.words and all(w.start <= w.end for w in result.words)
    # the first word of each passage is heard within 1.5 s of when it was spoken
    for passage in speech.passages:
        first = passage.text.split()[0].lower()
        starts = [w.start for w in result.words if w.word.lower().strip(".,") == first]
        assert any(abs(s - passage.start) < 1.5 for s in starts), (first, passage.start, starts)


def test_remote_engine_reads_the_artifact_store(transcription_url, speech, artifact_root):
    stored = artifact_root / "media" / "m1" / "audio.wav"
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(speech.media, stored)
    engine = RemoteTranscriber(transcription_url, retries=0)
    transcript = engine.transcribe_uri(str(stored), language="en")
    assert wer(speech.text, transcript.text) <= MAX_WER
    assert transcript.word_timing == "attention"


def test_artifact_uris_outside_the_root_are_refused(transcription_url, speech):
    engine = RemoteTranscriber(transcription_url, retries=0)
    with pytest.raises(EngineRequestError, match="403.*outside the allowed artifact root"):
        engine.transcribe_uri(speech.media)
    with pytest.raises(EngineRequestError, match="403"):
        engine.transcribe_uri("/etc/../etc/passwd")


def test_bad_audio_is_a_400_with_a_reason(client, tmp_path):
    with pytest.raises(openai.BadRequestError, match="not a readable media file"):
        client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"RIFF" + b"\x13" * 4000))
    silent_video = tmp_path / "no-audio.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=5:duration=1",
                    "-c:v", "libx264", str(silent_video)], check=True)
    with pytest.raises(openai.BadRequestError, match="no audio stream"):
        client.audio.transcriptions.create(model="whisper-1", file=silent_video)


def test_oversized_upload_is_a_413(client, transcription_url):
    too_big = b"\0" * (MAX_UPLOAD_BYTES + 1)
    with pytest.raises(openai.APIStatusError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=("long.wav", too_big))
    assert refused.value.status_code == 413
    assert "limit" in refused.value.message


def audio_seconds(transcription_url: str) -> float:
    metrics = httpx.get(f"{transcription_url}/metrics").text
    values = [float(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith("mediaflow_serving_audio_seconds_total")]
    return values[0] if values else 0.0


def test_remote_engine_uploads_and_metrics_count_audio_seconds(transcription_url, speech):
    assert httpx.get(f"{transcription_url}/health").json()["status"] == "ok"
    before = audio_seconds(transcription_url)
    transcript = RemoteTranscriber(transcription_url, retries=0).transcribe(Path(speech.media), language="en")
    assert wer(speech.text, transcript.text) <= MAX_WER
    assert audio_seconds(transcription_url) - before == pytest.approx(speech.duration, abs=0.1)
    metrics = httpx.get(f"{transcription_url}/metrics").text
    assert ('mediaflow_serving_requests_total{app="transcription",'
            'route="/v1/audio/transcriptions",status="200"}') in metrics


def test_no_language_is_detected_and_each_request_keeps_its_own(client, tmp_path):
    """Through the OpenAI client: German with no language is detected as German; a French
    request between two English ones leaves the next English one in English."""
    from tests.speech import SAMPLES, speak

    german = speak(SAMPLES["de"], tmp_path / "de.wav")
    english = speak(SAMPLES["en"], tmp_path / "en.wav")
    french = speak(SAMPLES["fr"], tmp_path / "fr.wav")

    def transcribe(path: Path, **options):
        with open(path, "rb") as audio:
            return client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json",
                                                      **options)

    detected = transcribe(german)
    assert detected.language == "de" and detected.model_extra["language_probability"] > 0.8
    assert wer(SAMPLES["de"].reference, detected.text) <= 0.3, detected.text
    first = transcribe(english, language="en")
    assert transcribe(french, language="fr").language == "fr"
    again = transcribe(english)
    assert again.language == "en" and again.text == first.text


@pytest.mark.bad_input
@pytest.mark.parametrize("language", ["xx", "klingon", "yue"])
def test_an_unknown_language_is_a_400_naming_it(client, speech, language):
    with open(speech.media, "rb") as audio, pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model="whisper-1", file=audio, language=language)
    error = refused.value.body
    assert error["param"] == "language" and language in error["message"], error


# -- audio in: a PCM WAV's header stands for ffprobe, a 16 kHz mono one needs no ffmpeg ----------
def test_a_pcm_wav_is_probed_from_its_header_as_ffprobe_does(speech, tmp_path):
    import numpy as np
    from fastapi import HTTPException

    from mediaflow.stages.probe import probe_file
    from mediaflow_serving.apps.audio_input import decode_audio, probe_audio

    wav_16k = tmp_path / "speech-16k.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", speech.media, "-ac", "1", "-ar", "16000",
                    "-c:a", "pcm_s16le", str(wav_16k)], check=True)
    for path in (Path(speech.media), wav_16k):  # 22.05 kHz (resampled by ffmpeg) and 16 kHz
        fast, ffprobe = probe_audio(path, max_bytes=MAX_UPLOAD_BYTES), probe_file(path)
        assert (fast.format_name, fast.audio_codec, fast.has_video) == (ffprobe.format_name, ffprobe.audio_codec,
                                                                        ffprobe.has_video)
        assert fast.duration == pytest.approx(ffprobe.duration, abs=1e-3)
        assert [(s.codec_type, s.sample_rate, s.channels) for s in fast.streams] == \
            [(s.codec_type, s.sample_rate, s.channels) for s in ffprobe.streams]
    ffmpeg = subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav_16k), "-f", "s16le", "-"],
                            capture_output=True, check=True).stdout
    decoded = decode_audio(wav_16k, max_bytes=MAX_UPLOAD_BYTES)
    assert np.array_equal(decoded, np.frombuffer(ffmpeg, np.int16).astype(np.float32) / 32768.0)
    # the limits hold on the fast path as on ffprobe's
    with pytest.raises(HTTPException) as refused:
        probe_audio(wav_16k, max_bytes=1000)
    assert refused.value.status_code == 413
    empty = tmp_path / "empty.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0.05",
                    "-c:a", "pcm_s16le", str(empty)], check=True)
    with pytest.raises(HTTPException, match="less than 0.1 s"):
        decode_audio(empty, max_bytes=MAX_UPLOAD_BYTES)
