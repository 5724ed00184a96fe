"""embed: one normalized vector per chunk (sentence-transformers, batched)."""

from __future__ import annotations

from mediaflow.models import ChunkSet, EmbeddingSet


def run(ctx) -> EmbeddingSet:
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    embedder = ctx.engines.embedder
    vectors = embedder.embed([c.text for c in chunks.chunks], on_progress=ctx.progress)
    return EmbeddingSet(model=embedder.name, dim=embedder.dim, vectors=vectors)


def verify(ctx, record: EmbeddingSet) -> bool:
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    return chunks is not None and len(chunks.chunks) == len(record.vectors)
