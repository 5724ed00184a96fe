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
    connection = _connection_info(logger)
    kube = KubeApi.from_connection(connection, timeout=ours.request_timeout,
                                   connect_timeout=ours.connect_timeout)
    # The operator drives the pipeline with remote engines only: models run in the serving apps.
    core = Settings(transcriber="remote", embedder="remote")
    runtime.install(runtime.Runtime(ours, kube, Pipeline(core), runtime.Slots(ours.max_running)))
    if ours.metrics_port:
        start_http_server(ours.metrics_port)
    logger.info("mediaflow operator ready: max_running=%d, worker image %s",
                ours.max_running, ours.worker_image)


def _connection_info(logger: logging.Logger) -> kopf.ConnectionInfo:
    # The same credentials kopf itself uses: in-cluster service account, else kubeconfig.
    info = kopf.login_with_service_account(logger=logger) or kopf.login_with_kubeconfig(logger=logger)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials found")
    return info


async def cleanup(**_) -> None:
    try:
        rt = runtime.current()
    except RuntimeError:
        return
    runtime.install(None)
    await rt.kube.close()
    rt.pipeline.close()
