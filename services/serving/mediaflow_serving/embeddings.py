"""Ray Serve embeddings app: sentence-transformers (all-MiniLM-L6-v2, English media) and
USE-multilingual v3 (the other languages) behind ``POST /v1/embeddings``, the request's
``model`` picking one; requests that arrive while the model is busy merged into its next
``encode`` call, one per model (``apps.batching``: why not ``@serve.batch``).

Serve config: ``import_path: mediaflow_serving.embeddings:app``, ``args``
``{engine: {...}, serving: {...}}`` as for the transcription app;
``serving.embedding_max_batch_size`` / ``embedding_batch_wait_s`` tune the batching.

``check_health`` (every ``health_check_period_s``) embeds one short text with every served
model, bounded by ``health_probe_timeout_s``, plus a CUDA device check on a GPU
(``mediaflow_serving.health``). The probe runs on the app's encode thread, the one thread
that calls the models, and only when no request is queued or encoding (the encodes exercise
the model then). From a thread of its own, it gave the process a second torch OpenMP team,
and the replica lost a tenth of its throughput for as long as it lived
(``bench/serving.py``'s 32-text requests, four alternating rounds each: 0.77 and 0.82 of raw
against 0.88 and 0.89 with no check at all; skipping the probe while busy alone, 0.78
against 0.92; on the encode thread, 0.98 against 0.90).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from mediaflow_serving.engines import load_embedder
from mediaflow_serving.health import (
    HealthCheck,
    Unhealthy,
    cuda_probe,
    embedder_probe,
    slot_engine,
    work_running,
)
from mediaflow_serving.settings import ServingSettings


class EmbeddingsArgs(BaseModel):
    engine: dict[str, Any] = {}
    serving: dict[str, Any] = {}
    health_probe_timeout_s: float = 20.0


def every_model_probe(engine):
    """``embedder_probe`` of each model the app serves (``ServedEmbedders.parts``), in turn."""
    probes = [embedder_probe(part) for part in getattr(engine, "parts", None) or (engine,)]

    def probe() -> None:
        for one in probes:
            one()

    return probe


def embeddings_health(app, timeout_s: float = 20.0) -> HealthCheck:
    """The replica's check over the app built in it (see ``mediaflow_serving.health``)."""
    return HealthCheck(slot_engine(app), inference=every_model_probe, device=cuda_probe,
                       busy=work_running(app), timeout_s=timeout_s,
                       model_thread=app.state.model_thread)


@serve.deployment(
    name="EmbeddingsServer",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=64,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress()
class EmbeddingsServer:
    def __init__(self, args: EmbeddingsArgs):
        self.args = args
        self._health: HealthCheck | None = None

    async def check_health(self) -> None:
        if self._health is None:
            raise Unhealthy("the app is not built")
        await self._health()

    def __serve_build_asgi_app__(self):
        from mediaflow_serving.apps.embeddings_api import create_app

        settings = ServingSettings(**self.args.serving)
        app = create_app(
            partial(load_embedder, self.args.engine),
            settings=settings,
            metrics_to_ray=True,
        )
        self._health = embeddings_health(app, self.args.health_probe_timeout_s)
        return app


def app(args: EmbeddingsArgs | dict[str, Any] | None = None) -> Application:
    return EmbeddingsServer.bind(EmbeddingsArgs.model_validate(args or {}))
