"""Recordings of passages in other languages with known times (tests and bench only).

``tests/speech.py`` speaks one text; retrieval needs several passages with pauses between
them, each passage's time known, as ``mediaflow.samples.make_sample`` makes them in English.
German and Spanish here: Whisper base transcribes espeak's voices of both well (README,
"Languages").
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

from tests.speech import Spoken, speak

SAMPLE_RATE = 16_000

# Item i of every language says the same thing (translations of mediaflow.samples.PASSAGES[1:4]).
PASSAGES: dict[str, list[str]] = {
    "de": [
        "Der Hafen erwacht vor Sonnenaufgang. Die Fischer laden ihre Netze, prüfen die Motoren "
        "und hören den Wetterbericht im alten Radio.",
        "Honigbienen halten die Obstgärten am Leben. Ein einziger Bienenstock beherbergt Tausende "
        "von Arbeiterinnen, und jede Biene besucht an einem Nachmittag Hunderte von Blumen.",
        "Der Leuchtturmwärter steigt jeden Abend die lange Treppe hinauf, um das Glas zu putzen "
        "und die Lampe anzuzünden, die die Schiffe sicher nach Hause führt.",
    ],
    "es": [
        "El puerto despierta antes del amanecer. Los pescadores cargan sus redes, revisan los "
        "motores y escuchan el parte meteorológico en una vieja radio.",
        "Las abejas mantienen vivos los huertos. Una sola colmena alberga miles de obreras, y cada "
        "abeja visita cientos de flores en una tarde.",
        "El farero sube cada noche la larga escalera para limpiar el cristal y encender la lámpara "
        "que guía a los barcos a casa.",
    ],
}
VOICES = {"de": "de", "es": "es"}

# (English query, the same in the passages' language, index of the passage that answers it)
QUERIES: dict[str, list[tuple[str, str, int]]] = {
    "de": [
        ("the fishermen listen to the weather report on an old radio",
         "Die Fischer hören den Wetterbericht im alten Radio", 0),
        ("how many flowers does a bee visit in one afternoon",
         "Wie viele Blumen besucht eine Biene an einem Nachmittag?", 1),
        ("who climbs the long stairs every evening to light the lamp",
         "Wer steigt jeden Abend die lange Treppe hinauf, um die Lampe anzuzünden?", 2),
    ],
    "es": [
        ("the fishermen listen to the weather report on an old radio",
         "Los pescadores escuchan el parte meteorológico en la radio", 0),
        ("how many flowers does a bee visit in one afternoon",
         "¿Cuántas flores visita una abeja en una tarde?", 1),
        ("who climbs the long stairs every evening to light the lamp",
         "¿Quién sube la escalera cada noche para encender la lámpara?", 2),
    ],
}


@dataclass(frozen=True)
class Timed:
    start: float
    end: float
    text: str


def speak_passages(language: str, out: Path, *, gap_seconds: float = 2.5,
                   passages: list[str] | None = None) -> list[Timed]:
    """The passages of ``language`` spoken one after another with ``gap_seconds`` of silence
    before each (16 kHz mono WAV at ``out``); returns each passage's time in the file."""
    passages = passages or PASSAGES[language]
    gap = b"\0\0" * int(gap_seconds * SAMPLE_RATE)
    frames, timeline, clock = [gap], [], gap_seconds
    for n, text in enumerate(passages):
        piece = speak(Spoken(language, VOICES[language], text, text), out.with_suffix(f".{n}.wav"))
        with wave.open(str(piece), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
            data = w.readframes(w.getnframes())
        piece.unlink()
        seconds = len(data) / 2 / SAMPLE_RATE
        timeline.append(Timed(round(clock, 3), round(clock + seconds, 3), text))
        frames += [data, gap]
        clock += seconds + gap_seconds
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(b"".join(frames))
    return timeline
