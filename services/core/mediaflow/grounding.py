"""Grounding: summaries and answers that say only what was said.

Four tools, on the embedder the media was indexed with (``StageContext.media_embedder`` for a
summary, ``Pipeline.answer_embedder`` for an answer; unit vectors, so a dot product is the
cosine similarity):

- ``split_sentences``: text into sentences, for any language Whisper writes (sentences end
  at ``mediaflow.languages.SENTENCE_END``: . ! ? … and 。！？, which need no space after them).
  ``transcript_sentences`` makes timed sentences of a transcript (from its word times when
  it has them, else its segments' text, times spread by characters).
- ``check_support``: each sentence an LLM wrote is compared with every source sentence (the
  transcript's for a summary, the excerpts' for an answer). It is kept only when
    * its best cosine similarity to a source sentence (``score``) reaches
      ``MEDIAFLOW_GROUNDING_MIN_SIMILARITY``, and
    * the share of its content words (stemmed; function words and framing words such as
      "the speaker says" left out) found in its ``SUPPORT_CONTEXT`` most similar source
      sentences (``coverage``) reaches ``MEDIAFLOW_GROUNDING_MIN_COVERAGE``.
  Similarity alone cannot tell a paraphrase from an invention on the same topic (measured on
  SmolLM2's real outputs, invented sentences reach 0.65 and more); added facts bring words
  that were never said, which coverage sees. The figures are kept (``SentenceSupport``).
- ``select_key_sentences``: the transcript sentences a summary is written from: ranked by
  centrality (similarity to the centroid of all sentences, i.e. their mean similarity to the
  others) and picked by maximal marginal relevance (each next pick trades centrality against
  similarity to those already picked, so the picks cover the recording's topics), returned
  in time order.
- ``ground_answer``: an answer's sentences checked against the excerpts it was given, the
  model's [n] markers parsed and removed, citations made from the supporting excerpts.

What the check cannot see: a sentence that reuses the source's words in a wrong combination,
or changes one detail (a number, a name, a negation) of an otherwise supported sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mediaflow.languages import SENTENCE_END, joiner
from mediaflow.models import Answer, Citation, SentenceSupport, Transcript

# A token: a run of non-space characters, cut after a CJK sentence mark (those need no
# space after them: "你好。世界。" is two sentences).
_CJK_END = "。！？"
_TOKEN = re.compile(rf"[^\s{_CJK_END}]*[{_CJK_END}]+['\")\]」』”’）]*|[^\s{_CJK_END}]+")
# List markers and Markdown emphasis an LLM puts around its sentences.
_BULLET = re.compile(r"^\s*(?:(?:[-*•]+|\d{1,2}[.)])\s+)+")
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
    characters. A transcript Whisper left unpunctuated (fewer than a third of its segments
    end a sentence) has its segments, the sentence-sized cues, as sentences."""
    glue = joiner(transcript.language)
    spoken = [seg for seg in transcript.segments if seg.text.strip()]
    punctuated = 3 * sum(bool(SENTENCE_END.search(seg.text.strip())) for seg in spoken) >= len(spoken)
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
        if pieces and (not punctuated or sum(len(p[0].split()) for p in pieces) >= MAX_SENTENCE_WORDS):
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
    return _check(sentences, sources, embedder, min_similarity, min_coverage, source_vectors, context)[0]


def _check(sentences, sources, embedder, min_similarity, min_coverage, source_vectors=None,
           context=SUPPORT_CONTEXT) -> tuple[list[SentenceSupport], np.ndarray, list[int]]:
    """``check_support``, plus the similarity matrix and each sentence's best source index."""
    if not sentences or not sources:
        return ([SentenceSupport(text=s, score=0.0, coverage=0.0, kept=False) for s in sentences],
                np.zeros((len(sentences), len(sources)), dtype=np.float32), [-1] * len(sentences))
    vectors = source_vectors if source_vectors is not None else embed(embedder, [s.text for s in sources])
    matrix = embed(embedder, sentences) @ vectors.T
    out, bests = [], []
    for text, row in zip(sentences, matrix, strict=True):
        best, score, covered = _judge(text, row, sources, range(len(sources)), context)
        bests.append(best)
        src = sources[best]
        out.append(SentenceSupport(
            text=text, score=round(score, 4), coverage=round(covered, 4),
            kept=score >= min_similarity and covered >= min_coverage, source=src.text,
            media_id=src.media_id, start=src.start, end=src.end, excerpt=src.excerpt,
        ))
    return out, matrix, bests


