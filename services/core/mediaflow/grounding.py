"""Grounding: summaries and answers that say only what was said.

Three tools, all on the pipeline's own embedder (``engines.embedder.embed``: unit vectors,
so a dot product is the cosine similarity):

- ``split_sentences``: text into sentences, for any language Whisper writes (sentences end
  at ``mediaflow.languages.SENTENCE_END``: . ! ? … and 。！？, which need no space after them).
  ``transcript_sentences`` makes timed sentences of a transcript (from its word times when
  it has them, else its segments' text, times spread by characters).
- ``check_support``: each sentence an LLM wrote is compared with every source sentence (the
  transcript's for a summary, the excerpts' for an answer); its score is the best cosine
  similarity, and it is kept only when that reaches ``min_similarity``
  (``MEDIAFLOW_GROUNDING_MIN_SIMILARITY``). A sentence the recording does not say has no
  close source sentence and is dropped. The figures are kept (``SentenceSupport``): the
  score, the supporting sentence and its media, start and end, kept or dropped.
- ``select_key_sentences``: the transcript sentences a summary is written from: ranked by
  centrality (similarity to the centroid of all sentences, i.e. their mean similarity to the
  others) and picked by maximal marginal relevance (each next pick trades centrality against
  similarity to those already picked, so the picks cover the recording's topics), returned
  in time order.

What the check cannot see: a sentence close to a source sentence as a whole can still change
one detail of it (a number, a name, a negation). Embeddings of short sentences weigh the
topic more than such details; the threshold catches what is invented, not every misquote.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mediaflow.languages import SENTENCE_END, joiner
from mediaflow.models import SentenceSupport, Transcript

# A token: a run of non-space characters, cut after a CJK sentence mark (those need no
# space after them: "你好。世界。" is two sentences).
_CJK_END = "。！？"
_TOKEN = re.compile(rf"[^\s{_CJK_END}]*[{_CJK_END}]+['\")\]」』”’）]*|[^\s{_CJK_END}]+")
# List markers and Markdown emphasis an LLM puts around its sentences.
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d{1,2}[.)])\s+")
_EMPHASIS = re.compile(r"\*\*|__|^#+\s*")
# A sentence this long (in words) ends at its segment's end even without a full stop
# (unpunctuated speech would otherwise make one sentence of a whole recording).
MAX_SENTENCE_WORDS = 60
# Coverage counts the words of a sentence's this many most similar source sentences.
SUPPORT_CONTEXT = 3


@dataclass(frozen=True)
class SourceSentence:
    """A sentence that was said: its text and where (media, start, end)."""

    text: str
    start: float
    end: float
    media_id: str | None = None
    excerpt: int | None = None  # answers: the excerpt's number (1-based) it belongs to


def split_sentences(text: str) -> list[str]:
    """``text`` cut into sentences: at each sentence end (``SENTENCE_END``) and line break;
    list markers and Markdown emphasis are removed, and pieces with no letter or digit dropped."""
    sentences: list[str] = []
    for raw in text.splitlines():
        line = _EMPHASIS.sub("", _BULLET.sub("", raw)).strip()
        start = None
        end = 0
        for match in _TOKEN.finditer(line):
            if start is None:
                start = match.start()
            end = match.end()
            if SENTENCE_END.search(match.group()):
                sentences.append(line[start:end])
                start = None
        if start is not None:
            sentences.append(line[start:end])
    return [s.strip() for s in sentences if any(ch.isalnum() for ch in s)]


def transcript_sentences(transcript: Transcript, media_id: str | None = None) -> list[SourceSentence]:
    """The transcript's sentences with their times. A sentence may span segments (a cue
    that ends without a full stop goes on in the next one); word times give each sentence
    its exact start and end, and a segment without words spreads its time over its
    characters."""
    glue = joiner(transcript.language)
    out: list[SourceSentence] = []
    pieces: list[tuple[str, float, float]] = []  # (text, start, end) of the sentence so far

    def flush() -> None:
        if pieces:
            text = glue.join(p[0] for p in pieces).strip()
            if any(ch.isalnum() for ch in text):
                out.append(SourceSentence(text, pieces[0][1], pieces[-1][2], media_id))
            pieces.clear()

    for seg in transcript.segments:
        if not seg.text.strip():
            continue
        if seg.words:
            for w in seg.words:
                word = w.word.strip()
                if not word:
                    continue
                pieces.append((word, w.start, w.end))
                if SENTENCE_END.search(word):
                    flush()
        else:
            text = seg.text.strip()
            span = max(seg.end - seg.start, 0.0)
            offset = 0
            for sentence in split_sentences(text):
                at = text.find(sentence, offset)
                at = offset if at < 0 else at
                lo = seg.start + span * at / max(len(text), 1)
                offset = at + len(sentence)
                hi = seg.start + span * offset / max(len(text), 1)
                pieces.append((sentence, lo, hi))
                if SENTENCE_END.search(sentence):
                    flush()
        if pieces and sum(len(p[0].split()) for p in pieces) >= MAX_SENTENCE_WORDS:
            flush()
    flush()
    return out


# Words that carry no fact of their own (English function words, and the words a summary or
# an answer frames what was said with: "the speaker says", "the recording discusses").
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before
being below between both but by can could did do does doing down during each either else even
ever every few for from further had has have having he her here hers herself him himself his how
however i if in into is it its itself just let like may me might more most much must my myself
no nor not now of off on once one only or other our ours ourselves out over own per quite rather
really same she should so some such than that the their theirs them themselves then there these
they this those though through thus to too under until up upon us very was we were what when where
whether which while who whom whose why will with within without would yet you your yours yourself
yourselves along across around behind beside near onto toward towards via among amid beyond inside
outside it's that's there's they're we're you're i'm he's she's isn't wasn't don't doesn't
didn't can't won't let's
recording recordings video videos audio talk speaker speakers transcript transcripts excerpt
excerpts episode narrator says said say saying mention mentions mentioned mentioning describe
describes described explain explains explained discuss discusses discussed talks talked tell
tells told according summary overall also well
""".split())
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"\w+(?:'\w+)?")
_SUFFIXES = ("ational", "ization", "fulness", "ousness", "iveness", "ations", "ingly", "ation",
             "ments", "ness", "ment", "ings", "edly", "able", "ible", "ing", "ies", "ied", "ers",
             "est", "ful", "ous", "ive", "ize", "ise", "ed", "er", "es", "ly", "s")


