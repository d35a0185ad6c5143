"""The filters of a workflow list and of a bulk action, as the API takes
them (query parameters of ``GET /v1/sagas`` and ``GET /v1/transactions``,
the JSON body of ``POST /v1/sagas/redrive``), checked into a
:class:`coordinator.cluster.stores.listing.Filter`. A bad value is 400
naming its field; nothing else is read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from coordinator.cluster.core.errors import InvalidInput
from coordinator.cluster.stores.listing import Filter

__all__ = [
    "FILTER_FIELDS",
    "ID_TEXT_CHARS_MAX",
    "format_cursor",
    "list_arguments",
    "parse_cursor",
    "parse_filter",
    "parse_time",
]

ID_TEXT_CHARS_MAX = 128
SERVICE_CHARS_MAX = 128
TIME_CHARS_MAX = 40
CURSOR = re.compile(r"([0-9]{1,16}):([A-Za-z0-9._:-]{1,128})\Z")
FILTER_FIELDS = ("service", "q", "created_after", "created_before")


def parse_time(field: str, raw: Any) -> int | None:
    """An ISO-8601 time (the API's own form, ``2026-12-04T14:00:00.000Z``;
    other offsets, or none for UTC) as epoch milliseconds; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw or len(raw) > TIME_CHARS_MAX:
        raise InvalidInput(field, "must be an ISO-8601 time such as 2026-12-04T14:00:00.000Z")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(field, f"{raw!r} is not an ISO-8601 time such as 2026-12-04T14:00:00.000Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_cursor(raw: str | None) -> tuple[int, str] | None:
    """The ``next`` of a previous page, or None."""
    if raw is None:
        return None
    match = CURSOR.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise InvalidInput("after", "must be the next cursor of a previous page")
    return int(match.group(1)), match.group(2)


def format_cursor(key: tuple[int, str] | None) -> str | None:
    return None if key is None else f"{key[0]}:{key[1]}"


def parse_filter(values: Mapping[str, Any], status: str | None, statuses: frozenset[str]) -> Filter:
    """``service``, ``q`` (id contains), ``created_after`` (inclusive) and
    ``created_before`` (exclusive) from ``values``, and ``status``."""
    if status is not None and status not in statuses:
        raise InvalidInput("state", f"must be one of {', '.join(sorted(statuses))}")
    service, text = values.get("service"), values.get("q")
    if service is not None and (not isinstance(service, str) or not 0 < len(service) <= SERVICE_CHARS_MAX):
        raise InvalidInput("service", f"a service name of 1 to {SERVICE_CHARS_MAX} characters")
    if text is not None and (not isinstance(text, str) or len(text) > ID_TEXT_CHARS_MAX):
        raise InvalidInput("q", f"at most {ID_TEXT_CHARS_MAX} characters of a workflow id")
    return Filter(
        status=status,
        service=service or None,
        id_contains=text or None,
        created_from_ms=parse_time("created_after", values.get("created_after")),
        created_before_ms=parse_time("created_before", values.get("created_before")),
    )


def list_arguments(query: Mapping[str, str]) -> dict:
    """The keyword arguments of ``operations.list_workflows`` in a list request's query."""
    return {
        "state": query.get("state"),
        "limit": query.get("limit"),
        "stale": query.get("stale"),
        "filters": {name: query.get(name) for name in FILTER_FIELDS},
        "order": query.get("order"),
        "after": query.get("after"),
        "view": query.get("view"),
    }
