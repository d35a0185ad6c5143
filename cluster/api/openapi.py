"""The HTTP API as an OpenAPI 3.1 document, served at ``GET /v1/openapi.json``.

The document describes what the handlers do, not what we wish they did:
every route of :func:`coordinator.cluster.api.http_api.build_app`, every parameter with the
pattern or range its handler checks, every status a route can answer, and
the exact shape of every body (``additionalProperties: false`` on what the
API answers). Bounds come from the modules that enforce them, so a changed
limit changes the document too. Where a rule cannot be written as JSON
Schema (unique step names, references between steps, body sizes) the schema
accepts a superset and the description says what else is checked: every
request the document rejects, the API rejects too (tests/integration/
test_api_fuzz.py holds both to that).
"""

from __future__ import annotations

import functools
import json
import re

from aiohttp import web

from coordinator import saga, twopc
from coordinator.cluster.api.operations import (
    BULK_REDRIVE_MAX,
    JSON_DEPTH_MAX,
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    OUTCOMES_LIMIT_MAX,
    WAIT_S_MAX,
)
from coordinator.cluster.api.roles import http_role
from coordinator.cluster.api.selection import ID_TEXT_CHARS_MAX
from coordinator.cluster.core.config import HTTP_BODY_BYTES_DEFAULT
from coordinator.cluster.stores.registry import URL_CHARS_MAX
from coordinator.cluster.stores.requests import REQUEST_ID_PATTERN
from coordinator.grammar import limits as call_limits
from coordinator.saga import limits as saga_limits
from coordinator.twopc import limits as tx_limits

__all__ = ["OPENAPI_PATH", "build_document", "document_json", "openapi_document"]

OPENAPI_PATH = "/v1/openapi.json"
API_VERSION = "1"
AFTER_MAX = 2**62  # the bound operations.service_outcomes checks ?after against

