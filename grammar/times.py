"""Times as the API writes them: ISO-8601 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_ms(at_ms: int) -> str:
    """Milliseconds since the Unix epoch as ISO-8601 UTC: 2024-05-01T12:00:00.000Z."""
    moment = _EPOCH + timedelta(milliseconds=at_ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
