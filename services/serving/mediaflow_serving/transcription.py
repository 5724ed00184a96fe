"""Ray Serve transcription app: WhisperX behind the OpenAI-shaped FastAPI ingress.

Serve config: ``import_path: mediaflow_serving.transcription:app`` with ``args``
``{engine: {...}, serving: {...}}`` (``mediaflow.config.Settings`` and
``ServingSettings`` fields; ``MEDIAFLOW_*`` env vars from the runtime_env apply too).
The model loads once per replica, when the app starts; ``num_gpus``/``num_cpus`` per
replica and autoscaling come from the serve config's ``deployments`` section.

``check_health`` (every ``health_check_period_s``) proves the model still runs
(``mediaflow_serving.health``): a tiny Whisper inference while the replica is idle, only a
CUDA device check while a transcription is in flight (never waiting for it), each bounded
by ``health_probe_timeout_s`` (below the config's ``health_check_timeout_s``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from pydantic import BaseModel
from ray import serve
from ray.serve import Application

from mediaflow_serving.engines import load_transcriber
from mediaflow_serving.health import (
    HealthCheck,
    Unhealthy,
    cuda_probe,
    slot_engine,
    whisper_probe,
    work_running,
)
from mediaflow_serving.settings import ServingSettings


class TranscriptionArgs(BaseModel):
    engine: dict[str, Any] = {}
    serving: dict[str, Any] = {}
    health_probe_timeout_s: float = 20.0


def transcription_health(app, timeout_s: float = 20.0) -> HealthCheck:
    """The replica's check over the app built in it (see ``mediaflow_serving.health``)."""
    return HealthCheck(slot_engine(app), inference=whisper_probe, device=cuda_probe,
                       busy=work_running(app), timeout_s=timeout_s)


@serve.deployment(
    name="TranscriptionServer",
    ray_actor_options={"num_cpus": 1},
    max_ongoing_requests=8,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
@serve.ingress()
class TranscriptionServer:
    def __init__(self, args: TranscriptionArgs):
        self.args = args
        self._health: HealthCheck | None = None

    async def check_health(self) -> None:
        if self._health is None:
            raise Unhealthy("the app is not built")
        await self._health()

    def __serve_build_asgi_app__(self):
        # built in the replica: the app holds the model and unpicklable metric locks
        from mediaflow_serving.apps.transcription_api import create_app

        app = create_app(
            partial(load_transcriber, self.args.engine),
            settings=ServingSettings(**self.args.serving),
            metrics_to_ray=True,
        )
        self._health = transcription_health(app, self.args.health_probe_timeout_s)
        return app


def app(args: TranscriptionArgs | dict[str, Any] | None = None) -> Application:
    return TranscriptionServer.bind(TranscriptionArgs.model_validate(args or {}))