_STRING = {"type": "string"}
_DEFINITION = {"type": "object", "description": "With ?definition=true: the definition as stored."}
_HTML = {"200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}}}
_COUNT = {"type": "integer", "minimum": 0}
_BOOLEAN = {"type": "boolean"}
_TIME = {"type": "string", "format": "date-time"}
_ANY_JSON: dict = {}
_NO_SPACE = "[^\\t\\n\\x0b\\f\\r ]"


# -- schema helpers --------------------------------------------------------------
def _obj(properties: dict, required: tuple[str, ...] | str = (), *, extra: object = False, **more: object) -> dict:
    """An object with these properties; ``required="*"`` requires them all."""
    names = tuple(properties) if required == "*" else required
    schema: dict = {"type": "object", "properties": properties, "additionalProperties": extra}
    if names:
        schema["required"] = list(names)
    return {**schema, **more}


def _null_or(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def _pattern(regex: re.Pattern[str], **more: object) -> dict:
    return {"type": "string", "pattern": f"^{regex.pattern}$", **more}


def _enum(values: object) -> dict:
    return {"type": "string", "enum": [str(getattr(v, "value", v)) for v in values]}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _seconds(maximum: float, *, zero: bool = False) -> dict:
    low = {"minimum": 0} if zero else {"exclusiveMinimum": 0}
    return _null_or({"type": "number", **low, "maximum": maximum})


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response: dict = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


# What a history record tells of the participant call whose outcome it records
# (saga: step_succeeded, step_failed, step_unknown, compensation_succeeded,
# stuck; transaction: vote, acknowledged), absent on every other record and on
# records written before it was kept.
_CALL_DETAILS = {
    "fence": _pattern(
        call_limits.FENCE_PATTERN,
        maxLength=call_limits.FENCE_CHARS_MAX,
        description="The Coordinator-Fence the leader sent with the call: TERM:INDEX of its leadership.",
    ),
    "duration_ms": {
        "type": "integer",
        "minimum": 0,
        "maximum": call_limits.CALL_DURATION_MS_MAX,
        "description": "How long the call took, from its first attempt to its outcome, retries and backoff included.",
    },
}


# -- request bodies ------------------------------------------------------------------
# The release a saga or transaction may name (grammar/limits.py), the same for both.
_RELEASE = {
    **_null_or(_pattern(call_limits.RELEASE_PATTERN, maxLength=call_limits.RELEASE_CHARS_MAX)),
    "description": "run only on workers of this release (see [workers] in the cluster file)",
}
_PATH_TEXT = (
    "A path on the registered service: starts with '/', not '//', no '://', no "
    "whitespace or control characters, no '?' or '#', no '.' or '..' segment (also "
    "percent-encoded)."
)


def _call_path(chars_max: int) -> dict:
    pattern = f"^/([^/\\t\\n\\x0b\\f\\r ]{_NO_SPACE}*)?$"
    return {"type": "string", "maxLength": chars_max, "pattern": pattern, "description": _PATH_TEXT}


def _saga_schemas() -> dict:
    retry = _obj(
        {
            "max_attempts": _null_or({"type": "integer", "minimum": 1, "maximum": saga_limits.RETRY_ATTEMPTS_MAX}),
            "backoff_s": _seconds(saga_limits.BACKOFF_S_MAX, zero=True),
            "max_backoff_s": _seconds(saga_limits.BACKOFF_S_MAX, zero=True),
        },
        description="Capped exponential backoff; max_backoff_s must be >= backoff_s.",
    )
    call = {
        "method": {"type": "string", "enum": list(saga_limits.METHODS)},
        "path": _call_path(saga_limits.PATH_CHARS_MAX),
        "body": {
            **_ANY_JSON,
            "description": (
                f"Any JSON (null: no body), at most {saga_limits.STEP_BODY_BYTES_MAX} bytes and {saga_limits.BODY_DEPTH_MAX} "
                "levels deep, integers in 64 bits. A string exactly '${steps.NAME.output.PATH}' is replaced by an earlier "
                "step's output."
            ),
        },
    }
    null = {"type": "null"}
    step_name = _pattern(saga_limits.STEP_NAME_PATTERN, description="Unique within the saga.")
    action_step = _obj(
        {
            "name": step_name,
            "service": _pattern(saga_limits.SERVICE_NAME_PATTERN, description="A registered HTTP participant."),
            "action": _ref("SagaCall"),
            "compensation": _null_or(_ref("SagaCompensation")),
            "timeout_s": _seconds(saga_limits.STEP_TIMEOUT_S_MAX),
            "retry": _null_or(_ref("SagaRetry")),
            "await": null,
        },
        ("name", "service", "action"),
    )
    await_step = _obj(
        {
            "name": step_name,
            "await": _pattern(saga_limits.SIGNAL_NAME_PATTERN, description="The signal this step waits for."),
            "timeout_s": _seconds(saga_limits.AWAIT_TIMEOUT_S_MAX),
            "service": null,
            "action": null,
            "compensation": null,
            "retry": null,
        },
        ("name", "await"),
    )
    definition = _obj(
        {
            "id": _null_or(_pattern(saga_limits.SAGA_ID_PATTERN)),
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": saga_limits.SAGA_STEPS_MAX,
                "items": {"oneOf": [_ref("SagaActionStep"), _ref("SagaAwaitStep")]},
            },
            "timeout_s": _seconds(saga_limits.SAGA_TIMEOUT_S_MAX),
            "release": _RELEASE,
        },
        ("steps",),
        description="A saga definition (null for an optional field means absent; an absent id is generated).",
    )
    return {
        "SagaDefinition": definition,
        "SagaActionStep": action_step,
        "SagaAwaitStep": await_step,
        "SagaCall": _obj(call, ("method", "path")),
        "SagaCompensation": _obj({**call, "retry": _null_or(_ref("SagaRetry"))}, ("method", "path")),
        "SagaRetry": retry,
    }


def _transaction_schemas() -> dict:
    call = _obj(
        {
            "path": _call_path(tx_limits.PATH_CHARS_MAX),
            "body": {
                **_ANY_JSON,
                "description": (
                    f"Any JSON (null: {{}}), at most {tx_limits.BODY_BYTES_MAX} bytes and {tx_limits.BODY_DEPTH_MAX} levels deep."
                ),
            },
        },
        ("path",),
        description="Always sent as POST.",
    )
    participant = _obj(
        {
            "service": _pattern(
                tx_limits.SERVICE_NAME_PATTERN, description="A registered participant, once per transaction."
            ),
            "prepare": _ref("TransactionCall"),
            "commit": _ref("TransactionCall"),
            "abort": _ref("TransactionCall"),
        },
        "*",
    )
    definition = _obj(
        {
            "id": _null_or(_pattern(tx_limits.TX_ID_PATTERN)),
            "participants": {
                "type": "array",
                "minItems": tx_limits.PARTICIPANTS_MIN,
                "maxItems": tx_limits.PARTICIPANTS_MAX,
                "items": _ref("TransactionParticipant"),
            },
            "timeout_s": _seconds(tx_limits.TX_TIMEOUT_S_MAX),
            "release": _RELEASE,
        },
        ("participants",),
        description=f"A 2PC transaction (timeout_s defaults to {tx_limits.TX_TIMEOUT_S_DEFAULT}).",
    )
    return {"TransactionDefinition": definition, "TransactionParticipant": participant, "TransactionCall": call}


def _service_put() -> dict:
    url = {
        "type": "string",
        "maxLength": URL_CHARS_MAX,
        "pattern": f"^[Hh][Tt][Tt][Pp][Ss]?://{_NO_SPACE}+$",
        "description": "http(s), a host, no credentials, query or fragment; a trailing '/' is dropped.",
    }
    grpc = {"type": "string", "pattern": "^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$", "description": "HOST:PORT, port 1-65535."}
    tls = {
        "type": "boolean",
        "default": False,
        "description": "The gRPC target speaks TLS (verified against [services] ca_file or the system CAs).",
    }
    return {"oneOf": [_obj({"url": url}, "*"), _obj({"grpc": grpc, "tls": tls}, ("grpc",))]}


# -- response bodies ---------------------------------------------------------------------
def _view_schemas() -> dict:
    forced = _obj(
        {
            "at": _TIME,
            "remote": _null_or(_STRING),
            "token": {**_BOOLEAN, "description": "Whether the request came with a token."},
            "by": {
                **_null_or(_STRING),
                "description": "The name of the request's token (null without tokens, or before token names).",
            },
            "previous": _obj({"url": _null_or(_STRING), "grpc": _null_or(_STRING), "tls": _BOOLEAN}, ("url", "grpc")),
        },
        "*",
    )
    service = _obj(
        {
            "name": _STRING,
            "url": _null_or(_STRING),
            "grpc": _null_or(_STRING),
            "tls": {**_BOOLEAN, "description": "A gRPC target called over TLS (an https:// url says it itself)."},
            "created_at": _TIME,
            "updated_at": _TIME,
            "revision": _COUNT,
            "forced_repoint": _null_or(forced),
        },
        "*",
    )
    address = _obj({"id": _STRING, "http": _STRING, "grpc": _STRING}, "*")
    breaker = _obj({"open": _BOOLEAN, "consecutive_failures": _COUNT, "opened_total": _COUNT}, "*")
    cluster = _obj(
        {
            "node": _STRING,
            "role": {"type": "string", "enum": ["leader", "follower", "candidate"]},
            "leader": _null_or(address),
            "term": _COUNT,
            "commit_index": _COUNT,
            "applied_index": _COUNT,
            "has_quorum": _BOOLEAN,
            "executor": _obj(
                {
                    "leading": _BOOLEAN,
                    "fence": _null_or(_STRING),
                    "calls_in_flight": _COUNT,
                    "breakers": {"type": "object", "additionalProperties": breaker},
                    "mode": {"type": "string", "enum": ["local", "remote", "auto"]},
                    "workers": _obj(
                        {
                            "workers_connected": _COUNT,
                            "commands_queued": _COUNT,
                            "dispatched_total": _COUNT,
                            "redispatches_total": _COUNT,
                            "leases_lost_total": _COUNT,
                            "reports_dropped_total": _COUNT,
                        },
                        "*",
                    ),
                },
                "*",
            ),
            "nodes": {
                "type": "array",
                "items": _obj(
                    {"id": _STRING, "raft": _STRING, "http": _STRING, "grpc": _STRING, "reachable": _BOOLEAN}, "*"
                ),
            },
            "state_digest": _STRING,
            "state_applied_index": _COUNT,
        },
        ("node", "role", "leader", "term", "commit_index", "applied_index", "has_quorum", "executor", "nodes"),
    )
    saga_step = _obj(
        {
            "name": _STRING,
            "state": _enum(saga.StepStatus),
            "attempts": _COUNT,
            "output": _ANY_JSON,
            "error": _null_or(_STRING),
            "compensation_attempts": _COUNT,
            "compensation_error": _null_or(_STRING),
        },
        "*",
    )
    saga_record = _obj(
        {
            "at": _TIME,
            "event": _enum(saga.HistoryEvent),
            "step": _STRING,
            "attempts": _COUNT,
            "error": _STRING,
            "signal": _STRING,
            "by": {**_STRING, "description": "started, signal, redrive: the name of the token that asked."},
            **_CALL_DETAILS,
        },
        ("at", "event"),
    )
    saga_object = _obj(
        {
            "id": _STRING,
            "state": _enum(saga.SagaStatus),
            "steps": {"type": "array", "items": saga_step},
            "failure": _null_or(
                _obj({"reason": _enum(saga.FailureReason), "step": _null_or(_STRING), "error": _STRING}, "*")
            ),
            "history": {"type": "array", "items": saga_record},
            "redrives": _COUNT,
            "created_at": _TIME,
            "updated_at": _TIME,
            "definition": _DEFINITION,
        },
        ("id", "state", "steps", "failure", "history", "redrives", "created_at", "updated_at"),
    )
    participant = _obj(
        {"service": _STRING, "vote": _null_or(_enum(twopc.Vote)), "state": _enum(twopc.ParticipantStatus)}, "*"
    )
    tx_record = _obj(
        {
            "at": _TIME,
            "event": _enum(
                [
                    "started",
                    "vote",
                    "timed_out",
                    "decided",
                    "acknowledged",
                    *(str(s) for s in twopc.TxStatus if s.terminal),
                ]
            ),
            **_CALL_DETAILS,
        },
        ("at", "event"),
        extra=_STRING,
    )
    transaction = _obj(
        {
            "id": _STRING,
            "state": _enum(twopc.TxStatus),
            "decision": _null_or(_enum(twopc.Decision)),
            "participants": {"type": "array", "items": participant},
            "history": {"type": "array", "items": tx_record},
            "created_at": _TIME,
            "updated_at": _TIME,
            "definition": _DEFINITION,
        },
        ("id", "state", "decision", "participants", "history", "created_at", "updated_at"),
    )
    outcome = _obj(
        {
            "index": _COUNT,
            "saga": _STRING,
            "step": _STRING,
            "kind": {"type": "string", "enum": ["action", "compensation"]},
            "output": _ANY_JSON,
        },
        "*",
    )
    saga_state = _enum(saga.SagaStatus)
    summary_base = {
        "id": _STRING,
        "services": {"type": "array", "items": _STRING},
        "created_at": _TIME,
        "updated_at": _TIME,
    }
    saga_summary = _obj(
        {**summary_base, "state": saga_state, "failure": saga_object["properties"]["failure"], "steps": _COUNT}, "*"
    )
    tx_summary = _obj(
        {**summary_base, "state": _enum(twopc.TxStatus), "decision": _null_or(_enum(twopc.Decision))}, "*"
    )
    return {
        "Service": service,
        "ServiceList": _obj({"services": {"type": "array", "items": _ref("Service")}}, "*"),
        "ServiceOutcomes": _obj(
            {"service": _STRING, "outcomes": {"type": "array", "items": outcome}, "next_after": _COUNT}, "*"
        ),
        "ClusterView": cluster,
        "RecentWindows": _obj(
            {
                "node": _STRING,
                "interval_s": {"type": "number"},
                "windows": {
                    "type": "array",
                    "items": _obj(
                        {
                            "at": _TIME,
                            "seconds": {"type": "number"},
                            "commands_per_s": {"type": "number"},
                            "workflows_finished_per_s": {"type": "number"},
                            "commit_p99_ms": _null_or({"type": "number"}),
                            "commits": _COUNT,
                            "calls_in_flight": _COUNT,
                        },
                        "*",
                    ),
                },
            },
            "*",
        ),
        "WorkerList": _obj(
            {
                "mode": {"type": "string", "enum": ["local", "remote", "auto"]},
                "leading": _BOOLEAN,
                "queued": _COUNT,
                "releases": {"type": "array", "items": _STRING},
                "workers": {
                    "type": "array",
                    "items": _obj(
                        {
                            "id": _STRING,
                            "release": _STRING,
                            "services": {"type": "array", "items": _STRING, "description": '["*"]: every service'},
                            "capacity": _COUNT,
                            "in_flight": _COUNT,
                            "completed": _COUNT,
                            "connected_at": _null_or(_TIME),
                            "last_heartbeat": _null_or(_TIME),
                            "open_breakers": {"type": "array", "items": _STRING},
                            "admitted": _BOOLEAN,
                            "reason": _null_or(_STRING),
                        },
                        "*",
                    ),
                },
            },
            "*",
        ),
        "Saga": saga_object,
        "SagaList": _list("sagas", "Saga", saga_summary),
        "BulkRedriveRequest": _obj(
            {
                "state": {"type": "string", "enum": ["stuck"], "default": "stuck"},
                "service": _STRING,
                "q": {"type": "string", "maxLength": ID_TEXT_CHARS_MAX},
                "created_after": _TIME,
                "created_before": _TIME,
                "limit": {"type": "integer", "minimum": 1, "maximum": BULK_REDRIVE_MAX},
                "dry_run": _BOOLEAN,
            }
        ),
        "BulkRedrive": _obj(
            {
                "matched": _COUNT,
                "ids": {"type": "array", "items": _STRING},
                "redriven": _COUNT,
                "remaining": _COUNT,
                "dry_run": _BOOLEAN,
            },
            "*",
        ),
        "SignalAccepted": _obj({"id": _STRING, "signal": _STRING, "state": saga_state, "changed": _BOOLEAN}, "*"),
        "RedriveAccepted": _obj({"id": _STRING, "state": saga_state}, "*"),
        "Transaction": transaction,
        "TransactionList": _list("transactions", "Transaction", tx_summary),
    }


_LIST_PARAMS = (
    "ListService",
    "ListText",
    "CreatedAfter",
    "CreatedBefore",
    "Order",
    "ListAfter",
    "ListView",
    "Limit",
    "Stale",
)


def _list(key: str, full: str, summary: dict) -> dict:
    """A page of a list: its items (full objects, or summaries with view=summary), counts, total, next."""
    return _obj(
        {
            key: {"type": "array", "items": {"anyOf": [_ref(full), summary]}},
            "counts": {"type": "object", "additionalProperties": _COUNT},
            "total": _COUNT,
            "next": _null_or(_STRING),
        },
        "*",
    )


def _error_schema(codes: list[str], **extra: dict) -> dict:
    detail = _obj(
        {"code": {"type": "string", "enum": codes}, "message": _STRING, **extra},
        ("code", "message", *[k for k in extra if k == "leader"]),
    )
    return _obj({"error": detail}, "*")


_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}}
}
# status -> (component name, schema, description, headers)
_ERRORS = {
    "307": (
        "NotLeader",
        _error_schema(["not_leader"], leader={"type": "string", "format": "uri"}),
        "This node is a follower: the same request goes to the leader at Location.",
        {
            "Location": {
                "required": True,
                "description": "The same path and query on the leader.",
                "schema": {"type": "string", "format": "uri"},
            }
        },
    ),
    "400": (
        "Invalid",
        _error_schema(["invalid"], field=_STRING),
        "Bad JSON or a schema violation; the message starts with the field.",
        None,
    ),
    "401": (
        "Unauthorized",
        _error_schema(["unauthorized"]),
        "Tokens are configured and the request lacks 'Authorization: Bearer TOKEN' of one of them.",
        {"WWW-Authenticate": {"required": True, "schema": {"type": "string", "enum": ["Bearer"]}}},
    ),
    "403": (
        "Forbidden",
        _error_schema(["forbidden"]),
        "The request's token has a role too low for the route (the message names the role needed and the "
        "token's), or the request has an Origin header that [api] allowed_origins does not list.",
        None,
    ),
    "404": (
        "NotFound",
        _error_schema(["not_found"]),
        "No such object; or no such route (a path parameter containing '{' or '}' matches none).",
        None,
    ),
    "405": (
        "MethodNotAllowed",
        _error_schema(["method_not_allowed"]),
        "Any method not listed for a path (HEAD is allowed wherever GET is).",
        None,
    ),
    "409": (
        "Conflict",
        _error_schema(["conflict", "invalid_command"]),
        "The id exists with another definition, or the object's state forbids the change.",
        None,
    ),
    "413": (
        "TooLarge",
        _error_schema(["too_large"]),
        f"The body is over the node's limit (default {HTTP_BODY_BYTES_DEFAULT} bytes) or a field's bound.",
        None,
    ),
    "415": (
        "UnsupportedMediaType",
        _error_schema(["unsupported_media_type"]),
        "A write whose body is not sent as Content-Type: application/json.",
        None,
    ),
    "421": (
        "Misdirected",
        _error_schema(["misdirected_request"]),
        "The Host header is not a name of this node, a loopback name or in [api] allowed_hosts.",
        None,
    ),
    "429": (
        "Overloaded",
        _error_schema(["overloaded"]),
        "The in-flight workflow or proposal limit, the state's byte budget ([limits] state_bytes_max), this client's long polls ([limits] long_polls_per_client_max) or the event streams ([limits] events_subscribers_max, events_per_client_max) are reached.",
        _RETRY_AFTER,
    ),
    "503": (
        "Unavailable",
        _error_schema(
            ["no_leader", "suspended", "not_written", "outcome_unknown", "stopping"],
            services={"type": "array", "items": _STRING},
        ),
        "No leader yet, the write's outcome is unknown or it was not written (retry), intake is suspended "
        "for a service whose circuit is open, or (an event stream) the node is stopping.",
        _RETRY_AFTER,
    ),
}


