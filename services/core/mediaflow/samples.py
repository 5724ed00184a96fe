"""Sample media of known content: espeak-ng speech (+ an ffmpeg test-pattern video).

Used by ``make demo``, the tests (WER against the script, search at known times)
and the benchmarks. Each passage is synthesized separately, so its start time in
the final file is known exactly.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

from pydantic import BaseModel

PASSAGES: list[str] = [
    "Welcome to our field notes. Today we visit a small island to learn how the people "
    "there live with the sea, the wind and the changing seasons.",
    "The harbor wakes up before sunrise. Fishermen load their nets, check the engines and "
    "listen to the weather report on an old radio.",
    "Honeybees keep the orchards alive. A single hive can hold thousands of workers, and "
    "every bee visits hundreds of flowers in one afternoon.",
    "The lighthouse keeper climbs the long stairs every evening to clean the glass and light "
    "the lamp that guides the ships safely home.",
    "In the village kitchen the bread goes into a large stone oven early in the morning. "
    "The cook says the secret is slow rising dough and a lot of patience.",
    "Volcanic rock covers the northern coast. Scientists measure small earthquakes there to "
    "understand how the old volcano still moves beneath the island.",
    "School children plant mangrove trees along the lagoon. The roots protect the shore from "
    "storms and give shelter to young fish and crabs.",
    "At night the sky is so dark that the Milky Way shines bright enough to cast a shadow, "
    "and visitors come from far away to take pictures of the stars.",
]


class Passage(BaseModel):
    start: float
    end: float
    text: str


class SampleManifest(BaseModel):
    media: str
    duration: float
    text: str
    passages: list[Passage]


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise RuntimeError(f"{tool} is not installed (apt-get install -y ffmpeg espeak-ng)")
    return path


def _speak(text: str, out: Path, words_per_minute: int) -> float:
    subprocess.run(
        [_need("espeak-ng"), "-v", "en-us", "-s", str(words_per_minute), "-w", str(out), text],
        check=True,
        capture_output=True,
    )
    with wave.open(str(out), "rb") as w:
        return w.getnframes() / w.getframerate()


def make_sample(
    out: Path,
    *,
    passages: list[str] | None = None,
    min_seconds: float = 0.0,
    gap_seconds: float = 1.0,
    video: bool = True,
    words_per_minute: int = 150,
) -> SampleManifest:
    """Write ``out`` (.mp4 with video, else audio in the suffix's format) and ``out``.json.

    Passages are repeated until the media lasts ``min_seconds`` (benchmarks)."""
    passages = passages or PASSAGES
    out.parent.mkdir(parents=True, exist_ok=True)
    ffmpeg = _need("ffmpeg")
    with tempfile.TemporaryDirectory(prefix="mediaflow-sample-") as tmp:
        tmpdir = Path(tmp)
        silence = tmpdir / "gap.wav"
        subprocess.run(
            [ffmpeg, "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono",
             "-t", str(gap_seconds), "-c:a", "pcm_s16le", str(silence)],
            check=True,
        )
        # espeak-ng writes 22.05 kHz mono; every piece is concatenated as-is.
        pieces: list[Path] = [silence]
        timeline: list[Passage] = []
        clock = gap_seconds
        n = 0
        while True:
            for text in passages:
                wav = tmpdir / f"p{n:04d}.wav"
                seconds = _speak(text, wav, words_per_minute)
                timeline.append(Passage(start=round(clock, 3), end=round(clock + seconds, 3), text=text))
                pieces += [wav, silence]
                clock += seconds + gap_seconds
                n += 1
            if clock >= min_seconds:
                break
        listing = tmpdir / "list.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in pieces))
        speech = tmpdir / "speech.wav"
        subprocess.run(
            [ffmpeg, "-v", "error", "-f", "concat", "-safe", "0", "-i", str(listing),
             "-c", "copy", str(speech)],
            check=True,
        )
        if video:
            cmd = [ffmpeg, "-v", "error", "-y", "-f", "lavfi",
                   "-i", f"testsrc2=size=320x240:rate=15:duration={clock:.3f}",
                   "-i", str(speech), "-shortest", "-c:v", "libx264", "-preset", "veryfast",
                   "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", str(out)]
        else:
            cmd = [ffmpeg, "-v", "error", "-y", "-i", str(speech), str(out)]
        subprocess.run(cmd, check=True)
    manifest = SampleManifest(
        media=str(out),
        duration=round(clock, 3),
        text=" ".join(p.text for p in timeline),
        passages=timeline,
    )
    out.with_suffix(out.suffix + ".json").write_text(json.dumps(manifest.model_dump(), indent=2))
    return manifest
