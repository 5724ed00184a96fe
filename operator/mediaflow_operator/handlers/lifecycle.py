"""Startup (kopf timeouts, API client, pipeline with remote engines, metrics) and cleanup."""

from __future__ import annotations

import logging
import random

import kopf
from prometheus_client import start_http_server

from mediaflow.config import Settings
from mediaflow.kubeauth import SERVICE_ACCOUNT_DIR, TokenFileAuth
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
    # Mandatory: a replica starts paused and acts only once the peering says it is the highest;
    # otherwise a late starter runs unpaused until its first peering event. The chart creates
    # the KopfPeering objects; without them a non-standalone operator stays paused.
    settings.peering.mandatory = not ours.standalone
    # kopf pauses *every* operator when peers share a priority: each process draws its own,
    # so among replicas the highest runs and the rest stand by until its record expires.
    settings.peering.priority = (ours.peering_priority if ours.peering_priority is not None
                                 else random.SystemRandom().randint(1, 2**31 - 1))
    settings.peering.lifetime = ours.peering_lifetime
    # Watch exactly the namespaces given: no list/watch of namespaces or CRDs cluster-wide,
    # so the operator needs no cluster-scoped permission.
    settings.scanning.disabled = True
    # kopf's own progress in annotations, not in status.kopf (not in the CRD's status schema,
    # so the API server would prune it and kopf would lose track of retries).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.mediaflow.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.mediaflow.dev", key="last-handled-configuration")
    settings.posting.level = logging.INFO  # Kubernetes Events for info-level transitions too


async def startup(settings: kopf.OperatorSettings, logger: logging.Logger, **_) -> None:
    ours = OperatorSettings()
    configure_kopf(settings, ours)
    if ours.standalone:
        settings.peering.standalone = True
    connection, token_file = _connection_info(settings, logger)
    kube = KubeApi.from_connection(connection, timeout=ours.request_timeout,
                                   connect_timeout=ours.connect_timeout, token_file=token_file)
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


def _connection_info(settings: kopf.OperatorSettings,
                     logger: logging.Logger) -> tuple[kopf.ConnectionInfo, TokenFileAuth | None]:
    # The same credentials kopf itself uses: in-cluster service account, else kubeconfig.
    # kopf logs in again on a 401; our client re-reads the rotated token file instead.
    info = kopf.login_with_service_account(settings=settings, logger=logger)
    if info is not None:
        return info, TokenFileAuth(SERVICE_ACCOUNT_DIR / "token")
    info = kopf.login_with_kubeconfig(settings=settings, logger=logger)
    if info is None:
        raise kopf.PermanentError("no Kubernetes credentials found")
    return info, None


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
