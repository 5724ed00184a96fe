"""Backends: where jobs run. Both read results the same way (artifact store + Qdrant)."""

from __future__ import annotations

from mediaflow_gateway.backends.base import Backend

__all__ = ["Backend", "build_backend"]


def build_backend(settings, core_settings=None) -> Backend:
    """The backend ``settings.backend`` names, over a Pipeline built from the core settings."""
    from mediaflow.config import get_settings
    from mediaflow.pipeline import Pipeline

    pipeline = Pipeline(core_settings or get_settings())
    if settings.backend == "cluster":
        from mediaflow_gateway.backends.cluster import ClusterBackend, KubeClient

        return ClusterBackend(settings, pipeline, KubeClient.from_settings(settings), owns_pipeline=True)
    from mediaflow_gateway.backends.embedded import EmbeddedBackend

    return EmbeddedBackend(settings, pipeline, owns_pipeline=True)
