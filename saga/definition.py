"""Saga definitions: parse, validate, encode.

A definition as a user sends it (README.md, "Sagas and transactions from the CLI")::

    {"id": "order-42",                                   # optional
     "steps": [
       {"name": "create-order", "service": "orders",
        "action": {"method": "POST", "path": "/orders", "body": {...}},
        "compensation": {"method": "POST", "path": "/orders/cancel",
                         "body": {"order": "${steps.create-order.output.order_id}"},
                         "retry": {...}},                # optional
        "timeout_s": 5,                                  # optional
        "retry": {"max_attempts": 5, "backoff_s": 0.1, "max_backoff_s": 5}},
       {"name": "approval", "await": "approved", "timeout_s": 300}],
     "timeout_s": 600,                                   # optional: no deadline
     "release": "2.4.1"}                                 # optional: only its workers run it

`null` for an optional field means "absent". An absent body means no body is
sent. Bodies are kept as canonical JSON text (`body_json`): immutable,
comparable, and what the size bound measures. Every default is made explicit
by the parser, so two definitions are the same exactly when the parsed
dataclasses are equal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import fields, limits
from .errors import DefinitionError
from .jsonvalue import decode_json
from .substitution import check_references

_ROOT_FIELDS = ("id", "steps", "timeout_s", "release")
_STEP_FIELDS = ("name", "service", "action", "compensation", "timeout_s", "retry", "await")
_CALL_FIELDS = ("method", "path", "body")
_COMPENSATION_FIELDS = ("method", "path", "body", "retry")
_RETRY_FIELDS = ("max_attempts", "backoff_s", "max_backoff_s")
_NOT_ON_AWAIT = ("compensation", "retry")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the executor retries an outcome-unknown call (capped backoff)."""

    max_attempts: int
    backoff_s: float
    max_backoff_s: float


ACTION_RETRY_DEFAULT = RetryPolicy(
    limits.RETRY_MAX_ATTEMPTS_DEFAULT, float(limits.RETRY_BACKOFF_S_DEFAULT), float(limits.RETRY_MAX_BACKOFF_S_DEFAULT)
)
COMPENSATION_RETRY_DEFAULT = RetryPolicy(
    limits.COMPENSATION_MAX_ATTEMPTS_DEFAULT,
    float(limits.COMPENSATION_BACKOFF_S_DEFAULT),
    float(limits.COMPENSATION_MAX_BACKOFF_S_DEFAULT),
)


@dataclass(frozen=True, slots=True)
class HttpCall:
    """A step's action: METHOD {service url}{path} with an optional body."""

    method: str
    path: str
    body_json: str | None

    @property
    def body(self) -> object:
        """A fresh decoded copy of the body (None: no body)."""
        return decode_json(self.body_json)


@dataclass(frozen=True, slots=True)
class Compensation:
    """The call that undoes a step's action, and its retry budget."""

    method: str
    path: str
    body_json: str | None
    retry: RetryPolicy

    @property
    def body(self) -> object:
        return decode_json(self.body_json)


@dataclass(frozen=True, slots=True)
class ActionStep:
    name: str
    service: str
    action: HttpCall
    compensation: Compensation | None
    timeout_s: float
    retry: RetryPolicy


@dataclass(frozen=True, slots=True)
class AwaitStep:
    """Waits for the signal `signal`; its payload becomes the step's output."""

    name: str
    signal: str
    timeout_s: float


Step = ActionStep | AwaitStep


@dataclass(frozen=True, slots=True)
class SagaDefinition:
    id: str | None
    steps: tuple[Step, ...]
    timeout_s: float | None = None
    # Run only on workers of this release (grammar/limits.py RELEASE_PATTERN);
    # None: on any worker.
    release: str | None = None

    @property
    def step_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)


def parse_definition(
    raw: object, known_services: frozenset[str] | None = None, *, stored: bool = False
) -> SagaDefinition:
    """Validate a user's definition; raise DefinitionError naming the field.

    With `known_services`, every action step's service must be one of them.
    `stored`: a definition accepted earlier (`definition_from_dict`), which
    must load even if rules added since (`_check_plain_paths`) refuse it.
    """
    obj = fields.expect_object(raw, fields.ROOT)
    fields.reject_unknown_fields(obj, _ROOT_FIELDS, "")
    saga_id = _parse_id(obj.get("id"), allow_absent=True)
    raw_steps = _step_objects(fields.require(obj, "steps", ""))
    names = _step_names(raw_steps)
    steps = tuple(_parse_step(step, index, names, known_services) for index, step in enumerate(raw_steps))
    timeout_s = None
    if fields.present(obj, "timeout_s"):
        timeout_s = fields.seconds(obj["timeout_s"], "timeout_s", 0, limits.SAGA_TIMEOUT_S_MAX)
    release = fields.release(obj.get("release"), "release")
    definition = SagaDefinition(saga_id, steps, timeout_s, release)
    if not stored:
        _check_plain_paths(definition)
    return definition


