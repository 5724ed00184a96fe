"""Registers the handlers with kopf; the behaviour lives in ``handlers/``.

Run with ``mediaflow-operator`` (or ``kopf run -A path/to/main.py``).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

import kopf

from mediaflow.crd import GROUP, PLURAL, VERSION
from mediaflow_operator.handlers import deletion, health, jobs_watch, lifecycle, mediajob, rerun
from mediaflow_operator.jobs import MANAGED_BY, MANAGED_BY_LABEL
from mediaflow_operator.settings import OperatorSettings

kopf.on.startup()(lifecycle.startup)
kopf.on.cleanup()(lifecycle.cleanup)
kopf.on.probe(id="running")(health.running_mediajobs)
kopf.on.probe(id="pending")(health.pending_mediajobs)

kopf.daemon(GROUP, VERSION, PLURAL, id="pipeline", cancellation_timeout=5.0)(mediajob.run_mediajob)
kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup")(deletion.delete_media)
kopf.on.field(GROUP, VERSION, PLURAL, id="rerun", field=rerun.RERUN_FIELD)(rerun.rerun_requested)
kopf.on.event("batch", "v1", "jobs", labels={MANAGED_BY_LABEL: MANAGED_BY})(jobs_watch.job_event)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediaflow-operator",
        description="Reconcile MediaJob resources (mediajobs.mediaflow.dev): worker Jobs for the ffmpeg "
        "stages, the serving endpoints for transcription, embeddings and summary, Qdrant for the index. "
        "Configured by MEDIAFLOW_OPERATOR_* and MEDIAFLOW_* environment variables.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="watch this namespace (repeatable); default: MEDIAFLOW_OPERATOR_WATCH_NAMESPACES, "
                            "else the operator's own namespace (MEDIAFLOW_OPERATOR_NAMESPACE)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                        help="kopf liveness endpoint (default: %(default)s)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def run(argv: list[str] | None = None) -> None:
    """Console script ``mediaflow-operator``: peering unless MEDIAFLOW_OPERATOR_STANDALONE."""
    parser = _parser()
    args = parser.parse_args(argv)
    settings = OperatorSettings()
    if args.all_namespaces:
        namespaces = None
    elif args.namespace:
        namespaces = args.namespace
    else:
        try:
            namespaces = settings.watched_namespaces()
        except ValueError as exc:
            parser.error(str(exc))
    kopf.configure(verbose=args.verbose)
    operator = kopf.operator(
        clusterwide=namespaces is None,
        namespaces=namespaces or [],
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        liveness_endpoint=args.liveness,
    )
    # uvloop, as `kopf run` uses: kopf.run() would stay on asyncio's own loop, which spends
    # several times the CPU per watch event and API call in a burst of MediaJobs.
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        try:
            runner.run(operator)
        except asyncio.CancelledError:  # kopf's own shutdown path, as in kopf.run()
            pass


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # optional (no wheel for the platform): asyncio's loop works, slower
        return None
    return uvloop.new_event_loop
