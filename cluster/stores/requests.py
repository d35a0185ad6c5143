"""Registry writes answered once per request id, however often they are retried.

A client that gets no answer to a PUT or DELETE of a service (outcome
unknown, connection reset, timeout) sends it again; if the first attempt
had committed and another client's write came between the two, applying
the retry again would overwrite that later write with an older value: a
write taking effect twice, after a concurrent one (found by the simulation,
seed 413, as a registry_linearizable failure). So a registry write may
carry a request id (``Idempotency-Key`` on HTTP, ``idempotency-key``
metadata on gRPC; the client library sends a fresh one per call and the
same one on every retry), and the state machine keeps the answer of each
applied id for ``REQUEST_AGE_MS_MAX`` (by the leaders' ``at_ms`` stamps) and
at most ``REQUEST_IDS_MAX`` ids: a repeated id gets the first answer and
changes nothing. A rejected write is not kept - it changed nothing, so a
retry may take effect. This is replicated state, the same on every node,
in the snapshot.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

__all__ = ["REQUEST_AGE_MS_MAX", "REQUEST_IDS_MAX", "REQUEST_ID_PATTERN", "RequestLog", "valid_request_id"]

REQUEST_IDS_MAX = 10_000
REQUEST_AGE_MS_MAX = 10 * 60 * 1000  # far longer than any client's retry budget
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def valid_request_id(value: object) -> bool:
    return isinstance(value, str) and REQUEST_ID_PATTERN.fullmatch(value) is not None


class RequestLog:
    def __init__(self) -> None:
        self._answers: OrderedDict[str, tuple[int, Any]] = OrderedDict()  # id -> (at_ms, answer)

    def answer(self, request_id: str, at_ms: int) -> tuple[bool, Any]:
        """(True, the first answer) if ``request_id`` was applied; forgets ids
        older than REQUEST_AGE_MS_MAX before ``at_ms`` first."""
        while self._answers:
            oldest_id, (oldest_ms, _) = next(iter(self._answers.items()))
            if oldest_ms >= at_ms - REQUEST_AGE_MS_MAX:
                break
            del self._answers[oldest_id]
        kept = self._answers.get(request_id)
        return (True, kept[1]) if kept is not None else (False, None)

    def record(self, request_id: str, at_ms: int, answer: Any) -> None:
        self._answers[request_id] = (at_ms, answer)
        while len(self._answers) > REQUEST_IDS_MAX:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)

    def snapshot(self) -> list:
        return [[request_id, at_ms, answer] for request_id, (at_ms, answer) in self._answers.items()]

    def restore(self, data: list) -> None:
        self._answers = OrderedDict((request_id, (at_ms, answer)) for request_id, at_ms, answer in data)
