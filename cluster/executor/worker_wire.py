"""The worker stream's messages on the wire: the protobuf messages of the
``Work`` RPC (proto/coordinator.proto) to and from the dispatcher's own
(cluster/executor/dispatch.py). The node's gRPC API and the worker process
both use these, so each side reads exactly what the other writes.

Decoding is strict: a message that cannot be read raises :class:`WireError`
naming the field, and the receiving side answers it as ``invalid``.

**Batches.** Each stream message costs both ends a fixed toll in grpc.aio
(a write or read, its completion handed from gRPC's poller thread to the
event loop), far more than encoding it. Under load several dispatches
(one applied Raft entry starts several calls) or reports (calls that end
together) are ready at once, so a sender packs a run of them into one
message: the first in ``dispatch`` (``report``), the others in
``more_dispatches`` (``more_reports``), in order, each read as if it had
come alone. Each side says it reads batches (the hello's and the
welcome's ``batches``); to a peer that does not, every message goes alone,
as an older release sends and expects. A batch holds at most
``BATCH_MAX`` items, and never grows past ``BATCH_BYTES_MAX`` (a single
larger item still goes alone, as before batches).
"""

from __future__ import annotations

import json
from collections.abc import Callable
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

__all__ = [
    "BATCH_MAX",
    "WireError",
    "batched_leader_messages",
    "batched_worker_messages",
    "leader_message",
    "read_leader_message",
    "read_leader_messages",
    "read_worker_message",
    "read_worker_messages",
    "worker_message",
]

MESSAGE_CHARS_MAX = 1000
BATCH_MAX = 64  # dispatches or reports in one message
# The bytes a batch grows to at most: below what a node accepts in one gRPC
# message at its smallest (ENVELOPE_BYTES, cluster/api/grpc_api.py) and what a
# worker accepts (cluster/worker/process.py).
BATCH_BYTES_MAX = 32 * 1024


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
                id=message.id,
                release=message.release,
                services=list(message.services),
                capacity=message.capacity,
                batches=True,  # this worker reads more_dispatches
            )
        )
    if isinstance(message, Heartbeat):
        return pb.WorkerMessage(heartbeat=pb.WorkerHeartbeat(open_breakers=list(message.open_breakers)))
    return pb.WorkerMessage(report=_report(message))


def _report(message: Report) -> pb.WorkerReport:
    return pb.WorkerReport(
        dispatch_id=message.dispatch_id,
        fence=message.fence,
        outcome=message.outcome,
        output_json=_json_text(message.output),
        error=message.error,
        attempts=message.attempts,
    )


def batched_worker_messages(messages: list[Heartbeat | Report], batches: bool) -> list[pb.WorkerMessage]:
    """``messages`` on the wire, in order; with ``batches`` (the leader's
    welcome said it reads them) each run of reports shares messages."""
    return _batched(messages, Report, _report, worker_message, pb.WorkerMessage, "report", "more_reports", batches)


def read_worker_messages(message: pb.WorkerMessage) -> list[WorkerHello | Heartbeat | Report | WireError]:
    """Every message ``message`` carries, in order (itself, then its
    ``more_reports``); one that cannot be read is its WireError, and the
    others are read all the same."""
    return [*_each(read_worker_message, message), *_each_more(_read_report, message.more_reports, "more_reports")]


def read_worker_message(message: pb.WorkerMessage) -> WorkerHello | Heartbeat | Report:
    kind = message.WhichOneof("kind")
    if kind == "hello":
        hello = message.hello
        return WorkerHello(hello.id, hello.release, tuple(hello.services), hello.capacity)
    if kind == "heartbeat":
        return Heartbeat(tuple(message.heartbeat.open_breakers))
    if kind == "report":
        return _read_report(message.report, "report")
    raise WireError("message: empty (expected hello, heartbeat or report)")


def _read_report(report: pb.WorkerReport, where: str) -> Report:
    if not report.dispatch_id or len(report.dispatch_id) > DISPATCH_ID_CHARS_MAX:
        raise WireError(f"{where}.dispatch_id: 1 to {DISPATCH_ID_CHARS_MAX} characters")
    output = _json_value(report.output_json, f"{where}.output_json", OUTPUT_BYTES_MAX)
    return Report(report.dispatch_id, report.fence, report.outcome, output, report.error, report.attempts)


# -- leader -> worker ----------------------------------------------------------------------------------
def leader_message(message: Welcome | Dispatch | Cancel | WorkerProblem) -> pb.LeaderMessage:
    if isinstance(message, Welcome):
        return pb.LeaderMessage(
            welcome=pb.WorkerWelcome(
                node=message.node,
                fence=message.fence,
                heartbeat_s=message.heartbeat_s,
                lease_s=message.lease_s,
                batches=True,  # this leader reads more_reports
            )
        )
    if isinstance(message, Dispatch):
        return pb.LeaderMessage(dispatch=_dispatch(message))
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


