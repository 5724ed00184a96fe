"""The raw side's WhisperX VAD: WhisperX's silero VAD loads through torch.hub (unreachable
offline) and its pyannote one is ~15x slower on CPU than Silero, so the raw runs give
``whisperx.load_model`` the Silero ONNX model that ships inside faster-whisper, as a WhisperX
``Vad`` (WhisperX's own preprocess and merge_chunks), cut as WhisperX's Silero cuts."""

from __future__ import annotations

SAMPLE_RATE = 16000


def silero_vad(onset: float = 0.5, chunk_size: float = 20.0):
    from faster_whisper.vad import VadOptions, get_speech_timestamps
    from whisperx.diarize import Segment
    from whisperx.vads import Silero, Vad

    class BundledSilero(Vad):
        preprocess_audio = staticmethod(Silero.preprocess_audio)
        merge_chunks = staticmethod(Silero.merge_chunks)

        def __init__(self) -> None:
            super().__init__(onset)
            self.options = VadOptions(threshold=onset, max_speech_duration_s=chunk_size,
                                      min_silence_duration_ms=500, speech_pad_ms=200)

        def __call__(self, audio, **kwargs):
            stamps = get_speech_timestamps(audio["waveform"], self.options, SAMPLE_RATE)
            return [Segment(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE, "UNKNOWN") for s in stamps]

    return BundledSilero()
