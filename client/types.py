"""Typed results of the client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Service",
    "NodeInfo",
    "ClusterInfo",
    "Saga",
    "Transaction",
    "WorkflowPage",
    "SAGA_TERMINAL_STATES",
    "TRANSACTION_TERMINAL_STATES",
]

SAGA_TERMINAL_STATES = frozenset({"completed", "compensated"})
TRANSACTION_TERMINAL_STATES = frozenset({"committed", "aborted"})


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    url: str | None
    grpc: str | None
    created_at: str
    updated_at: str
    revision: int
    tls: bool = False  # a gRPC target called over TLS (an https:// url says it itself)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Service:
        return cls(
            raw["name"],
            raw.get("url"),
            raw.get("grpc"),
            raw["created_at"],
            raw["updated_at"],
            raw["revision"],
            bool(raw.get("tls", False)),
        )


@dataclass(frozen=True, slots=True)
class NodeInfo:
    id: str
    raft: str
    http: str
    grpc: str
    reachable: bool


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    node: str
    role: str
    leader: dict | None
    term: int
    commit_index: int
    applied_index: int
    nodes: tuple[NodeInfo, ...]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClusterInfo:
        return cls(
            node=raw["node"],
            role=raw["role"],
            leader=raw.get("leader"),
            term=raw["term"],
            commit_index=raw["commit_index"],
            applied_index=raw["applied_index"],
            nodes=tuple(
                NodeInfo(**{k: n[k] for k in ("id", "raft", "http", "grpc", "reachable")}) for n in raw["nodes"]
            ),
        )


def _common(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields every workflow object has."""
    return {
        "id": raw["id"],
        "state": raw["state"],
        "history": tuple(raw.get("history", ())),
        "created_at": raw.get("created_at", ""),
        "updated_at": raw.get("updated_at", ""),
        "raw": raw,
    }


@dataclass(frozen=True, slots=True)
class Saga:
    id: str
    state: str
    steps: tuple[dict, ...]
    failure: dict | None
    history: tuple[dict, ...]
    created_at: str
    updated_at: str
    raw: dict

    @property
    def terminal(self) -> bool:
        return self.state in SAGA_TERMINAL_STATES

    def step(self, name: str) -> dict:
        return next(s for s in self.steps if s["name"] == name)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Saga:
        return cls(steps=tuple(raw.get("steps", ())), failure=raw.get("failure"), **_common(raw))


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    state: str
    decision: str | None
    participants: tuple[dict, ...]
    history: tuple[dict, ...]
    created_at: str
    updated_at: str
    raw: dict

    @property
    def terminal(self) -> bool:
        return self.state in TRANSACTION_TERMINAL_STATES

    def participant(self, service: str) -> dict:
        return next(p for p in self.participants if p["service"] == service)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Transaction:
        return cls(decision=raw.get("decision"), participants=tuple(raw.get("participants", ())), **_common(raw))


@dataclass(frozen=True, slots=True)
class WorkflowPage:
    """One page of a filtered list: ``items`` (Saga or Transaction, or the
    summary dicts of ``view="summary"``), ``counts`` per state of those
    matching every filter but the state, ``total`` matching every filter,
    and ``next``: the cursor of the next page (``after=``), None on the last."""

    items: tuple[Any, ...]
    counts: dict[str, int]
    total: int
    next: str | None
