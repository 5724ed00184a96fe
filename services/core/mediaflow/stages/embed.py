"""embed: one normalized vector per chunk, by the embedder of the media's language.

English media: the default embedder (all-MiniLM-L6-v2); any other language: the multilingual
one (USE-multilingual v3), unless ``MEDIAFLOW_MULTILINGUAL_EMBEDDER=none``
(``Engines.embedder_for``). The record names the model and the collection the vectors belong
in, which the index stage writes to.
"""

from __future__ import annotations

import logging

from mediaflow.languages import LANGUAGES, USE_LANGUAGES
from mediaflow.models import ChunkSet, EmbeddingSet

log = logging.getLogger(__name__)


def run(ctx) -> EmbeddingSet:
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    language = ctx.language
    embedder = ctx.media_embedder
    if ctx.engines.embedder_name_for(language) and language not in USE_LANGUAGES:
        log.warning(
            "media %s is in %s, which %s was not trained on; it is embedded with it all the same "
            "(it still retrieves better than the English embedder), expect weaker search",
            ctx.media_id, LANGUAGES.get(language, language).title(), embedder.name)
    vectors = embedder.embed([c.text for c in chunks.chunks], on_progress=ctx.progress)
    return EmbeddingSet(model=embedder.name, dim=embedder.dim, vectors=vectors, language=language,
                        collection=ctx.embedding_collection)


def verify(ctx, record: EmbeddingSet) -> bool:
    """Done when there is a vector per chunk, made for the collection the media's language
    picks now (a changed MEDIAFLOW_MULTILINGUAL_EMBEDDER, or vectors from before media had
    per-embedder collections, embed again)."""
    chunks = ctx.store.read_model(ctx.media_id, "chunks.json", ChunkSet)
    collection = record.collection or ctx.collection
    return (chunks is not None and len(chunks.chunks) == len(record.vectors)
            and collection == ctx.embedding_collection)
