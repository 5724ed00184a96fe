"""Liveness probe content (``@kopf.on.probe``) served on kopf's liveness endpoint."""

from __future__ import annotations

from mediaflow_operator import runtime


def running_mediajobs(**_) -> int:
    return len(runtime.current().slots.running)


def pending_mediajobs(**_) -> int:
    return runtime.current().phase_counts["Pending"]
