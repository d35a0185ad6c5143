"""Builders for saga and transaction definitions.

    saga = (
        SagaBuilder("order-42", timeout_s=600)
        .step("create-order", "orders",
              action=("POST", "/orders", {"sku": "W-1", "qty": 3}),
              compensation=("POST", "/orders/cancel", {"order": output("create-order", "order_id")}),
              timeout_s=5, retry=Retry(max_attempts=5, backoff_s=0.1, max_backoff_s=5))
        .await_signal("approval", "approved", timeout_s=300)
    )
    await client.submit_saga(saga)          # or saga.build() for the plain dict

    tx = TransactionBuilder("tx-1", timeout_s=10).participant(
        "bank-a", prepare=("/tx/prepare", {"delta": -30}), commit="/tx/commit", abort="/tx/abort")

Both take ``release="2.4.1"`` too: the workflow then runs only on workers
of that release (``[workers]`` in the cluster file); without it, on any.

``build()`` checks the definition with the same pure validation the cluster
applies and raises :class:`coordinator.client.InvalidRequest` naming the field.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from coordinator import saga as saga_model
from coordinator import twopc as twopc_model

from .errors import InvalidRequest

__all__ = ["SagaBuilder", "TransactionBuilder", "Retry", "output"]


def output(step: str, path: str = "") -> str:
    """A reference to an earlier step's output (or a field of it, dot-separated)."""
    return f"${{steps.{step}.output{'.' + path if path else ''}}}"


@dataclass(frozen=True, slots=True)
class Retry:
    max_attempts: int = 5
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0

    def to_json(self) -> dict:
        return {"max_attempts": self.max_attempts, "backoff_s": self.backoff_s, "max_backoff_s": self.max_backoff_s}


def _call(call: tuple) -> dict:
    method, path, *rest = call
    result = {"method": method, "path": path}
    if rest and rest[0] is not None:
        result["body"] = copy.deepcopy(rest[0])
    return result


class SagaBuilder:
    def __init__(
        self, saga_id: str | None = None, *, timeout_s: float | None = None, release: str | None = None
    ) -> None:
        """``release``: run only on workers of this release (None: any worker)."""
        self._definition: dict[str, Any] = {"steps": []}
        if saga_id is not None:
            self._definition["id"] = saga_id
        if timeout_s is not None:
            self._definition["timeout_s"] = timeout_s
        if release is not None:
            self._definition["release"] = release

    def step(
        self,
        name: str,
        service: str,
        *,
        action: tuple,
        compensation: tuple | None = None,
        timeout_s: float | None = None,
        retry: Retry | None = None,
        compensation_retry: Retry | None = None,
    ) -> SagaBuilder:
        """Add an action step; ``action`` and ``compensation`` are (METHOD, PATH[, BODY])."""
        step: dict[str, Any] = {"name": name, "service": service, "action": _call(action)}
        if compensation is not None:
            step["compensation"] = _call(compensation)
            if compensation_retry is not None:
                step["compensation"]["retry"] = compensation_retry.to_json()
        if timeout_s is not None:
            step["timeout_s"] = timeout_s
        if retry is not None:
            step["retry"] = retry.to_json()
        self._definition["steps"].append(step)
        return self

    def await_signal(self, name: str, signal: str, *, timeout_s: float | None = None) -> SagaBuilder:
        step: dict[str, Any] = {"name": name, "await": signal}
        if timeout_s is not None:
            step["timeout_s"] = timeout_s
        self._definition["steps"].append(step)
        return self

    def build(self) -> dict:
        definition = copy.deepcopy(self._definition)
        try:
            saga_model.parse_definition(definition)
        except saga_model.DefinitionError as error:
            raise InvalidRequest(str(error), details={"field": error.field}) from None
        return definition


class TransactionBuilder:
    def __init__(self, tx_id: str | None = None, *, timeout_s: float | None = None, release: str | None = None) -> None:
        """``release``: run only on workers of this release (None: any worker)."""
        self._definition: dict[str, Any] = {"participants": []}
        if tx_id is not None:
            self._definition["id"] = tx_id
        if timeout_s is not None:
            self._definition["timeout_s"] = timeout_s
        if release is not None:
            self._definition["release"] = release

    def participant(self, service: str, *, prepare: tuple | str, commit: str, abort: str) -> TransactionBuilder:
        """``prepare`` is PATH or (PATH, BODY); commit and abort are paths."""
        path, body = (prepare, None) if isinstance(prepare, str) else prepare
        call: dict[str, Any] = {"path": path}
        if body is not None:
            call["body"] = copy.deepcopy(body)
        self._definition["participants"].append(
            {"service": service, "prepare": call, "commit": {"path": commit}, "abort": {"path": abort}}
        )
        return self

    def build(self) -> dict:
        definition = copy.deepcopy(self._definition)
        try:
            twopc_model.parse_definition(definition)
        except twopc_model.DefinitionError as error:
            raise InvalidRequest(str(error), details={"field": error.field}) from None
        return definition