def _check_plain_paths(definition: SagaDefinition) -> None:
    for index, step in enumerate(definition.steps):
        if isinstance(step, ActionStep):
            fields.plain_path(step.action.path, f"steps[{index}].action.path")
            if step.compensation is not None:
                fields.plain_path(step.compensation.path, f"steps[{index}].compensation.path")


def with_id(definition: SagaDefinition, saga_id: str) -> SagaDefinition:
    """The same definition under `saga_id` (validated like a user's id)."""
    return replace(definition, id=_parse_id(saga_id, allow_absent=False))


def same_definition(a: SagaDefinition, b: SagaDefinition) -> bool:
    """True when both describe the same saga once defaults are explicit.

    The parser normalises every default and every body (canonical JSON with
    sorted keys), so this is equality of the parsed forms: key order in a
    body does not matter; 1 and true differ; ids and releases are compared too.
    """
    return a == b


def definition_to_dict(definition: SagaDefinition) -> dict:
    """Plain (JSON and msgpack-able) form in the user's shape, defaults
    explicit. `definition_from_dict(definition_to_dict(d)) == d`.

    "release" is there only when one is named: a definition without one
    encodes as it did before the field (journals, snapshots, digests)."""
    plain = {
        "id": definition.id,
        "steps": [_step_to_dict(step) for step in definition.steps],
        "timeout_s": definition.timeout_s,
    }
    if definition.release is not None:
        plain["release"] = definition.release
    return plain


def definition_from_dict(raw: object) -> SagaDefinition:
    """Inverse of `definition_to_dict` (validates again, without the
    service registry: a stored saga keeps the services it was accepted with)."""
    return parse_definition(raw, stored=True)


def _step_to_dict(step: Step) -> dict:
    if isinstance(step, AwaitStep):
        return {"name": step.name, "await": step.signal, "timeout_s": step.timeout_s}
    compensation = None
    if step.compensation is not None:
        c = step.compensation
        compensation = {"method": c.method, "path": c.path, "body": c.body, "retry": _retry_to_dict(c.retry)}
    return {
        "name": step.name,
        "service": step.service,
        "action": {"method": step.action.method, "path": step.action.path, "body": step.action.body},
        "compensation": compensation,
        "timeout_s": step.timeout_s,
        "retry": _retry_to_dict(step.retry),
    }


def _retry_to_dict(retry: RetryPolicy) -> dict:
    return {"max_attempts": retry.max_attempts, "backoff_s": retry.backoff_s, "max_backoff_s": retry.max_backoff_s}


# -- parsing ------------------------------------------------------------------


def _parse_id(raw: object, allow_absent: bool) -> str | None:
    if raw is None and allow_absent:
        return None
    return fields.expect_pattern(raw, "id", limits.SAGA_ID_PATTERN)


def _step_objects(raw: object) -> list[dict]:
    if not isinstance(raw, (list, tuple)):
        raise DefinitionError("steps", f"must be an array, not {fields.type_name(raw)}")
    if not raw:
        raise DefinitionError("steps", "must have at least one step")
    if len(raw) > limits.SAGA_STEPS_MAX:
        raise DefinitionError("steps", f"has {len(raw)} steps, over the limit of {limits.SAGA_STEPS_MAX}")
    return [fields.expect_object(step, f"steps[{i}]") for i, step in enumerate(raw)]


def _step_names(steps: list[dict]) -> tuple[str, ...]:
    names: list[str] = []
    for index, step in enumerate(steps):
        prefix = f"steps[{index}]"
        raw = fields.require(step, "name", prefix)
        name = fields.expect_pattern(raw, f"{prefix}.name", limits.STEP_NAME_PATTERN)
        if name in names:
            raise DefinitionError(f"{prefix}.name", f"duplicate step name {name!r}")
        names.append(name)
    return tuple(names)


def _parse_step(obj: dict, index: int, names: tuple[str, ...], known: frozenset[str] | None) -> Step:
    prefix = f"steps[{index}]"
    fields.reject_unknown_fields(obj, _STEP_FIELDS, prefix)
    is_await = fields.present(obj, "await")
    is_action = fields.present(obj, "service") or fields.present(obj, "action")
    if is_await and is_action:
        raise DefinitionError(prefix, "a step has either 'await' or 'service' and 'action', not both")
    if not is_await and not is_action:
        raise DefinitionError(prefix, "a step needs 'service' and 'action', or 'await'")
    if is_await:
        return _parse_await_step(obj, prefix, names[index])
    return _parse_action_step(obj, prefix, index, names, known)


