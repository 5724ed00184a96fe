"""Startup (kopf timeouts, API client, pipeline with remote engines, metrics) and cleanup."""

from __future__ import annotations

import logging

import kopf
from prometheus_client import start_http_server

from mediaflow.config import Settings
from mediaflow.pipeline import Pipeline
from mediaflow_operator import runtime
from mediaflow_operator.kube import KubeApi
from mediaflow_operator.settings import OperatorSettings

ENDPOINTS = ("transcription_url", "embedding_url", "llm_url")


def configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    # Without explicit timeouts a dropped watch connection can stall silently
    # (kopf issues #585, #957): the server ends each watch, the client gives up a bit later.
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.watching.connect_timeout = ours.connect_timeout
    settings.networking.connect_timeout = ours.connect_timeout
    settings.networking.request_timeout = ours.request_timeout
    settings.peering.name = ours.peering_name
    settings.peering.mandatory = False
    settings.posting.level = logging.INFO  # Kubernetes Events for info-level transitions too


async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_) -> None:
    ours = OperatorSettings()
    configure_kopf(settings, ours)
    if ours.standalone:
        settings.peering.standalone = True
    connection = _connection_info(settings, logger)
    kube = KubeApi.from_connection(connection, timeout=ours.request_timeout,
                                   connect_timeout=ours.connect_timeout)
    # The operator drives the pipeline with remote engines only: models run in the serving apps.
    core = Settings(transcriber="remote", embedder="remote")
    missing = [f"MEDIAFLOW_{name.upper()}" for name in ENDPOINTS if not getattr(core, name)]
    if missing:  # in-process models (or a local vLLM) have no place in the operator's pod
        raise kopf.PermanentError(f"the operator needs the serving endpoints: set {', '.join(missing)}")
    rt = runtime.Runtime(ours, kube, Pipeline(core), runtime.Slots(ours.max_running))
    if ours.metrics_port:
        rt.metrics_server, _ = start_http_server(ours.metrics_port)
    runtime.install(rt)
    logger.info("mediaflow operator ready: max_running=%d, worker image %s",
                ours.max_running, ours.worker_image)


def _connection_info(settings: kopf.OperatorSettings, logger: logging.Logger) -> kopf.ConnectionInfo:
    # The same credentials kopf itself uses: in-cluster service account, else kubeconfig.
    info = (kopf.login_with_service_account(settings=settings, logger=logger)
            or kopf.login_with_kubeconfig(settings=settings, logger=logger))
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials found")
    return info


async def cleanup(**_) -> None:
    try:
        rt = runtime.current()
    except RuntimeError:
        return
    runtime.install(None)
    if rt.metrics_server is not None:  # frees the port for a restart in the same process
        rt.metrics_server.shutdown()
        rt.metrics_server.server_close()
    rt.stage_pool.shutdown(wait=False, cancel_futures=True)
    await rt.kube.close()
    rt.pipeline.close()
