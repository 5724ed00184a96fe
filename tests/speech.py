"""Speech of known text in several languages, spoken by espeak-ng (tests only).

Each sample: the espeak voice, the text it speaks, and the reference a transcript is scored
against (the same text; for Mandarin, espeak reads pinyin and the reference is the Hanzi).
Whisper ``base`` detects English, German and Spanish espeak speech reliably (p 0.89-0.97);
espeak's French at 140 words/min it takes for Thai (p 0.56; French at 120, p 0.53), and its
Mandarin (read from pinyin) is too far from human speech: tests give those explicitly.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Spoken:
    language: str
    voice: str
    text: str  # what espeak reads
    reference: str  # what a transcript should say
    detectable: bool = True


SAMPLES: dict[str, Spoken] = {s.language: s for s in (
    Spoken("en", "en-us",
           "The island school plants young mangroves along the lagoon every spring. "
           "The lighthouse keeper cleans the lamp each morning before the fishing boats go out. "
           "In the evening the children count the birds that come back to the trees.",
           "The island school plants young mangroves along the lagoon every spring. "
           "The lighthouse keeper cleans the lamp each morning before the fishing boats go out. "
           "In the evening the children count the birds that come back to the trees."),
    Spoken("fr", "fr",
           "Chaque printemps, les enfants de l'école plantent de jeunes palétuviers le long de la lagune. "
           "Le gardien du phare nettoie la lampe tous les matins avant le départ des bateaux de pêche. "
           "Le soir, les enfants comptent les oiseaux qui reviennent dans les arbres.",
           "Chaque printemps, les enfants de l'école plantent de jeunes palétuviers le long de la lagune. "
           "Le gardien du phare nettoie la lampe tous les matins avant le départ des bateaux de pêche. "
           "Le soir, les enfants comptent les oiseaux qui reviennent dans les arbres.",
           detectable=False),
    Spoken("de", "de",
           "Jedes Frühjahr pflanzen die Kinder der Inselschule junge Mangroven an der Lagune. "
           "Der Leuchtturmwärter putzt jeden Morgen die Lampe, bevor die Fischerboote hinausfahren. "
           "Am Abend zählen die Kinder die Vögel, die zu den Bäumen zurückkehren.",
           "Jedes Frühjahr pflanzen die Kinder der Inselschule junge Mangroven an der Lagune. "
           "Der Leuchtturmwärter putzt jeden Morgen die Lampe, bevor die Fischerboote hinausfahren. "
           "Am Abend zählen die Kinder die Vögel, die zu den Bäumen zurückkehren."),
    Spoken("es", "es",
           "Cada primavera, los niños de la escuela plantan manglares jóvenes a lo largo de la laguna. "
           "El farero limpia la lámpara todas las mañanas antes de que salgan los barcos de pesca. "
           "Por la tarde, los niños cuentan los pájaros que vuelven a los árboles.",
           "Cada primavera, los niños de la escuela plantan manglares jóvenes a lo largo de la laguna. "
           "El farero limpia la lámpara todas las mañanas antes de que salgan los barcos de pesca. "
           "Por la tarde, los niños cuentan los pájaros que vuelven a los árboles."),
    Spoken("zh", "cmn-latn-pinyin",
           "mei3 nian2 chun1 tian1, xue2 xiao4 de5 hai2 zi5 men5 zai4 hai3 bian1 zhong4 shu4. "
           "wan3 shang4, hai2 zi5 men5 shu3 niao3.",
           "每年春天，学校的孩子们在海边种树。晚上，孩子们数鸟。",
           detectable=False),
)}


def speak(sample: Spoken, out: Path, *, words_per_minute: int = 140) -> Path:
    """``sample`` spoken to ``out`` (16 kHz mono WAV)."""
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-v", sample.voice, "-s", str(words_per_minute), "-w", str(raw), sample.text],
                   check=True, capture_output=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "16000", str(out)], check=True)
    raw.unlink()
    return out