def _parse_await_step(obj: dict, prefix: str, name: str) -> AwaitStep:
    for key in _NOT_ON_AWAIT:
        if fields.present(obj, key):
            raise DefinitionError(f"{prefix}.{key}", "not allowed on an await step")
    signal = fields.expect_pattern(obj["await"], f"{prefix}.await", limits.SIGNAL_NAME_PATTERN)
    timeout_s = fields.seconds(
        obj.get("timeout_s"), f"{prefix}.timeout_s", limits.AWAIT_TIMEOUT_S_DEFAULT, limits.AWAIT_TIMEOUT_S_MAX
    )
    return AwaitStep(name, signal, timeout_s)


def _parse_action_step(
    obj: dict, prefix: str, index: int, names: tuple[str, ...], known: frozenset[str] | None
) -> ActionStep:
    service = fields.expect_pattern(
        fields.require(obj, "service", prefix), f"{prefix}.service", limits.SERVICE_NAME_PATTERN
    )
    if known is not None and service not in known:
        raise DefinitionError(f"{prefix}.service", f"unknown service {service!r}")
    action_obj = _call_object(obj, "action", prefix, _CALL_FIELDS)
    method, path, body_json = _parse_call(action_obj, f"{prefix}.action", names[:index], names, "an earlier step")
    compensation = None
    if fields.present(obj, "compensation"):
        compensation = _parse_compensation(obj, prefix, index, names)
    timeout_s = fields.seconds(
        obj.get("timeout_s"), f"{prefix}.timeout_s", limits.STEP_TIMEOUT_S_DEFAULT, limits.STEP_TIMEOUT_S_MAX
    )
    retry = _parse_retry(obj.get("retry"), f"{prefix}.retry", ACTION_RETRY_DEFAULT)
    return ActionStep(names[index], service, HttpCall(method, path, body_json), compensation, timeout_s, retry)


def _parse_compensation(obj: dict, prefix: str, index: int, names: tuple[str, ...]) -> Compensation:
    where = f"{prefix}.compensation"
    comp_obj = _call_object(obj, "compensation", prefix, _COMPENSATION_FIELDS)
    method, path, body_json = _parse_call(comp_obj, where, names[: index + 1], names, "this step or an earlier one")
    retry = _parse_retry(comp_obj.get("retry"), f"{where}.retry", COMPENSATION_RETRY_DEFAULT)
    return Compensation(method, path, body_json, retry)


def _call_object(obj: dict, name: str, prefix: str, allowed: tuple[str, ...]) -> dict:
    where = f"{prefix}.{name}"
    call = fields.expect_object(fields.require(obj, name, prefix), where)
    fields.reject_unknown_fields(call, allowed, where)
    return call


def _parse_call(
    call: dict, where: str, allowed: tuple[str, ...], names: tuple[str, ...], allowed_text: str
) -> tuple[str, str, str | None]:
    method = fields.require(call, "method", where)
    if not isinstance(method, str) or method not in limits.METHODS:
        raise DefinitionError(f"{where}.method", f"must be one of {', '.join(limits.METHODS)}")
    path = fields.path(fields.require(call, "path", where), f"{where}.path")
    body = call.get("body")
    body_json = fields.body_json(body, f"{where}.body")
    check_references(body, f"{where}.body", allowed, names, allowed_text)
    return method, path, body_json


def _parse_retry(raw: object, where: str, default: RetryPolicy) -> RetryPolicy:
    if raw is None:
        return default
    obj = fields.expect_object(raw, where)
    fields.reject_unknown_fields(obj, _RETRY_FIELDS, where)
    max_attempts = fields.integer(
        obj.get("max_attempts"), f"{where}.max_attempts", default.max_attempts, 1, limits.RETRY_ATTEMPTS_MAX
    )
    backoff_s = fields.seconds(
        obj.get("backoff_s"), f"{where}.backoff_s", default.backoff_s, limits.BACKOFF_S_MAX, allow_zero=True
    )
    max_backoff_s = fields.seconds(
        obj.get("max_backoff_s"),
        f"{where}.max_backoff_s",
        max(default.max_backoff_s, backoff_s),
        limits.BACKOFF_S_MAX,
        allow_zero=True,
    )
    if max_backoff_s < backoff_s:
        raise DefinitionError(f"{where}.max_backoff_s", f"must be >= backoff_s ({backoff_s})")
    return RetryPolicy(max_attempts, backoff_s, max_backoff_s)
