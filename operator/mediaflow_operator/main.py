"""Registers the handlers with kopf; the behaviour lives in ``handlers/``.

Run with ``mediaflow-operator`` (or ``kopf run -A path/to/main.py``).
"""

from __future__ import annotations

import kopf

from mediaflow.crd import GROUP, PLURAL, VERSION
from mediaflow_operator.handlers import deletion, health, jobs_watch, lifecycle, mediajob
from mediaflow_operator.jobs import MEDIAJOB_LABEL
from mediaflow_operator.settings import OperatorSettings

kopf.on.startup()(lifecycle.startup)
kopf.on.cleanup()(lifecycle.cleanup)
kopf.on.probe(id="running")(health.running_mediajobs)
kopf.on.probe(id="pending")(health.pending_mediajobs)

kopf.daemon(GROUP, VERSION, PLURAL, id="pipeline", cancellation_timeout=5.0)(mediajob.run_mediajob)
kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup")(deletion.delete_media)
kopf.on.event("batch", "v1", "jobs", labels={MEDIAJOB_LABEL: kopf.PRESENT})(jobs_watch.job_event)


def run() -> None:
    """Console script ``mediaflow-operator``: all namespaces, peering unless standalone."""
    settings = OperatorSettings()
    kopf.run(
        clusterwide=True,
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        liveness_endpoint="http://0.0.0.0:8080/healthz",
    )
