"""Engine factories for the apps: the core engine classes built from ``mediaflow`` settings
(``MEDIAFLOW_*`` env + overrides). No Ray here: uvicorn-run apps use them too.

    create_app(partial(load_transcriber, {"asr_batch_size": 8}))
"""

from __future__ import annotations

import os
import sys
from typing import Any


def use_engine_threads(threads: int) -> None:
    """Give torch the engine's ``threads``.

    Ray sets ``OMP_NUM_THREADS`` to an actor's ``num_cpus`` (1 by default), which would
    leave torch (sentence-transformers, WhisperX's feature extraction) on one thread
    while the engine's ``threads`` setting asks for more."""
    if "torch" not in sys.modules:
        # OpenMP reads this once, when torch starts; it then holds for every thread
        os.environ["OMP_NUM_THREADS"] = str(threads)
        return
    import torch

    torch.set_num_threads(threads)  # later threads only: OpenMP's setting is per thread


def load_transcriber(engine_overrides: dict[str, Any] | None = None):
    from mediaflow.config import Settings
    from mediaflow.engines.language_routing import load_transcriber

    settings = Settings(**(engine_overrides or {}))
    use_engine_threads(settings.threads)
    return load_transcriber(settings)


def load_embedder(engine_overrides: dict[str, Any] | None = None):
    """The embeddings app's models: sentence-transformers (English media) and, unless
    ``multilingual_embedder`` is ``none``, USE-multilingual v3 (every other language), as
    ``ServedEmbedders`` (a request's ``model`` picks one)."""
    from mediaflow.config import Settings
    from mediaflow.engines import MULTILINGUAL_OFF
    from mediaflow.engines.st_embedder import SentenceTransformerEmbedder
    from mediaflow_serving.apps.embeddings_api import ServedEmbedders

    settings = Settings(**(engine_overrides or {}))
    use_engine_threads(settings.threads)
    models = [SentenceTransformerEmbedder(
        settings.embedding_model, device=settings.device, batch_size=settings.embedding_batch_size,
        threads=settings.threads,
    )]
    if settings.multilingual_embedder != MULTILINGUAL_OFF:
        from mediaflow.engines.use_embedder import UniversalSentenceEncoder

        # numpy on the CPU whatever ``device`` is (a GPU replica runs it next to MiniLM on CUDA)
        models.append(UniversalSentenceEncoder(threads=settings.threads))
    return ServedEmbedders(models)
