"""summarize: key sentences → the LLM condenses them → only what the transcript supports.

1. Key sentences: the transcript's sentences ranked by centrality and picked for diversity
   (``grounding.select_key_sentences``), at most ``summary_key_sentences``, in time order.
2. The LLM sees only those sentences and condenses them (one call; several when they exceed
   ``summary_group_tokens``, each condensing a run of them: no reduce step, so no call
   summarizes a summary). Several calls are sent at once (``summary_concurrent_calls``), so
   vLLM batches them; their results are used in the runs' order.
3. Every sentence it wrote is checked against all the transcript's sentences
   (``grounding.check_support``); those the transcript does not support are dropped.
4. A run whose every sentence was dropped is summarized by its key sentences as said
   (``method: extractive``, or ``mixed`` when other runs were condensed), with a warning in
   the log.

``summary.json`` keeps the figures (every LLM sentence with its score, coverage and
supporting sentence, kept or dropped); ``summary.md`` renders the summary's sentences,
each with the time of the transcript sentence it rests on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from mediaflow import grounding
from mediaflow.models import ChunkSet, Sentence, SourceRecord, SummaryRecord, Transcript
from mediaflow.subtitles import mmss

log = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "You condense sentences from a recording into a short summary. Use only what the "
    "sentences say; add nothing."
)
CONDENSE_PROMPT = "Summarize these sentences from a recording in at most {n} short sentences."
NO_SPEECH = "(no speech found)"
# SmolLM2's context is 2048 tokens; ~4 characters per token for English speech.
CHARS_PER_TOKEN = 4


def key_sentence_groups(
    keys: list[grounding.SourceSentence], group_tokens: int
) -> list[list[grounding.SourceSentence]]:
    """The key sentences in runs of at most ``group_tokens`` (a longer sentence: a run alone)."""
    groups: list[list[grounding.SourceSentence]] = []
    size, limit = 0, group_tokens * CHARS_PER_TOKEN
    for key in keys:
        if groups and size + len(key.text) + 3 <= limit:
            groups[-1].append(key)
            size += len(key.text) + 3
        else:
            groups.append([key])
            size = len(key.text) + 3
    return groups


def condense_prompt(system: str, keys: list[grounding.SourceSentence]) -> list[dict[str, str]]:
    n = max(1, min(3, (len(keys) + 1) // 2))
    listing = "\n".join(f"- {k.text}" for k in keys)
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{CONDENSE_PROMPT.format(n=n)}\n\n{listing}"}]


def condense_all(
    chat, system: str, groups: list[list[grounding.SourceSentence]], *, max_tokens: int, concurrent_calls: int
) -> Iterator[str]:
    """The LLM's condensation of each group, yielded in the groups' order as each is ready.

    Up to ``concurrent_calls`` requests are in flight at once, so the server batches them (one
    sequence at a time leaves most of vLLM's throughput unused on CPU: 30 tok/s alone, 160
    for 8). The first failure, in group order, is raised once the requests in flight are over;
    those not yet sent are cancelled."""
    if len(groups) == 1 or concurrent_calls <= 1:
        for group in groups:
            yield chat.complete(condense_prompt(system, group), max_tokens=max_tokens)
        return
    pool = ThreadPoolExecutor(max_workers=min(concurrent_calls, len(groups)),
                              thread_name_prefix="mediaflow-summary")
    try:
        futures = [pool.submit(chat.complete, condense_prompt(system, group), max_tokens=max_tokens)
                   for group in groups]
        for future in futures:
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def summarize(
    chat, embedder, transcript: Transcript, *, prompt: str | None, max_tokens: int,
    group_tokens: int, key_sentences: int, min_similarity: float, min_coverage: float,
    media_id: str | None = None, on_progress=None, concurrent_calls: int = 8,
) -> SummaryRecord:
    figures = {"model": chat.name, "min_similarity": min_similarity, "min_coverage": min_coverage}
    sources = grounding.transcript_sentences(transcript, media_id)
    if not sources:
        return SummaryRecord(text=NO_SPEECH, map_calls=0, method="empty", **figures)
    vectors = grounding.embed(embedder, [s.text for s in sources])
    keys = [sources[i] for i in grounding.select_key_sentences(vectors, key_sentences)]
    groups = key_sentence_groups(keys, group_tokens)
    system = prompt or DEFAULT_PROMPT
    support, summary, extractive = [], [], 0
    condensed = condense_all(chat, system, groups, max_tokens=max_tokens, concurrent_calls=concurrent_calls)
    for n, (group, raw) in enumerate(zip(groups, condensed, strict=True), start=1):
        checked = grounding.check_support(
            grounding.dedupe(grounding.split_sentences(raw)), sources, embedder,
            min_similarity=min_similarity, min_coverage=min_coverage, source_vectors=vectors)
        support += checked
        kept = [Sentence(text=c.text, start=c.start, end=c.end) for c in checked if c.kept]
        if not kept:
            extractive += 1
            kept = [Sentence(text=k.text, start=k.start, end=k.end) for k in group]
        summary += kept
        if on_progress:
            on_progress(0.9 * n / len(groups))
    method = "condensed" if not extractive else "extractive" if extractive == len(groups) else "mixed"
    dropped = sum(not s.kept for s in support)
    if extractive:
        log.warning(
            "summary%s: the transcript supports none of the model's sentences for %d of %d runs of "
            "key sentences (%d of %d sentences dropped, thresholds similarity %.2f, coverage %.2f); "
            "those runs are summarized by their key sentences as said",
            f" of {media_id}" if media_id else "", extractive, len(groups), dropped, len(support),
            min_similarity, min_coverage)
    return SummaryRecord(
        text=grounding.join_sentences([s.text for s in summary]),
        map_calls=len(groups), method=method, transcript_sentences=len(sources),
        key_sentences=[Sentence(text=k.text, start=k.start, end=k.end) for k in keys],
        sentences=summary, support=support, dropped=dropped, **figures,
    )


def render_markdown(title: str, transcript: Transcript, chunks: ChunkSet, record: SummaryRecord) -> str:
    outline = "\n".join(
        f"- [{mmss(c.start)}] {c.text[:100].rstrip()}{'…' if len(c.text) > 100 else ''}"
        for c in chunks.chunks
    )
    if record.sentences:
        body = "\n".join(f"- {s.text} [{mmss(s.start)}]" for s in record.sentences)
    else:
        body = record.text.strip()
    note = {
        "extractive": "\n\n*Key sentences as said: the transcript supported none of the model's sentences.*",
        "mixed": "\n\n*Partly key sentences as said: the transcript supported none of the model's "
                 "sentences for some of them.*",
    }.get(record.method, "")
    return (
        f"# {title}\n\n"
        f"*Duration {mmss(transcript.duration)} · language {transcript.language}*\n\n"
        f"## Summary\n\n{body}{note}\n\n## Outline\n\n{outline}\n"
    )


def run(ctx) -> SummaryRecord | None:
    options = ctx.spec.stages.summary
    if not (options.enabled and ctx.settings.summary):
        return None
    transcript = ctx.store.read_model(ctx.media_id, "transcript.json", Transcript)
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    source = ctx.store.read_model(ctx.media_id, "source.json", SourceRecord)
    s = ctx.settings
    record = summarize(
        ctx.engines.chat, ctx.media_embedder, transcript, prompt=options.prompt,
        max_tokens=s.summary_max_tokens, group_tokens=s.summary_group_tokens,
        key_sentences=s.summary_key_sentences, min_similarity=s.grounding_min_similarity,
        min_coverage=s.grounding_min_coverage, media_id=ctx.media_id, on_progress=ctx.progress,
        concurrent_calls=s.summary_concurrent_calls,
    )
    ctx.store.write_text(ctx.media_id, "summary.md", render_markdown(source.title, transcript, chunks, record))
    return record


def verify(ctx, record: SummaryRecord) -> bool:
    """Done when summary.md exists, the record was checked (not an older, unchecked summary)
    and it was made from the transcript there now (the same number of sentences)."""
    if record.method == "unchecked" or not ctx.store.exists(ctx.media_id, "summary.md"):
        return False
    transcript = ctx.store.read_model(ctx.media_id, "transcript.json", Transcript)
    return transcript is not None and record.transcript_sentences == len(
        grounding.transcript_sentences(transcript))
