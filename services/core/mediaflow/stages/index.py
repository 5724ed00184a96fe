"""index: chunks + vectors into Qdrant, with deterministic point ids (reruns overwrite)."""

from __future__ import annotations

from mediaflow.models import ChunkSet, EmbeddingSet, IndexRecord


def run(ctx) -> IndexRecord:
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    vectors = ctx.store.read_model(ctx.media_id, "embeddings.json", EmbeddingSet)
    # Points left by an earlier, longer version of this media would be stale.
    ctx.index.delete_media(ctx.media_id)
    ids = ctx.index.upsert(ctx.media_id, chunks.chunks, vectors.vectors, title=ctx.source.title)
    ctx.progress(1.0)
    return IndexRecord(collection=ctx.collection, points=len(ids), point_ids=ids)


def verify(ctx, record: IndexRecord) -> bool:
    # The artifact says what was written; the index must still hold it.
    return record.collection == ctx.collection and ctx.index.count(ctx.media_id) == record.points
