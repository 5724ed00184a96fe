"""Prometheus metrics of the operator (served on ``metrics_port``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import Counter, Gauge, Histogram

from mediaflow.status import PHASES

MEDIAJOBS_BY_PHASE = Gauge("mediaflow_operator_mediajobs", "MediaJobs seen, by phase", ["phase"])
STAGE_SECONDS = Histogram(
    "mediaflow_operator_stage_seconds", "Stage wall time as driven by the operator", ["stage"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
STAGE_RETRIES = Counter("mediaflow_operator_stage_retries_total", "Temporary stage failures retried", ["stage"])
STAGE_FAILURES = Counter("mediaflow_operator_stage_failures_total", "Stages that failed for good", ["stage"])


def publish_phase_counts(counts: Mapping[str, int], phases: Iterable[str] = PHASES) -> None:
    """Set the gauge of ``phases`` (by default all) from ``counts``: called with the phases that
    changed, so a status save costs O(1), not a recount of every MediaJob."""
    for phase in phases:
        MEDIAJOBS_BY_PHASE.labels(phase).set(counts.get(phase, 0))
