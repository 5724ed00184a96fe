"""summarize: map-reduce over the transcript with the LLM → ``summary.md``."""

from __future__ import annotations

from mediaflow.models import ChunkSet, SourceRecord, SummaryRecord, Transcript
from mediaflow.subtitles import mmss

DEFAULT_PROMPT = (
    "You summarize transcripts of talks and videos. Write a short, factual summary "
    "of the main topics in a few sentences. Do not invent facts."
)
MAP_PROMPT = "Summarize this part of a transcript in two or three sentences."
REDUCE_PROMPT = "Combine these partial summaries into one short summary of the whole recording."
# SmolLM2's context is 2048 tokens; ~4 characters per token for English speech.
CHARS_PER_TOKEN = 4


def _groups(transcript: Transcript, max_tokens: int) -> list[str]:
    groups: list[str] = []
    current = ""
    limit = max_tokens * CHARS_PER_TOKEN
    for seg in transcript.segments:
        text = seg.text.strip()
        if current and len(current) + len(text) + 1 > limit:
            groups.append(current)
            current = ""
        current = f"{current} {text}".strip()
    if current:
        groups.append(current)
    return groups


def summarize(chat, transcript: Transcript, *, prompt: str | None, max_tokens: int,
              group_tokens: int, on_progress=None) -> tuple[str, int]:
    system = prompt or DEFAULT_PROMPT
    groups = _groups(transcript, group_tokens)
    if not groups:
        return "(no speech found)", 0

    def ask(instruction: str, text: str) -> str:
        return chat.complete(
            [{"role": "system", "content": system},
             {"role": "user", "content": f"{instruction}\n\n{text}"}],
            max_tokens=max_tokens,
        )

    if len(groups) == 1:
        if on_progress:
            on_progress(0.1)
        return ask("Summarize this transcript.", groups[0]), 1
    partials = []
    for n, group in enumerate(groups, start=1):
        partials.append(ask(MAP_PROMPT, group))
        if on_progress:
            on_progress(0.9 * n / len(groups))
    return ask(REDUCE_PROMPT, "\n\n".join(f"- {p}" for p in partials)), len(groups) + 1


def render_markdown(title: str, transcript: Transcript, chunks: ChunkSet, summary: str) -> str:
    outline = "\n".join(
        f"- [{mmss(c.start)}] {c.text[:100].rstrip()}{'…' if len(c.text) > 100 else ''}"
        for c in chunks.chunks
    )
    return (
        f"# {title}\n\n"
        f"*Duration {mmss(transcript.duration)} · language {transcript.language}*\n\n"
        f"## Summary\n\n{summary.strip()}\n\n## Outline\n\n{outline}\n"
    )


def run(ctx) -> SummaryRecord | None:
    options = ctx.spec.stages.summary
    if not (options.enabled and ctx.settings.summary):
        return None
    transcript = ctx.store.read_model(ctx.media_id, "transcript.json", Transcript)
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    source = ctx.store.read_model(ctx.media_id, "source.json", SourceRecord)
    chat = ctx.engines.chat
    text, calls = summarize(
        chat,
        transcript,
        prompt=options.prompt,
        max_tokens=ctx.settings.summary_max_tokens,
        group_tokens=ctx.settings.summary_group_tokens,
        on_progress=ctx.progress,
    )
    ctx.store.write_text(
        ctx.media_id, "summary.md", render_markdown(source.title, transcript, chunks, text)
    )
    return SummaryRecord(model=chat.name, text=text, map_calls=calls)


def verify(ctx, record: SummaryRecord) -> bool:
    return ctx.store.exists(ctx.media_id, "summary.md")
