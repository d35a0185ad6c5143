"""Times as the API writes them: ISO-8601 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Every API object and event renders its times here, on every node, for
# every command applied: datetime arithmetic and isoformat cost ~3 us a call,
# so the part down to the second is kept for the seconds last seen (a
# workload's times fall in few seconds) and only the milliseconds are
# formatted each time (~0.7 us). Bounded: cleared when full.
_SECONDS_KEPT_MAX = 4096
_seconds: dict[int, str] = {}


def format_ms(at_ms: int) -> str:
    """Milliseconds since the Unix epoch as ISO-8601 UTC: 2024-05-01T12:00:00.000Z."""
    seconds, ms = divmod(at_ms, 1000)
    head = _seconds.get(seconds)
    if head is None:
        if len(_seconds) >= _SECONDS_KEPT_MAX:
            _seconds.clear()
        head = _seconds[seconds] = (_EPOCH + timedelta(seconds=seconds)).isoformat()[:19]
    return f"{head}.{ms:03d}Z"