# -- parameters and operations ---------------------------------------------------------------
def _parameters() -> dict:
    def path(name: str, schema: dict, description: str) -> dict:
        return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}

    def query(name: str, schema: dict, description: str) -> dict:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    def limit(default: int, maximum: int) -> dict:
        return query(
            "limit",
            {"type": "number", "minimum": 1, "maximum": maximum, "default": default},
            "At most this many items (a fraction is truncated).",
        )

    return {
        "ServiceName": path("name", _pattern(saga_limits.SERVICE_NAME_PATTERN), "A service name."),
        "SagaId": path("id", _pattern(saga_limits.SAGA_ID_PATTERN), "A saga id."),
        "TransactionId": path("id", _pattern(tx_limits.TX_ID_PATTERN), "A transaction id."),
        "SignalName": path("name", _pattern(saga_limits.SIGNAL_NAME_PATTERN), "The signal an await step waits for."),
        "Digest": query(
            "digest",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "true: add a hash of this replica's applied state.",
        ),
        "Definition": query(
            "definition",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "true: the answer carries the definition too (the submitted shape, every default explicit).",
        ),
        "Force": query(
            "force",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "true: re-point a service that running workflows use (who and when are recorded).",
        ),
        "Stale": query(
            "stale",
            {"type": "string", "enum": ["true", "false"], "default": "false"},
            "true: answer from this node's replica, without a read barrier or a redirect.",
        ),
        "Wait": query(
            "wait",
            {"type": "number", "minimum": 0, "maximum": WAIT_S_MAX, "default": 0},
            "Long-poll up to this many seconds until the workflow is terminal (on the leader).",
        ),
        "SubmitWait": query(
            "wait",
            {"type": "number", "minimum": 0, "maximum": WAIT_S_MAX, "default": 0},
            "Submit and wait: up to this many seconds for a terminal state before answering, in one "
            "of the client's long-poll slots (none free: 429, nothing submitted).",
        ),
        "Limit": limit(LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX),
        "ListService": query("service", _STRING, "Only workflows whose definition calls this service."),
        "ListText": query("q", {"type": "string", "maxLength": ID_TEXT_CHARS_MAX}, "Only ids containing this text."),
        "CreatedAfter": query("created_after", _TIME, "Only workflows created at or after this time."),
        "CreatedBefore": query("created_before", _TIME, "Only workflows created before this time."),
        "Order": query("order", {"type": "string", "enum": ["asc", "desc"], "default": "asc"}, "By creation time."),
        "ListAfter": query("after", _STRING, "The next cursor of the previous page (same filters and order)."),
        "ListView": query(
            "view",
            {"type": "string", "enum": ["full", "summary"], "default": "full"},
            "summary: id, state, services, times and failure (saga) or decision (transaction), no history.",
        ),
        "OutcomesLimit": limit(OUTCOMES_LIMIT_MAX, OUTCOMES_LIMIT_MAX),
        "After": query(
            "after",
            {"type": "number", "minimum": 0, "maximum": AFTER_MAX, "default": 0},
            "Only outcomes at a log index above this (a fraction is truncated).",
        ),
        "Since": query(
            "since",
            _STRING,
            "With wait: answer as soon as updated_at differs from this value (a "
            "long poll for any change, not only a terminal state).",
        ),
        # HTTP drops spaces and tabs around a header value before any handler sees it.
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": f"^[ \\t]*{REQUEST_ID_PATTERN.pattern}[ \\t]*$"},
            "description": "One id for every retry of this write: a retry of a write that took "
            "effect gets its first answer and is not applied again.",
        },
        "EventKinds": query(
            "kinds",
            {"type": "string", "pattern": "^(workflow|service|role)(,(workflow|service|role))*$"},
            "Only events of these kinds (comma-separated; default all).",
        ),
        "EventWorkflow": query(
            "workflow", {"type": "string", "minLength": 1, "maxLength": 256}, "Only this workflow's events."
        ),
        "EventSince": query(
            "since",
            {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)?$"},
            "Resume after this event id (as Last-Event-ID, which wins when both are given).",
        ),
        "LastEventId": {
            "name": "Last-Event-ID",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^[ \\t]*[0-9]+(\\.[0-9]+)?[ \\t]*$"},
            "description": "Resume after this event id (INDEX.N, or INDEX: after all of entry INDEX): "
            "the events after it that this node holds, or first one reset event when it holds no longer.",
        },
        "SagaState": query("state", _enum(saga.SagaStatus), "Only sagas in this state."),
        "TransactionState": query("state", _enum(twopc.TxStatus), "Only transactions in this state."),
    }


