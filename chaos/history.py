"""The history of a chaos run: what clients asked and heard, what the
participants did, and what the cluster looked like once the faults stopped.

    history = History(clock=time.monotonic)
    handle = history.invoke(process=3, kind="registry_put", key="orders", value={"url": u})
    ...                                   # the request, under faults
    handle.ok(200)                        # or .fail(409) / .unknown("timeout")
    history.add_effects(effects)          # from the recording participants
    history.record_workflow(saga_object)  # GET after the faults stopped
    history.record_digest("n1", digest)
    history.dump(path)                    # check again offline: History.load(path)

An operation's `outcome` is "ok", "fail" (it definitely did not take
effect) or "unknown" (a timeout, a dropped connection, a 503
outcome_unknown: it may or may not have taken effect). An operation still
pending when the history is read is reported as unknown with
`complete_s = None`.

What `value` and `result` hold, by kind (the checkers rely on it):

    submit_saga / submit_tx   key = workflow id, value = the definition,
                              result = the HTTP status (or the answer body)
    registry_put              key = service name, value = the value written
    registry_delete           key = service name
    registry_get              key = service name, result = the value read,
                              None when the name is absent (404); recorded
                              in the same shape a put writes

Timestamps are seconds from one monotonic clock shared with the recording
participants (`Effect.at_s` is `time.monotonic()`), so effects and
operations can be ordered against each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.chaos.participants import Effect

__all__ = ["OUTCOMES", "Effect", "History", "NodeDigest", "Operation", "OperationHandle"]

OUTCOMES = ("ok", "fail", "unknown")
HISTORY_FORMAT_VERSION = 1
# Bounds on one history: beyond them the recorder refuses (ValueError).
OPERATIONS_MAX = 1_000_000
EFFECTS_MAX = 1_000_000
WORKFLOWS_MAX = 1_000_000
NODES_MAX = 64
FAULTS_MAX = 100_000

Clock = Callable[[], float]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_time(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Operation:
    """One client operation: invoked at `invoke_s`, answered at `complete_s`."""

    id: int
    process: int | str
    kind: str
    key: str | None
    value: Any
    invoke_s: float
    complete_s: float | None  # None: never answered (outcome "unknown")
    outcome: str
    result: Any = None

    def __post_init__(self) -> None:
        _check(isinstance(self.id, int) and self.id >= 0, f"operation id {self.id!r}")
        _check(isinstance(self.kind, str) and self.kind != "", f"operation kind {self.kind!r}")
        _check(self.key is None or isinstance(self.key, str), f"operation key {self.key!r}")
        _check(self.outcome in OUTCOMES, f"operation outcome {self.outcome!r} not in {OUTCOMES}")
        _check(_is_time(self.invoke_s), f"operation {self.id}: invoke_s {self.invoke_s!r}")
        if self.complete_s is None:
            _check(self.outcome == "unknown", f"operation {self.id}: only an unknown op may lack complete_s")
        else:
            _check(
                _is_time(self.complete_s) and self.complete_s >= self.invoke_s,
                f"operation {self.id}: complete_s {self.complete_s!r} before invoke_s",
            )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Operation:
        _check(isinstance(raw, Mapping), "an operation must be an object")
        names = [f.name for f in dataclasses.fields(Operation)]
        missing = [name for name in names if name not in raw and name != "result"]
        _check(not missing, f"operation lacks {missing}")
        return Operation(**{name: raw.get(name) for name in names})


@dataclass(frozen=True)
class NodeDigest:
    """A node's state digest, read at `read_at_s`; None: it could not be read."""

    digest: str | None
    read_at_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class OperationHandle:
    """An invoked operation; exactly one of ok / fail / unknown completes it."""

    def __init__(self, history: History, pending: Operation) -> None:
        self._history = history
        self._pending = pending

    @property
    def id(self) -> int:
        return self._pending.id

    def ok(self, result: Any = None) -> Operation:
        return self._history._complete(self._pending, "ok", result)

    def fail(self, result: Any = None) -> Operation:
        return self._history._complete(self._pending, "fail", result)

    def unknown(self, result: Any = None) -> Operation:
        return self._history._complete(self._pending, "unknown", result)


