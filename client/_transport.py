"""What the client's transports share: the endpoint order, the leader they
remember, and the retry policy. A transport turns an *operation* (a name
from :data:`OPERATIONS` and its arguments) into one call to one node and
answers the JSON object the cluster returned; the public class
(:class:`coordinator.client.Coordinator`) holds all method logic.

A subclass implements:

- ``normalise(endpoint)``: the endpoint's canonical form, or ValueError;
- ``_send_once(endpoint, operation, args, timeout_s)``: one call to that
  endpoint, following the leader it names at most REDIRECTS_MAX times,
  answering ``(object, endpoint that answered)`` or raising a
  :class:`~coordinator.client.errors.CoordinatorError`;
- ``watch(kind, workflow_id, timeout_s, every_change)``: the workflow's
  objects, now and as they change, ending with a terminal one or when
  ``timeout_s`` passes;
- ``close()``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from .errors import CoordinatorError, NoLeader, NotFound, NotLeader, OutcomeUnknown, Timeout, Unavailable
from .tls import ClientTls
from .types import SAGA_TERMINAL_STATES, TRANSACTION_TERMINAL_STATES

__all__ = ["OPERATIONS", "REDIRECTS_MAX", "RETRYABLE", "Transport", "backoff_s", "is_terminal"]

REDIRECTS_MAX = 3
# Errors after which the same request is sent again (it is idempotent).
RETRYABLE = (NoLeader, NotLeader, OutcomeUnknown, Unavailable)
BACKOFF_S_MULTIPLIER = 0.1
_DELETED_UNKNOWN = object()
BACKOFF_S_MAX = 2.0

# operation -> its arguments (every transport maps each of them)
OPERATIONS = {
    "cluster": (),
    "put_service": ("name", "body", "force", "request"),
    "get_service": ("name",),
    "list_services": (),
    "list_workers": (),
    "delete_service": ("name", "request"),
    "service_outcomes": ("name", "after"),
    "submit_saga": ("definition", "wait_s"),
    "get_saga": ("id", "wait_s", "since"),
    "list_saga": ("state", "limit", "filters"),
    "signal_saga": ("id", "name", "payload"),
    "redrive_saga": ("id",),
    "redrive_sagas": ("body",),
    "submit_tx": ("definition", "wait_s"),
    "get_tx": ("id", "wait_s", "since"),
    "list_tx": ("state", "limit", "filters"),
}


def is_terminal(kind: str, workflow: dict) -> bool:
    states = SAGA_TERMINAL_STATES if kind == "saga" else TRANSACTION_TERMINAL_STATES
    return workflow.get("state") in states


NODES_KNOWN_MAX = 64  # nodes a client remembers as redirect targets (a cluster has at most 9)


def backoff_s(failures: int) -> float:
    """Random exponential backoff after ``failures`` failed tries (as tenacity's)."""
    return random.uniform(0, min(BACKOFF_S_MAX, BACKOFF_S_MULTIPLIER * 2**failures))


class Transport:
    def __init__(
        self,
        endpoints: list[str],
        *,
        timeout_s: float,
        attempts: int,
        retry_budget_s: float,
        token: str | None,
        tls: ClientTls | None = None,
    ) -> None:
        self.endpoints = [self.normalise(e) for e in endpoints]
        if not self.endpoints:
            raise ValueError("at least one endpoint is required")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.retry_budget_s = retry_budget_s
        self.token = token
        self.tls = tls  # coordinator.client.tls: the CA to trust, the certificate to present
        self._leader: str | None = None
        # Where a redirect may lead (the token goes along): the endpoints,
        # and the nodes a trusted node's /v1/cluster lists (learn_nodes).
        self._nodes: set[str] = set(self.endpoints)

    # -- for subclasses ----------------------------------------------------------------------
    NODE_FIELD = ""  # the field of /v1/cluster's nodes that holds this transport's address

    @staticmethod
    def normalise(endpoint: str) -> str:
        raise NotImplementedError

    async def _cluster_view(self, target: str) -> Any:
        """``/v1/cluster`` as ``target`` sees it, one call without redirects."""
        raise NotImplementedError

    async def _send_once(self, endpoint: str, operation: str, args: dict, timeout_s: float | None) -> tuple[Any, str]:
        raise NotImplementedError

    def watch(self, kind: str, workflow_id: str, *, timeout_s: float | None, every_change: bool) -> AsyncIterator[dict]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def order(self) -> list[str]:
        """The endpoints to try, the remembered leader first."""
        if self._leader is None:
            return list(self.endpoints)
        return [self._leader] + [e for e in self.endpoints if e != self._leader]

    def remember(self, endpoint: str) -> None:
        self._leader = endpoint

    def learn_nodes(self, view: Any) -> None:
        """Add the nodes a cluster view lists (at most NODES_KNOWN_MAX in all)."""
        nodes = view.get("nodes") if isinstance(view, dict) else None
        for node in nodes if isinstance(nodes, list) else []:
            address = node.get(self.NODE_FIELD) if isinstance(node, dict) else None
            if isinstance(address, str) and len(self._nodes) < NODES_KNOWN_MAX:
                try:
                    self._nodes.add(self.normalise(address))
                except ValueError:
                    continue

    async def may_follow(self, current: str, target: str) -> bool:
        """Whether a redirect from the node ``current`` to ``target`` stays in
        the cluster: ``target`` is an endpoint or a node that ``current``'s
        /v1/cluster lists (asked when ``target`` is new). Else it is not
        followed, so the token never reaches another host."""
        try:
            target = self.normalise(target)
        except ValueError:
            return False
        if target not in self._nodes:
            try:
                self.learn_nodes(await self._cluster_view(current))
            except CoordinatorError:
                return False
        return target in self._nodes

    @staticmethod
    def foreign_redirect(what: str, current: str, target: str) -> NotLeader:
        return NotLeader(
            f"{what}: {current} redirected to {target[:200]!r}, which is not a node of this cluster; not followed"
        )

    async def request_at(self, endpoint: str, operation: str, args: dict) -> Any:
        """One call to ``endpoint`` (following the leader it names), no retries."""
        data, _ = await self._send_once(self.normalise(endpoint), operation, args, None)
        return data

    async def request(self, operation: str, args: dict, *, timeout_s: float | None = None) -> Any:
        """Call until a definite answer: every endpoint in order (the leader
        first) while they answer a retryable error, then all again after a
        backoff while attempts and budget last."""
        assert operation in OPERATIONS and set(args) <= set(OPERATIONS[operation]), (operation, args)
        return await self.with_retries(
            lambda endpoint: self._send_once(endpoint, operation, args, timeout_s), operation
        )

    async def with_retries(self, send: Callable[[str], Awaitable[tuple[Any, str]]], what: str) -> Any:
        """``send(endpoint)`` -> (answer, endpoint that answered), retried as :meth:`request` says."""

        uncertain = False  # an earlier try may have taken effect

        async def attempt() -> Any:
            nonlocal uncertain
            last: CoordinatorError | None = None
            for endpoint in self.order():
                try:
                    data, answered_by = await send(endpoint)
                except RETRYABLE as exc:  # another node may answer (every operation is idempotent)
                    uncertain = uncertain or isinstance(exc, OutcomeUnknown)
                    last = exc
                    continue
                except NotFound:
                    # A delete retried after an unknown outcome: the earlier try
                    # may be what deleted it - not a definite "it was not there".
                    if uncertain and what.lower().startswith("delete"):
                        return _DELETED_UNKNOWN  # not retried: raised below
                    raise
                self.remember(answered_by)
                return data
            assert last is not None
            raise last

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RETRYABLE),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.retry_budget_s),
            wait=wait_random_exponential(multiplier=BACKOFF_S_MULTIPLIER, max=BACKOFF_S_MAX),
            reraise=True,
        )
        try:
            result = await retrying(attempt)
        except TimeoutError as exc:
            raise Timeout(f"{what}: timed out") from exc
        if result is _DELETED_UNKNOWN:
            raise OutcomeUnknown(f"{what}: not found now, but an earlier try may have deleted it")
        return result