def _op(
    op_id: str,
    summary: str,
    ok: dict,
    errors: str = "",
    params: tuple[str, ...] = (),
    body: dict | None = None,
    public: bool = False,
) -> dict:
    """One operation: ``ok`` maps success statuses to responses; ``errors``
    lists error statuses ("307 400 ..."); 401, 403 and 421 are added unless
    ``public``."""
    statuses = errors.split() + ([] if public else ["401", "403", "421"])
    responses = {**ok, **{s: {"$ref": f"#/components/responses/{_ERRORS[s][0]}"} for s in sorted(statuses)}}
    operation: dict = {"operationId": op_id, "summary": summary, "responses": responses}
    if not public:
        operation["x-role"] = "see paths"  # replaced by _with_roles
    if params:
        operation["parameters"] = [{"$ref": f"#/components/parameters/{p}"} for p in params]
    if body is not None:
        operation["requestBody"] = body
    if public:
        operation["security"] = []
    return operation


def _body(schema: dict, description: str, required: bool = True) -> dict:
    return {"required": required, "description": description, "content": {"application/json": {"schema": schema}}}


def _paths() -> dict:
    read, write = "307 400 503", "307 400 415 429 503"
    ok = lambda name, text="OK", status="200": {status: _json(_ref(name), text)}  # noqa: E731
    saga_written = {
        "200": _json(_ref("Saga"), "The same id and definition exist: the existing saga."),
        "201": _json(_ref("Saga"), "Created (committed on a majority)."),
    }
    tx_written = {
        "200": _json(_ref("Transaction"), "The same id and definition exist: the existing transaction."),
        "201": _json(_ref("Transaction"), "Created (committed on a majority)."),
    }
    health = _obj({"status": {"type": "string", "enum": ["ok"]}, "node": _STRING}, "*")
    ready = _obj({"ready": {"type": "boolean", "enum": [True]}, "applied_index": _COUNT}, "*")
    not_ready = _json(
        _error_schema(["not_ready"]),
        "No leader known yet, or the log is not applied up to the commit index.",
        _RETRY_AFTER,
    )
    return {
        "/healthz": {
            "get": _op("health", "200 while the process runs.", {"200": _json(health, "Alive.")}, public=True)
        },
        "/readyz": {
            "get": _op(
                "ready",
                "Ready: a leader is known and the log is applied.",
                {"200": _json(ready, "Ready."), "503": not_ready},
                public=True,
            )
        },
        "/metrics": {
            "get": _op(
                "metrics",
                "Prometheus text format.",
                {"200": {"description": "Metrics.", "content": {"text/plain": {"schema": _STRING}}}},
            )
        },
        OPENAPI_PATH: {"get": _op("openapi", "This document.", {"200": _json({"type": "object"}, "OpenAPI 3.1.")})},
        "/ui": {"get": _op("dashboardBare", "The dashboard's page, as /ui/.", _HTML, public=True)},
        "/ui/": {"get": _op("dashboard", "The dashboard's page (HTML); no token needed.", _HTML, public=True)},
        "/ui/{file}": {
            "parameters": [
                {
                    "name": "file",
                    "in": "path",
                    "required": True,
                    "schema": _STRING,
                    "description": "A file of the page.",
                }
            ],
            "get": _op(
                "dashboardFile",
                "A file of the dashboard (JavaScript, CSS); no token needed.",
                {"200": {"description": "The file.", "content": {"text/javascript": {"schema": _STRING}}}},
                "404",
                public=True,
            ),
        },
        "/v1/cluster": {
            "get": _op(
                "cluster",
                "This node's view of the cluster (local, never redirected); "
                "?digest=true adds state_digest and state_applied_index.",
                ok("ClusterView"),
                "400",
                ("Digest",),
            )
        },
        "/v1/cluster/recent": {
            "get": _op(
                "clusterRecent",
                "This node's last minutes, in windows of interval_s: commands applied and workflows finished "
                "per second, the commit p99 (a leader's), participant calls in flight. Local, never redirected.",
                ok("RecentWindows"),
            )
        },
        "/v1/workers": {
            "get": _op(
                "listWorkers",
                "The leader's transition workers: admitted ones with their leases in flight and last heartbeat, "
                "then those refused lately with the reason; the executor mode and the calls queued. "
                "A follower redirects (workers connect to the leader); ?stale=true answers this node's own "
                "table (a follower's is empty).",
                ok("WorkerList"),
                read,
                ("Stale",),
            )
        },
        "/v1/services": {
            "get": _op("listServices", "Every registered service, by name.", ok("ServiceList"), read, ("Stale",))
        },
        "/v1/services/{name}": {
            "parameters": [{"$ref": "#/components/parameters/ServiceName"}],
            "get": _op("getService", "One service.", ok("Service"), read + " 404", ("Stale",)),
            "put": _op(
                "putService",
                "Register or replace a service; re-pointing one that running workflows use "
                "is a 409 unless ?force=true (recorded in forced_repoint).",
                ok("Service", "Registered."),
                write + " 404 409 413",
                ("Force", "IdempotencyKey"),
                body=_body(
                    _ref("ServicePut"),
                    'Exactly one of url (HTTP participant; https:// is called over TLS) or grpc, with "tls": true '
                    "for a gRPC participant over TLS.",
                ),
            ),
            "delete": _op(
                "deleteService",
                "Remove a service no running workflow uses.",
                ok("Service", "Removed."),
                write + " 404 409",
                ("IdempotencyKey",),
            ),
        },
        "/v1/services/{name}/outcomes": {
            "parameters": [{"$ref": "#/components/parameters/ServiceName"}],
            "get": _op(
                "serviceOutcomes",
                "Successful saga calls to this service, in log order (outcome replay).",
                ok("ServiceOutcomes"),
                read + " 404",
                ("After", "OutcomesLimit", "Stale"),
            ),
        },
        "/v1/sagas": {
            "post": _op(
                "submitSaga",
                "Submit a saga; with wait, answer once it is terminal or the wait runs out (one request).",
                saga_written,
                write + " 409 413 429",
                ("SubmitWait",),
                body=_body(_ref("SagaDefinition"), "Every action step's service must be registered (HTTP)."),
            ),
            "get": _op(
                "listSagas",
                "Sagas by creation time (oldest first unless order=desc), filtered, one page; "
                "counts per state, total and the next page's cursor.",
                ok("SagaList"),
                read,
                ("SagaState", *_LIST_PARAMS),
            ),
        },
        "/v1/sagas/redrive": {
            "post": _op(
                "redriveSagas",
                "Redrive the oldest stuck sagas matching a filter, at most limit, one log entry each "
                "(as a single redrive); dry_run previews. A saga no longer stuck is left alone.",
                ok("BulkRedrive"),
                "307 400 413 415 503",
                body=_body(_ref("BulkRedriveRequest"), "The filter; all fields optional.", required=False),
            )
        },
        "/v1/sagas/{id}": {
            "parameters": [{"$ref": "#/components/parameters/SagaId"}],
            "get": _op("getSaga", "One saga.", ok("Saga"), read + " 404 429", ("Wait", "Since", "Stale", "Definition")),
        },
        "/v1/sagas/{id}/signals/{name}": {
            "parameters": [{"$ref": "#/components/parameters/SagaId"}, {"$ref": "#/components/parameters/SignalName"}],
            "post": _op(
                "signalSaga",
                "Deliver a signal (buffered until its await step runs).",
                ok("SignalAccepted", "Accepted.", "202"),
                write + " 404 413",
                body=_body(
                    _ANY_JSON,
                    f"The payload: any JSON up to {saga_limits.SIGNAL_PAYLOAD_BYTES_MAX} bytes "
                    f"and {JSON_DEPTH_MAX} levels deep; no body means null.",
                    required=False,
                ),
            ),
        },
        "/v1/sagas/{id}/redrive": {
            "parameters": [{"$ref": "#/components/parameters/SagaId"}],
            "post": _op(
                "redriveSaga",
                "A stuck saga resumes compensating.",
                ok("RedriveAccepted", "Accepted.", "202"),
                write + " 404 409",
            ),
        },
        "/v1/transactions": {
            "post": _op(
                "submitTransaction",
                "Submit a 2PC transaction; with wait, answer once it is done or the wait runs out (one request).",
                tx_written,
                write + " 409 413 429",
                ("SubmitWait",),
                body=_body(_ref("TransactionDefinition"), "Every participant's service must be registered."),
            ),
            "get": _op(
                "listTransactions",
                "Transactions in creation order.",
                ok("TransactionList"),
                read,
                ("TransactionState", *_LIST_PARAMS),
            ),
        },
        "/v1/transactions/{id}": {
            "parameters": [{"$ref": "#/components/parameters/TransactionId"}],
            "get": _op(
                "getTransaction",
                "One transaction (also how a prepared participant learns the decision).",
                ok("Transaction"),
                read + " 404 429",
                ("Wait", "Since", "Stale", "Definition"),
            ),
        },
        "/v1/events": {
            "get": _op(
                "events",
                "Server-Sent Events of what this node applies, from its own replica (never redirected): "
                "event kinds workflow, service and role, each with id INDEX.N (its log entry and ordinal); "
                "reset (events after Last-Event-ID are no longer held: reload by GET) and a final dropped "
                "(this reader fell behind). A ': keepalive' comment every 15 s. See README.md, 'Event stream'.",
                {
                    "200": {
                        "description": "The stream (text/event-stream); each data line is one event as JSON.",
                        "content": {"text/event-stream": {"schema": _STRING}},
                    }
                },
                "400 429 503",
                ("EventKinds", "EventWorkflow", "EventSince", "LastEventId"),
            )
        },
    }