def _judge(text: str, row: np.ndarray, sources: Sequence[SourceSentence], among, context: int
           ) -> tuple[int, float, float]:
    """(best source index, its similarity, coverage by the ``context`` closest) among ``among``."""
    among = list(among)
    ranked = sorted(among, key=lambda i: -float(row[i]))[: max(context, 1)]
    best = ranked[0]
    return best, float(row[best]), coverage(text, [sources[i].text for i in ranked])


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


# -- answers ---------------------------------------------------------------------------
NOT_ANSWERED = "The recordings do not answer this question."
NOTHING_INDEXED = "Nothing indexed matches this question."
# The model's citation markers: [2], [1, 3], [Excerpt 2]; and the [mm:ss] times older
# prompts asked for. All are removed from the answer's text.
_MARKER = re.compile(r"\s*\[\s*(?:excerpts?\s*)?(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\s*\]", re.I)
_TIMESTAMP = re.compile(r"\s*\[\d{1,2}:\d{2}(?::\d{2})?(?:\s*[-–]\s*\d{1,2}:\d{2}(?::\d{2})?)?\]")
_ONLY_MARKERS = re.compile(r"^(?:\s*\[[^\]]*\]\s*[.,;:]?)+$")


def strip_markers(sentence: str) -> tuple[str, list[int]]:
    """``sentence`` without its bracket markers, and the excerpt numbers they named."""
    cited = [int(n) for m in _MARKER.finditer(sentence) for n in re.split(r"\s*[,;]\s*", m.group(1))]
    text = _TIMESTAMP.sub("", _MARKER.sub("", sentence))
    text = re.sub(r"\s+([.,;:!?。！？])", r"\1", text).strip()
    return text, list(dict.fromkeys(cited))


def answer_sentences(raw: str, excerpts: int) -> list[tuple[str, list[int]]]:
    """The model's answer as (sentence without markers, excerpt numbers it cited). A marker
    after a full stop ("… lagoon. [1]") belongs to the sentence before it; numbers outside
    1..``excerpts`` are dropped."""
    out: list[tuple[str, list[int]]] = []
    for piece in split_sentences(raw):
        leading = re.match(r"^(?:\s*\[[^\]]*\]\s*)+", piece)
        if leading and out:
            _, cited = strip_markers(leading.group())
            out[-1][1].extend(n for n in cited if n not in out[-1][1])
            piece = piece[leading.end():]
        if _ONLY_MARKERS.match(piece) or not piece.strip():
            continue
        text, cited = strip_markers(piece)
        if any(ch.isalnum() for ch in text):
            out.append((text, cited))
    return [(text, [n for n in cited if 1 <= n <= excerpts]) for text, cited in out]


def excerpt_sentences(hits, store=None) -> list[SourceSentence]:
    """The sentences of the excerpts (search hits) given to the model, each with its time
    and its excerpt's number: the chunk's sentences (``mediaflow.seek.sentences_of``), cut
    further at sentence ends (times spread by characters)."""
    from mediaflow.seek import sentences_of

    out: list[SourceSentence] = []
    for number, hit in enumerate(hits, start=1):
        units = sentences_of(hit, store) or []
        if not units:
            out.extend(_spread(hit.text, hit.start, hit.end, hit.media_id, number))
        for unit_ in units:
            out.extend(_spread(unit_.text, unit_.start, unit_.end, hit.media_id, number))
    return out


