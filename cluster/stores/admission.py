"""The state budget's check at apply time: the limits a submit command
carries (``[limits]`` of the cluster file, cluster/core/limits.py) against
the bytes the stores keep.

It lives with the stores, which run it when a submission is applied; the
API runs it too, to refuse early what the state machine would refuse.
"""

from __future__ import annotations

from typing import Any

from coordinator.consensus import Rejection

__all__ = ["check_admission"]


def _limit(raw: dict, key: str) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Rejection("invalid", f"limits.{key}: must be a positive integer")
    return value


def check_admission(raw_limits: Any, noun: str, charge: int, charged: int) -> None:
    """Refuse (as a recorded rejection) a new workflow charged ``charge``
    bytes when ``charged`` bytes are kept. No limits in the command (an
    entry written before the budget existed): admitted, as it was then."""
    if raw_limits is None:
        return
    if not isinstance(raw_limits, dict):
        raise Rejection("invalid", "limits: must be an object")
    state_max, workflow_max = _limit(raw_limits, "state_bytes_max"), _limit(raw_limits, "workflow_bytes_max")
    if charge > workflow_max:
        raise Rejection(
            "too_large", f"definition: {charge} bytes encoded, over the limit of {workflow_max} bytes per {noun}"
        )
    if charged + charge > state_max:
        raise Rejection(
            "overloaded",
            f"state: {charged} bytes are kept and this {noun} needs {charge} more, over the budget of "
            f"{state_max} bytes; retry when retention has pruned finished workflows",
        )
