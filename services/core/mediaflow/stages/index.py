"""index: chunks + vectors into Qdrant, with deterministic point ids (reruns overwrite).

The points go into the collection the embed stage recorded (the base collection for the
default embedder, ``<base>-<embedder>`` for another: ``mediaflow.engines.collection_for``);
``index.json`` says which, so counting, verifying and deleting find them.
"""

from __future__ import annotations

from mediaflow.models import ChunkSet, EmbeddingSet, IndexRecord


def target_collection(ctx, embeddings: EmbeddingSet) -> str:
    # embeddings.json written before per-embedder collections: the base collection
    return embeddings.collection or ctx.collection


def run(ctx) -> IndexRecord:
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    vectors = ctx.store.read_model(ctx.media_id, "embeddings.json", EmbeddingSet)
    target = target_collection(ctx, vectors)
    # Points left by an earlier version of this media would be stale: a longer one's in the
    # same collection, or one embedded by the other embedder (in its collection).
    earlier = ctx.store.read_model(ctx.media_id, "index.json", IndexRecord)
    stale = {name for name, _ in ctx.engines.embedders(ctx.collection)} | {target}
    if earlier is not None:
        stale.add(earlier.collection)
    for name in sorted(stale):
        ctx.index.for_collection(name).delete_media(ctx.media_id)
    ids = ctx.index.for_collection(target).upsert(ctx.media_id, chunks.chunks, vectors.vectors,
                                                  title=ctx.source.title)
    ctx.progress(1.0)
    return IndexRecord(collection=target, points=len(ids), point_ids=ids, model=vectors.model)


def verify(ctx, record: IndexRecord) -> bool:
    # The artifact says what was written; the index must still hold it, in the collection the
    # media's language picks now (what the embed stage's own check holds its vectors to).
    if record.collection != ctx.embedding_collection:
        return False
    return ctx.index.for_collection(record.collection).count(ctx.media_id) == record.points