_DESCRIPTION = f"""The coordinator's HTTP API (README.md, "HTTP API"). JSON in and out.

- Errors: `{{"error": {{"code", "message", ...}}}}`; a 400 names the field first in its message.
- Writes, and reads without `?stale=true`, go to the leader: a follower answers 307 with `Location` on the leader.
- Bodies are at most {HTTP_BODY_BYTES_DEFAULT} bytes (the cluster's `http_body_bytes_max`) and {JSON_DEPTH_MAX} levels deep.
- HEAD is served wherever GET is; any other method not listed gets 405 (`#/components/responses/MethodNotAllowed`),
  an unknown path 404.
- Unknown query parameters are ignored; unknown body fields are rejected.
- With tokens configured, every route but /healthz and /readyz needs `Authorization: Bearer TOKEN`
  (401 without a known token) of a token whose role is at least the operation's `x-role` (403 otherwise).
  Roles are cumulative: read < submit < operate < admin.
"""


def _with_roles(paths: dict) -> dict:
    """Each operation's ``x-role``: the least role of the roles table."""
    for path, item in paths.items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "x-role" in operation:
                role = http_role(method.upper(), path)
                operation["x-role"] = str(role) if role is not None else "none: refused"
    return paths


@functools.lru_cache(maxsize=1)
def build_document() -> dict:
    """The whole document (cached: treat it as read-only)."""
    error_responses = {name: _json(schema, text, headers) for name, schema, text, headers in _ERRORS.values()}
    schemas = {**_view_schemas(), **_saga_schemas(), **_transaction_schemas(), "ServicePut": _service_put()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "coordinator", "version": API_VERSION, "description": _DESCRIPTION},
        "security": [{"bearer": []}, {}],
        "paths": _with_roles(_paths()),
        "components": {
            "schemas": schemas,
            "parameters": _parameters(),
            "responses": error_responses,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Only when the cluster has a token_file or a tokens_file: a token of the file, "
                    "whose role (read, submit, operate, admin) is at least the operation's x-role.",
                }
            },
        },
    }


@functools.lru_cache(maxsize=1)
def document_json() -> str:
    return json.dumps(build_document(), sort_keys=True)


async def openapi_document(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: answered by any node, leader or not."""
    return web.Response(text=document_json(), content_type="application/json")
