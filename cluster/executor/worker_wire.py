"""The worker stream's messages on the wire: the protobuf messages of the
``Work`` RPC (proto/coordinator.proto) to and from the dispatcher's own
(cluster/executor/dispatch.py). The node's gRPC API and the worker process
both use these, so each side reads exactly what the other writes.

Decoding is strict: a message that cannot be read raises :class:`WireError`
naming the field, and the receiving side answers it as ``invalid``.
"""

from __future__ import annotations

import json
from typing import Any

from coordinator.client.grpc_gen import coordinator_pb2 as pb
from coordinator.cluster.executor.dispatch import (
    DISPATCH_ID_CHARS_MAX,
    Cancel,
    Dispatch,
    Heartbeat,
    Report,
    Welcome,
    WorkerHello,
    WorkerProblem,
)
from coordinator.cluster.executor.http_caller import OPERATIONS, OUTPUT_BYTES_MAX, CallSpec

__all__ = ["WireError", "leader_message", "read_leader_message", "read_worker_message", "worker_message"]

MESSAGE_CHARS_MAX = 1000


class WireError(ValueError):
    """A message that cannot be read; str() names the field."""


def _json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, separators=(",", ":"))


def _json_value(text: str, where: str, bytes_max: int) -> Any:
    if not text:
        return None
    if len(text.encode()) > bytes_max:
        raise WireError(f"{where}: over {bytes_max} bytes")
    try:
        return json.loads(text)
    except ValueError:
        raise WireError(f"{where}: not JSON") from None


# -- worker -> leader ----------------------------------------------------------------------------------
def worker_message(message: WorkerHello | Heartbeat | Report) -> pb.WorkerMessage:
    if isinstance(message, WorkerHello):
        return pb.WorkerMessage(
            hello=pb.WorkerHello(
                id=message.id, release=message.release, services=list(message.services), capacity=message.capacity
            )
        )
    if isinstance(message, Heartbeat):
        return pb.WorkerMessage(heartbeat=pb.WorkerHeartbeat(open_breakers=list(message.open_breakers)))
    return pb.WorkerMessage(
        report=pb.WorkerReport(
            dispatch_id=message.dispatch_id,
            fence=message.fence,
            outcome=message.outcome,
            output_json=_json_text(message.output),
            error=message.error,
            attempts=message.attempts,
        )
    )


def read_worker_message(message: pb.WorkerMessage) -> WorkerHello | Heartbeat | Report:
    kind = message.WhichOneof("kind")
    if kind == "hello":
        hello = message.hello
        return WorkerHello(hello.id, hello.release, tuple(hello.services), hello.capacity)
    if kind == "heartbeat":
        return Heartbeat(tuple(message.heartbeat.open_breakers))
    if kind == "report":
        report = message.report
        if not report.dispatch_id or len(report.dispatch_id) > DISPATCH_ID_CHARS_MAX:
            raise WireError(f"report.dispatch_id: 1 to {DISPATCH_ID_CHARS_MAX} characters")
        output = _json_value(report.output_json, "report.output_json", OUTPUT_BYTES_MAX)
        return Report(report.dispatch_id, report.fence, report.outcome, output, report.error, report.attempts)
    raise WireError("message: empty (expected hello, heartbeat or report)")


# -- leader -> worker ----------------------------------------------------------------------------------
def leader_message(message: Welcome | Dispatch | Cancel | WorkerProblem) -> pb.LeaderMessage:
    if isinstance(message, Welcome):
        return pb.LeaderMessage(
            welcome=pb.WorkerWelcome(
                node=message.node, fence=message.fence, heartbeat_s=message.heartbeat_s, lease_s=message.lease_s
            )
        )
    if isinstance(message, Dispatch):
        spec = message.spec
        return pb.LeaderMessage(
            dispatch=pb.WorkerDispatch(
                dispatch_id=message.dispatch_id,
                operation=message.operation,
                service=spec.service,
                registration_json=_json_text(message.registration),
                method=spec.method,
                path=spec.path,
                body_json=_json_text(spec.body),
                idempotency_key=spec.idempotency_key,
                fence=spec.fence,
                timeout_s=spec.timeout_s,
                max_attempts=spec.max_attempts,
                backoff_s=spec.backoff_s,
                max_backoff_s=spec.max_backoff_s,
            )
        )
    if isinstance(message, Cancel):
        return pb.LeaderMessage(cancel=pb.WorkerCancel(dispatch_id=message.dispatch_id))
    return pb.LeaderMessage(
        error=pb.WorkerError(
            code=message.code,
            message=message.message[:MESSAGE_CHARS_MAX],
            leader=message.leader,
            dispatch_id=message.dispatch_id,
        )
    )


def read_leader_message(message: pb.LeaderMessage) -> Welcome | Dispatch | Cancel | WorkerProblem:
    kind = message.WhichOneof("kind")
    if kind == "welcome":
        w = message.welcome
        return Welcome(w.node, w.fence, w.heartbeat_s or 1.0, w.lease_s or 5.0)
    if kind == "dispatch":
        d = message.dispatch
        if d.operation not in OPERATIONS:
            raise WireError(f"dispatch.operation: {d.operation[:20]!r} is not one of {', '.join(OPERATIONS)}")
        registration = _json_value(d.registration_json, "dispatch.registration_json", 64 * 1024)
        if not isinstance(registration, dict):
            raise WireError("dispatch.registration_json: must be an object")
        target = registration.get("url") or registration.get("grpc") or ""
        spec = CallSpec(
            service=d.service,
            url=target if isinstance(target, str) else "",
            method=d.method,
            path=d.path,
            body=_json_value(d.body_json, "dispatch.body_json", 16 * 1024 * 1024),
            idempotency_key=d.idempotency_key,
            fence=d.fence,
            timeout_s=d.timeout_s,
            max_attempts=d.max_attempts,
            backoff_s=d.backoff_s,
            max_backoff_s=d.max_backoff_s,
        )
        return Dispatch(d.dispatch_id, d.operation, registration, spec)
    if kind == "cancel":
        return Cancel(message.cancel.dispatch_id)
    if kind == "error":
        e = message.error
        return WorkerProblem(e.code, e.message, e.leader, e.dispatch_id)
    raise WireError("message: empty (expected welcome, dispatch, cancel or error)")