def stem(word: str) -> str:
    """A crude suffix-stripping stem: plant/plants/planted/planting -> plant, move/moves/moving -> mov."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # planned -> plann -> plan
    return word


def content_tokens(text: str) -> set[str]:
    """The words of ``text`` that carry facts, stemmed (numbers included); scripts written
    without spaces give their character pairs instead."""
    tokens: set[str] = set()
    for word in _WORD.findall(text.lower().replace("’", "'")):
        if word in STOPWORDS:
            continue
        if _NO_SPACE_SCRIPT.search(word):
            chars = [c for c in word if not c.isspace()]
            tokens.update(a + b for a, b in zip(chars, chars[1:], strict=False))
            if len(chars) == 1:
                tokens.add(chars[0])
            continue
        word = word.split("'")[0]
        if word and word not in STOPWORDS:
            tokens.add(stem(word))
    return tokens


def coverage(sentence: str, sources: Sequence[str]) -> float:
    """The share of ``sentence``'s content words (stemmed) that occur in ``sources``; 1.0
    for a sentence with none."""
    words = content_tokens(sentence)
    if not words:
        return 1.0
    said: set[str] = set()
    for text in sources:
        said |= content_tokens(text)
    return len(words & said) / len(words)


def unit(vectors) -> np.ndarray:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.size == 0:
        return matrix.reshape(len(vectors), -1)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def embed(embedder, texts: Sequence[str]) -> np.ndarray:
    """Unit vectors of ``texts`` (one embedding call)."""
    if not texts:
        return np.zeros((0, getattr(embedder, "dim", 0) or 0), dtype=np.float32)
    return unit(embedder.embed(list(texts)))


def check_support(
    sentences: Sequence[str],
    sources: Sequence[SourceSentence],
    embedder,
    *,
    min_similarity: float,
    min_coverage: float = 0.0,
    source_vectors: np.ndarray | None = None,
    context: int = SUPPORT_CONTEXT,
) -> list[SentenceSupport]:
    """Each of ``sentences`` with its best-supporting source sentence and figures.

    ``score``: the best cosine similarity to a source sentence; ``coverage``: the share of
    its content words found in its ``context`` most similar source sentences (a sentence
    may condense a few). ``kept`` when both reach their thresholds. With no sources, nothing
    is kept."""
    if not sentences:
        return []
    if not sources:
        return [SentenceSupport(text=s, score=0.0, coverage=0.0, kept=False) for s in sentences]
    vectors = source_vectors if source_vectors is not None else embed(embedder, [s.text for s in sources])
    scores = embed(embedder, sentences) @ vectors.T
    out = []
    for text, row in zip(sentences, scores, strict=True):
        ranked = np.argsort(-row)[: max(context, 1)]
        best = int(ranked[0])
        score = float(row[best])
        covered = coverage(text, [sources[int(i)].text for i in ranked])
        src = sources[best]
        out.append(SentenceSupport(
            text=text, score=round(score, 4), coverage=round(covered, 4),
            kept=score >= min_similarity and covered >= min_coverage, source=src.text,
            media_id=src.media_id, start=src.start, end=src.end, excerpt=src.excerpt,
        ))
    return out


def select_key_sentences(vectors: np.ndarray, k: int, *, diversity: float = 0.3) -> list[int]:
    """Indices of ``k`` key sentences, in (time) order: centrality ranked, MMR picked.

    Centrality is each sentence's similarity to the centroid of all (proportional to its
    mean similarity to every sentence). Each pick maximises
    ``(1 - diversity) * centrality - diversity * (similarity to the closest pick so far)``."""
    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    if k >= n:
        return list(range(n))
    centroid = vectors.mean(axis=0)
    norm = float(np.linalg.norm(centroid))
    centrality = vectors @ (centroid / norm) if norm > 1e-12 else np.zeros(n, dtype=np.float32)
    picked: list[int] = []
    closest = np.full(n, -np.inf, dtype=np.float32)  # each sentence's similarity to its closest pick
    for _ in range(k):
        redundancy = np.where(np.isfinite(closest), closest, 0.0)
        score = (1 - diversity) * centrality - diversity * redundancy
        score[picked] = -np.inf
        best = int(np.argmax(score))
        picked.append(best)
        closest = np.maximum(closest, vectors @ vectors[best])
    return sorted(picked)