def effect_from_json(raw: Effect | Mapping[str, Any]) -> Effect:
    if isinstance(raw, Effect):
        return raw
    _check(isinstance(raw, Mapping), "an effect must be an object")
    names = [f.name for f in dataclasses.fields(Effect)]
    missing = [name for name in names if name not in raw]
    _check(not missing, f"effect lacks {missing}")
    effect = Effect(**{name: raw[name] for name in names})
    _check(_is_time(effect.at_s), f"effect at_s {effect.at_s!r}")
    _check(isinstance(effect.idempotency_key, str), "effect idempotency_key must be a string")
    return effect


def _fault(raw: Mapping[str, Any]) -> dict[str, Any]:
    _check(isinstance(raw, Mapping), "a fault must be an object")
    _check(_is_time(raw.get("at_s")), f"fault at_s {raw.get('at_s')!r}")
    _check(isinstance(raw.get("kind"), str), f"fault kind {raw.get('kind')!r}")
    return dict(raw)


class History:
    """The record of one run. Single-threaded: use it from one event loop."""

    def __init__(
        self,
        operations: Iterable[Operation] = (),
        effects: Iterable[Effect | Mapping[str, Any]] = (),
        workflows_final: Mapping[str, Mapping[str, Any]] | None = None,
        node_digests: Mapping[str, NodeDigest | str | None] | None = None,
        faults: Iterable[Mapping[str, Any]] = (),
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self._clock = clock
        self._completed: dict[int, Operation] = {}
        self._pending: dict[int, Operation] = {}
        self._next_id = 0
        self._effects: list[Effect] = []
        self.workflows_final: dict[str, dict[str, Any]] = {}
        self.node_digests: dict[str, NodeDigest] = {}
        self.faults: list[dict[str, Any]] = []
        for operation in operations:
            self.add_operation(operation)
        self.add_effects(effects)
        for workflow_id, workflow in (workflows_final or {}).items():
            self.record_workflow(workflow, workflow_id=workflow_id)
        for node, digest in (node_digests or {}).items():
            self._put_digest(node, digest if isinstance(digest, NodeDigest) else NodeDigest(digest))
        for fault in faults:
            self.faults.append(_fault(fault))
        _check(len(self.faults) <= FAULTS_MAX, f"over FAULTS_MAX ({FAULTS_MAX}) faults")

    # -- recording ---------------------------------------------------------

    def invoke(self, process: int | str, kind: str, key: str | None = None, value: Any = None) -> OperationHandle:
        self._check_room()
        pending = Operation(self._next_id, process, kind, key, value, self._clock(), None, "unknown")
        self._next_id += 1
        self._pending[pending.id] = pending
        return OperationHandle(self, pending)

    def _complete(self, pending: Operation, outcome: str, result: Any) -> Operation:
        _check(self._pending.get(pending.id) is pending, f"operation {pending.id} was already completed")
        complete_s = max(self._clock(), pending.invoke_s)
        done = dataclasses.replace(pending, complete_s=complete_s, outcome=outcome, result=result)
        del self._pending[pending.id]
        self._completed[done.id] = done
        return done

    def add_operation(self, operation: Operation) -> None:
        """Add an operation recorded elsewhere (a loaded history, a test)."""
        _check(isinstance(operation, Operation), "not an Operation")
        taken = operation.id in self._completed or operation.id in self._pending
        _check(not taken, f"operation id {operation.id} appears twice")
        self._check_room()
        self._completed[operation.id] = operation
        self._next_id = max(self._next_id, operation.id + 1)

    def _check_room(self) -> None:
        count = len(self._completed) + len(self._pending)
        _check(count < OPERATIONS_MAX, f"over OPERATIONS_MAX ({OPERATIONS_MAX}) operations")

    def add_effects(self, effects: Iterable[Effect | Mapping[str, Any]]) -> None:
        for raw in effects:
            _check(len(self._effects) < EFFECTS_MAX, f"over EFFECTS_MAX ({EFFECTS_MAX}) effects")
            self._effects.append(effect_from_json(raw))

    def record_workflow(self, workflow: Mapping[str, Any], *, workflow_id: str | None = None) -> None:
        """A saga or transaction object as fetched after the faults stopped."""
        _check(isinstance(workflow, Mapping), "a workflow must be an object")
        workflow_id = workflow.get("id") if workflow_id is None else workflow_id
        _check(isinstance(workflow_id, str), f"workflow id {workflow_id!r}")
        if workflow_id not in self.workflows_final:
            _check(len(self.workflows_final) < WORKFLOWS_MAX, f"over WORKFLOWS_MAX ({WORKFLOWS_MAX}) workflows")
        self.workflows_final[workflow_id] = dict(workflow)

    def record_digest(self, node: str, digest: str | None, *, read_at_s: float | None = None) -> None:
        """A node's digest (None: it could not be read), read now by default."""
        at_s = self._clock() if read_at_s is None else read_at_s
        self._put_digest(node, NodeDigest(digest, at_s))

    def _put_digest(self, node: str, entry: NodeDigest) -> None:
        _check(isinstance(node, str), f"node id {node!r}")
        _check(entry.digest is None or isinstance(entry.digest, str), f"digest of {node} {entry.digest!r}")
        _check(entry.read_at_s is None or _is_time(entry.read_at_s), f"read_at_s of {node} {entry.read_at_s!r}")
        if node not in self.node_digests:
            _check(len(self.node_digests) < NODES_MAX, f"over NODES_MAX ({NODES_MAX}) nodes")
        self.node_digests[node] = entry

    def record_fault(self, kind: str, node: str | None = None, *, at_s: float | None = None, **details: Any) -> None:
        _check(len(self.faults) < FAULTS_MAX, f"over FAULTS_MAX ({FAULTS_MAX}) faults")
        at_s = self._clock() if at_s is None else at_s
        self.faults.append(_fault({"at_s": at_s, "kind": kind, "node": node, **details}))

    # -- reading -----------------------------------------------------------

    @property
    def operations(self) -> list[Operation]:
        """Every operation by id; pending ones as unknown, never answered."""
        merged = {**self._completed, **self._pending}
        return [merged[op_id] for op_id in sorted(merged)]

    @property
    def effects(self) -> list[Effect]:
        return list(self._effects)

    def outcome_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(OUTCOMES, 0)
        for operation in self.operations:
            counts[operation.outcome] += 1
        return counts

    # -- JSON --------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": HISTORY_FORMAT_VERSION,
            "operations": [operation.to_json() for operation in self.operations],
            "effects": [effect.to_json() for effect in self._effects],
            "workflows_final": {key: dict(value) for key, value in self.workflows_final.items()},
            "node_digests": {node: d.to_json() for node, d in self.node_digests.items()},
            "faults": [dict(fault) for fault in self.faults],
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any], *, clock: Clock = time.monotonic) -> History:
        _check(isinstance(raw, Mapping), "a history must be an object")
        version = raw.get("version")
        _check(version == HISTORY_FORMAT_VERSION, f"history version {version!r}, expected {HISTORY_FORMAT_VERSION}")
        digests = raw.get("node_digests", {})
        _check(isinstance(digests, Mapping), "node_digests must be an object")
        node_digests: dict[str, NodeDigest] = {}
        for node, entry in digests.items():
            _check(isinstance(entry, Mapping), f"node_digests[{node!r}] must be an object")
            node_digests[node] = NodeDigest(entry.get("digest"), entry.get("read_at_s"))
        return History(
            operations=[Operation.from_json(op) for op in raw.get("operations", [])],
            effects=raw.get("effects", []),
            workflows_final=raw.get("workflows_final", {}),
            node_digests=node_digests,
            faults=raw.get("faults", []),
            clock=clock,
        )

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, allow_nan=False)

    @staticmethod
    def loads(text: str) -> History:
        return History.from_json(json.loads(text))

    def dump(self, path: str | Path) -> None:
        Path(path).write_text(self.dumps(), encoding="utf-8")

    @staticmethod
    def load(path: str | Path) -> History:
        return History.loads(Path(path).read_text(encoding="utf-8"))
