"""Kubernetes-convention conditions (type/status/reason/message/lastTransitionTime)."""

from __future__ import annotations

from datetime import UTC, datetime

from mediaflow.status import Condition

def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def set_condition(
    conditions: list[Condition], type_: str, status: str, reason: str, message: str = "",
    generation: int | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; lastTransitionTime moves only on a status change."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed_at = previous.last_transition_time if previous and previous.status == status else now()
    updated = Condition(type=type_, status=status, reason=reason, message=message[:32768],
                        last_transition_time=changed_at, observed_generation=generation)
    return [c for c in conditions if c.type != type_] + [updated]


def is_true(conditions: list[Condition], type_: str) -> bool:
    return any(c.type == type_ and c.status == "True" for c in conditions)