def _spread(text: str, start: float, end: float, media_id: str | None, excerpt: int | None) -> list[SourceSentence]:
    text = text.strip()
    parts = split_sentences(text)
    if len(parts) <= 1:
        return [SourceSentence(text, start, end, media_id, excerpt)] if parts else []
    span, offset, out = max(end - start, 0.0), 0, []
    for part in parts:
        at = text.find(part, offset)
        at = offset if at < 0 else at
        offset = at + len(part)
        out.append(SourceSentence(part, start + span * at / len(text), start + span * offset / len(text),
                                  media_id, excerpt))
    return out


def join_sentences(sentences: Sequence[str]) -> str:
    """Sentences as one text: a space between them, none after a CJK full stop."""
    text = ""
    for sentence in sentences:
        text += sentence if not text or text[-1] in _CJK_END else " " + sentence
    return text


def dedupe(sentences: Sequence[str]) -> list[str]:
    """Sentences in order, each once (small models repeat themselves)."""
    seen: set[str] = set()
    out = []
    for sentence in sentences:
        key = " ".join(re.findall(r"\w+", sentence.lower()))
        if key and key not in seen:
            seen.add(key)
            out.append(sentence)
    return out


def ground_answer(
    question: str,
    raw: str,
    hits,
    embedder,
    *,
    min_similarity: float,
    min_coverage: float,
    store=None,
) -> Answer:
    """The model's answer ``raw`` to ``question`` from ``hits`` (excerpt n = hits[n-1]),
    checked sentence by sentence against the excerpts' sentences.

    A sentence is kept when an excerpt sentence supports it (``check_support``). Its
    citations are the excerpt holding that sentence, plus each excerpt the model cited for
    it that supports it too; each citation seeks to its supporting sentence. The model's
    markers are removed from the text (``SentenceSupport.cited`` keeps them;
    ``SentenceSupport.citations`` numbers the answer's own). With no sentence kept, the
    answer is ``NOT_ANSWERED`` with no citations."""
    figures = {"min_similarity": min_similarity, "min_coverage": min_coverage, "excerpts": len(hits)}
    if not hits:
        return Answer(question=question, answer=NOTHING_INDEXED, citations=[], grounded=False, **figures)
    sentences: list[str] = []
    cites: list[list[int]] = []
    seen: dict[str, int] = {}
    for text, cited in answer_sentences(raw, len(hits)):  # each sentence once (small models repeat)
        key = " ".join(re.findall(r"\w+", text.lower()))
        if key not in seen:
            seen[key] = len(sentences)
            sentences.append(text)
            cites.append([])
        cites[seen[key]].extend(n for n in cited if n not in cites[seen[key]])
    sources = excerpt_sentences(hits, store)
    support, matrix, bests = _check(sentences, sources, embedder, min_similarity, min_coverage)
    citations: list[Citation] = []
    number: dict[int, int] = {}  # excerpt number -> citation number
    for item, row, best, cited in zip(support, matrix, bests, cites, strict=True):
        item.cited = cited
        if not item.kept:
            continue
        backing = [(item.excerpt, best, item.score)]
        for n in item.cited:
            if n == item.excerpt:
                continue
            among = [i for i, s in enumerate(sources) if s.excerpt == n]
            if not among:
                continue
            best, score, covered = _judge(item.text, row, sources, among, SUPPORT_CONTEXT)
            if score >= min_similarity and covered >= min_coverage:
                backing.append((n, best, score))
        for n, best, score in backing:
            if n not in number:
                hit = hits[n - 1]
                number[n] = len(citations) + 1
                citations.append(Citation(
                    media_id=hit.media_id, start=hit.start, end=hit.end, text=hit.text,
                    seek=sources[best].start, quote=sources[best].text, excerpt=n,
                    score=round(score, 4)))
            else:
                cited = citations[number[n] - 1]
                cited.score = max(cited.score or 0.0, round(score, 4))
            item.citations.append(number[n])
    kept = [item.text for item in support if item.kept]
    dropped = sum(not item.kept for item in support)
    if not kept:
        return Answer(question=question, answer=NOT_ANSWERED, citations=[], grounded=False,
                      support=support, dropped=dropped, **figures)
    return Answer(question=question, answer=join_sentences(kept), citations=citations, grounded=True,
                  support=support, dropped=dropped, **figures)