def _dispatch(message: Dispatch) -> pb.WorkerDispatch:
    spec = message.spec
    return pb.WorkerDispatch(
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


def batched_leader_messages(
    messages: list[Welcome | Dispatch | Cancel | WorkerProblem], batches: bool
) -> list[pb.LeaderMessage]:
    """``messages`` on the wire, in order; with ``batches`` (the worker's
    hello said it reads them) each run of dispatches shares messages."""
    return _batched(
        messages, Dispatch, _dispatch, leader_message, pb.LeaderMessage, "dispatch", "more_dispatches", batches
    )


def read_leader_messages(message: pb.LeaderMessage) -> list[Welcome | Dispatch | Cancel | WorkerProblem | WireError]:
    """Every message ``message`` carries, in order (itself, then its
    ``more_dispatches``); one that cannot be read is its WireError, and the
    others are read all the same."""
    return [
        *_each(read_leader_message, message),
        *_each_more(_read_dispatch, message.more_dispatches, "more_dispatches"),
    ]


def read_leader_message(message: pb.LeaderMessage) -> Welcome | Dispatch | Cancel | WorkerProblem:
    kind = message.WhichOneof("kind")
    if kind == "welcome":
        w = message.welcome
        return Welcome(w.node, w.fence, w.heartbeat_s or 1.0, w.lease_s or 5.0)
    if kind == "dispatch":
        return _read_dispatch(message.dispatch, "dispatch")
    if kind == "cancel":
        return Cancel(message.cancel.dispatch_id)
    if kind == "error":
        e = message.error
        return WorkerProblem(e.code, e.message, e.leader, e.dispatch_id)
    raise WireError("message: empty (expected welcome, dispatch, cancel or error)")


def _read_dispatch(d: pb.WorkerDispatch, where: str) -> Dispatch:
    if d.operation not in OPERATIONS:
        raise WireError(f"{where}.operation: {d.operation[:20]!r} is not one of {', '.join(OPERATIONS)}")
    registration = _json_value(d.registration_json, f"{where}.registration_json", 64 * 1024)
    if not isinstance(registration, dict):
        raise WireError(f"{where}.registration_json: must be an object")
    target = registration.get("url") or registration.get("grpc") or ""
    spec = CallSpec(
        service=d.service,
        url=target if isinstance(target, str) else "",
        method=d.method,
        path=d.path,
        body=_json_value(d.body_json, f"{where}.body_json", 16 * 1024 * 1024),
        idempotency_key=d.idempotency_key,
        fence=d.fence,
        timeout_s=d.timeout_s,
        max_attempts=d.max_attempts,
        backoff_s=d.backoff_s,
        max_backoff_s=d.max_backoff_s,
    )
    return Dispatch(d.dispatch_id, d.operation, registration, spec)


# -- batches -------------------------------------------------------------------------------------------
def _batched(
    messages: list,
    kind: type,
    item: Callable[[Any], Any],
    alone: Callable[[Any], Any],
    wrapper: type,
    first: str,
    more: str,
    batches: bool,
) -> list:
    """Encode ``messages`` in order: each one alone with ``alone``, except that
    with ``batches`` a run of ``kind`` shares ``wrapper`` messages - the
    first item (encoded by ``item``) in the field ``first``, up to
    BATCH_MAX - 1 more in ``more``, while the batch stays within
    BATCH_BYTES_MAX."""
    if not batches:
        return [alone(message) for message in messages]
    out: list = []
    extra, room = None, 0
    for message in messages:
        if not isinstance(message, kind):
            out.append(alone(message))
            extra = None
            continue
        encoded = item(message)
        size = encoded.ByteSize()
        if extra is not None and len(extra) < BATCH_MAX - 1 and size <= room:
            extra.append(encoded)
            room -= size
            continue
        batch = wrapper(**{first: encoded})
        out.append(batch)
        extra, room = getattr(batch, more), BATCH_BYTES_MAX - size
    return out


def _each(read: Callable[[Any], Any], message: Any) -> list:
    try:
        return [read(message)]
    except WireError as exc:
        return [exc]


def _each_more(read: Callable[[Any, str], Any], items: Any, where: str) -> list:
    out: list = []
    for n, item in enumerate(items):
        try:
            out.append(read(item, f"{where}[{n}]"))
        except WireError as exc:
            out.append(exc)
    return out
