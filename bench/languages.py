"""Benchmark: English on tiny.en or on the multilingual base, and the cost of detection.

    python bench/languages.py [--rounds 2]

Decides the routing of ``mediaflow.engines.language_routing``: on the ~80 s sample of
known English speech (the demo's), the same WhisperX settings (Silero VAD, batch 8, beam 5,
int8, 2 threads), in one process:
- tiny.en with ``language="en"``, base with ``language="en"``, and the routed default
  (``language=None``: detect with base, then tiny.en) — seconds and WER;
- detection alone (base's language token over the speech of the first minute) on English,
  German and Spanish espeak speech — seconds, language, probability.
Ends with ``BENCH`` lines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def best(fn, rounds: int):
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import whisperx

    from mediaflow.config import Settings
    from mediaflow.engines.language_routing import LanguageRoutedTranscriber
    from mediaflow.engines.whisper_models import bundled_english_model
    from mediaflow.engines.whisperx_transcriber import WhisperXTranscriber
    from mediaflow.samples import make_sample
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests/ scores WER
    from tests.conftest import wer
    from tests.speech import SAMPLES, speak

    settings = Settings()
    t = time.perf_counter()
    base = WhisperXTranscriber.from_settings(settings)
    base_load = time.perf_counter() - t
    t = time.perf_counter()
    tiny = WhisperXTranscriber.from_settings(settings, bundled_english_model())
    tiny_load = time.perf_counter() - t
    routed = LanguageRoutedTranscriber(base, tiny)

    with tempfile.TemporaryDirectory() as tmp:
        sample = make_sample(Path(tmp) / "island.wav", video=False)
        audio = whisperx.load_audio(str(sample.media))
        seconds = len(audio) / 16000
        rows = []
        for name, engine, language in (("tiny.en", tiny, "en"), ("base", base, "en"),
                                       ("routed (detect, then tiny.en)", routed, None)):
            elapsed, transcript = best(lambda e=engine, lang=language: e.transcribe_array(audio, language=lang),
                                       args.rounds)
            rows.append((name, elapsed, seconds / elapsed, wer(sample.text, transcript.text), transcript.language))
        detections = []
        for lang in ("en", "de", "es"):
            speech = whisperx.load_audio(str(speak(SAMPLES[lang], Path(tmp) / f"{lang}.wav")))
            elapsed, (found, probability) = best(lambda a=speech: base.detect_language(a), args.rounds)
            detections.append((lang, found, probability, elapsed))

    print(f"\n{seconds:.0f} s of English speech, best of {args.rounds}; loads: base {base_load:.2f} s, "
          f"tiny.en {tiny_load:.2f} s\n")
    print("| engine | seconds | realtime | WER | language |")
    print("|---|---|---|---|---|")
    for name, elapsed, rtf, error, language in rows:
        print(f"| {name} | {elapsed:.2f} | {rtf:.1f}x | {error:.3f} | {language} |")
    print("\n| speech | detected | p | seconds |")
    print("|---|---|---|---|")
    for lang, found, probability, elapsed in detections:
        print(f"| {lang} | {found} | {probability:.2f} | {elapsed:.2f} |")
    tiny_s, base_s, routed_s = rows[0][1], rows[1][1], rows[2][1]
    speedup = base_s / tiny_s
    detect_s = statistics.mean(d[3] for d in detections)
    correct = sum(d[0] == d[1] for d in detections) / len(detections)
    print()
    print(f"BENCH english_tiny_en_speedup_over_base {speedup:.2f} target >=1.3 {'PASS' if speedup >= 1.3 else 'MISS'}")
    print(f"BENCH english_routed_over_tiny_en {routed_s / tiny_s:.2f} target <=1.15 "
          f"{'PASS' if routed_s / tiny_s <= 1.15 else 'MISS'}")
    print(f"BENCH english_wer_tiny_en {rows[0][3]:.3f} target <=0.15 {'PASS' if rows[0][3] <= 0.15 else 'MISS'}")
    print(f"BENCH english_wer_base {rows[1][3]:.3f} target <=0.15 {'PASS' if rows[1][3] <= 0.15 else 'MISS'}")
    print(f"BENCH language_detection_seconds {detect_s:.2f} target <=1.0 {'PASS' if detect_s <= 1.0 else 'MISS'}")
    print(f"BENCH language_detection_accuracy {correct:.2f} target >=1.0 {'PASS' if correct >= 1.0 else 'MISS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
