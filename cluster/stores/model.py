"""What a store needs from its workflow model: the pure package (coordinator.saga
or coordinator.twopc, passed as the module itself) and the states it makes.

The stores (workflows.py, kept.py, saga.py, twopc.py) and the API read a
model only through these names; a module satisfies a Protocol by having
them. `WorkflowModel[D, S]` is generic in the model's definition and state
types, so that SagaStore keeps saga.SagaState where WorkflowStore has S.
tests/cluster/test_kept.py checks that both machines fit.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol, TypeVar, runtime_checkable

from coordinator.grammar import FieldError

__all__ = ["D", "S", "WorkflowDefinition", "WorkflowModel", "WorkflowState"]


@runtime_checkable
class WorkflowDefinition(Protocol):
    """A parsed definition: saga.SagaDefinition, twopc.TransactionDefinition."""

    @property
    def id(self) -> str | None: ...


D_co = TypeVar("D_co", bound=WorkflowDefinition, covariant=True)


@runtime_checkable
class WorkflowState(Protocol[D_co]):
    """One workflow's state: saga.SagaState, twopc.TxState (frozen values),
    whose definition is a D_co."""

    @property
    def definition(self) -> D_co: ...

    @property
    def status(self) -> StrEnum:
        """Its `.value` is what listings filter on and retention summarizes."""
        ...

    @property
    def terminal(self) -> bool:
        """Nothing changes any more: the store keeps it packed (kept.py)."""
        ...

    @property
    def created_at_ms(self) -> int: ...

    @property
    def updated_at_ms(self) -> int: ...


D = TypeVar("D", bound=WorkflowDefinition)
S = TypeVar("S", bound=WorkflowState[Any])


@runtime_checkable
class WorkflowModel(Protocol[D, S]):
    """The functions and error of a pure workflow package, whose definitions
    are D and states S."""

    @property
    def DefinitionError(self) -> type[FieldError]:
        """What `parse_definition` raises (grammar/errors.py)."""
        ...

    def parse_definition(self, raw: object, known_services: frozenset[str] | None = None, *, stored: bool = False) -> D:
        """A user's definition, or DefinitionError naming the field."""
        ...

    def same_definition(self, a: D, b: D) -> bool: ...

    def start(self, definition: D, at_ms: int, by: str | None = None) -> tuple[S, tuple[object, ...]]:
        """A new workflow; `by` (who submitted it) goes into its first history record."""
        ...

    def definition_to_dict(self, definition: D) -> dict:
        """Plain (msgpack-able) form: what a definition is charged (kept.py)."""
        ...

    def state_to_dict(self, state: S) -> dict:
        """Plain (msgpack-able) form, for snapshots; `state_from_dict` inverts it."""
        ...

    def state_from_dict(self, raw: dict) -> S: ...

    def to_api(self, state: S) -> dict:
        """The API's object for the workflow (cluster/api/operations.py)."""
        ...

    def history_to_api(self, state: S, start: int = 0) -> list[dict]:
        """The API object's history records from the ``start``-th on."""
        ...

    def record_to_api(self, record: Any) -> dict:
        """One history record of a state as the API writes it."""
        ...
