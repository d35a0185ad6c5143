"""Checkers: each judges one property of a `History` and never looks at
anything else (no network, no clock but the linearizability time limit).

    results = run_all(history, min_ok_operations=50)
    print(render_table(results))
    report = report_json(history, results, seed=7, duration_s=60, failover_ms=[820])

`check_workers` alone judges what a run counted beside its history: with
transition workers, that calls were leased to them and that no node made
a participant call itself.

Every checker returns a `CheckResult` whose verdict is "pass", "fail" or
"unknown" (only the linearizability search can give up); `passed` is True
for a proven pass only. A run passes when no checker fails (`run_passed`).
Each violation is a dict with a `kind`, a `message` and the operations
(`Operation.to_json`, without a submitted definition) and effects
(service, key, kind, at_s, fence) it involves.

Effects are attributed by idempotency key: `{saga}/{step}/action|compensation`
to a saga step, `{tx}/{service}/prepare|commit|abort` to a transaction's
participant (ids, step and service names never contain "/").
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coordinator.chaos.history import Effect, History, Operation
from coordinator.chaos.linearizability import FAIL, PASS, UNKNOWN, check_register, combined_verdict, register_operations

__all__ = [
    "FAIL",
    "PASS",
    "UNKNOWN",
    "CheckResult",
    "check_acknowledged",
    "check_convergence",
    "check_effects_once",
    "check_liveness",
    "check_registry_linearizable",
    "check_sagas",
    "check_transactions",
    "check_workers",
    "render_table",
    "report_json",
    "run_all",
    "run_passed",
]

VERDICTS = (PASS, FAIL, UNKNOWN)
# Violations one result keeps (`violations_total` counts them all).
VIOLATIONS_MAX = 100
LINEARIZABILITY_TIME_LIMIT_S_DEFAULT = 30.0
SUBMIT_SAGA, SUBMIT_TX = "submit_saga", "submit_tx"
SAGA_TERMINAL = ("completed", "compensated")
TX_TERMINAL = ("committed", "aborted")
DECISION_OF_STATE = {
    "preparing": None,
    "committing": "commit",
    "committed": "commit",
    "aborting": "abort",
    "aborted": "abort",
}
SAGA_PHASES = ("action", "compensation")
TX_PHASES = ("prepare", "commit", "abort")

Violation = dict[str, Any]


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    checked: int
    violations: list[Violation]
    verdict: str = PASS
    violations_total: int = 0
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        assert self.verdict in VERDICTS, self.verdict
        assert self.passed == (self.verdict == PASS), (self.passed, self.verdict)
        assert (self.verdict == FAIL) == (self.violations_total > 0), self
        assert len(self.violations) == min(self.violations_total, VIOLATIONS_MAX), self

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "passed": self.passed,
            "checked": self.checked,
            "violations_total": self.violations_total,
            "violations": list(self.violations),
            "notes": list(self.notes),
        }


def _result(
    name: str, checked: int, violations: list[Violation], *, verdict: str | None = None, notes: Iterable[str] = ()
) -> CheckResult:
    if verdict is None:
        verdict = FAIL if violations else PASS
    return CheckResult(
        name, verdict == PASS, checked, violations[:VIOLATIONS_MAX], verdict, len(violations), tuple(notes)
    )


def _violation(
    kind: str, message: str, *, operations: Iterable[Operation] = (), effects: Iterable[Effect] = (), **details: Any
) -> Violation:
    return {
        "kind": kind,
        "message": message,
        **details,
        "operations": [_operation_ref(op) for op in operations],
        "effects": [_effect_ref(effect) for effect in effects],
    }


def _operation_ref(operation: Operation) -> dict[str, Any]:
    ref = operation.to_json()
    if operation.kind in (SUBMIT_SAGA, SUBMIT_TX):
        del ref["value"]  # the definition: long, and in the history anyway
    return ref


def _effect_ref(effect: Effect) -> dict[str, Any]:
    return {
        "service": effect.service,
        "key": effect.idempotency_key,
        "kind": effect.kind,
        "at_s": effect.at_s,
        "fence": effect.fence,
    }


def _is_saga(workflow: Mapping[str, Any]) -> bool:
    return isinstance(workflow.get("steps"), list)


def _is_transaction(workflow: Mapping[str, Any]) -> bool:
    return isinstance(workflow.get("participants"), list)


def _effects_by_branch(
    effects: Iterable[Effect], phases: tuple[str, ...]
) -> dict[str, dict[str, dict[str, list[Effect]]]]:
    """{workflow: {step or service: {phase: effects in time order}}}."""
    grouped: dict[str, dict[str, dict[str, list[Effect]]]] = {}
    for effect in sorted(effects, key=lambda e: e.at_s):
        parts = effect.idempotency_key.rsplit("/", 2)
        if effect.kind not in phases or len(parts) != 3 or parts[2] != effect.kind:
            continue
        workflow, branch, phase = parts
        grouped.setdefault(workflow, {}).setdefault(branch, {}).setdefault(phase, []).append(effect)
    return grouped


# -- 1. acknowledged submissions ---------------------------------------------


def check_acknowledged(history: History) -> CheckResult:
    """Every acknowledged submission exists after the faults and is terminal."""
    violations: list[Violation] = []
    checked = 0
    for op in history.operations:
        if op.kind not in (SUBMIT_SAGA, SUBMIT_TX) or op.outcome != "ok":
            continue
        checked += 1
        workflow_id = op.key
        if workflow_id is None and isinstance(op.result, Mapping):
            workflow_id = op.result.get("id")
        final = history.workflows_final.get(workflow_id) if isinstance(workflow_id, str) else None
        is_saga = op.kind == SUBMIT_SAGA
        noun = "saga" if is_saga else "transaction"
        if final is None or not (_is_saga(final) if is_saga else _is_transaction(final)):
            violations.append(
                _violation(
                    "lost_acknowledgement",
                    f"{noun} {workflow_id!r} was acknowledged but is missing after the faults",
                    operations=[op],
                    workflow=workflow_id,
                )
            )
            continue
        terminal = SAGA_TERMINAL if is_saga else TX_TERMINAL
        if final.get("state") not in terminal:
            violations.append(
                _violation(
                    "not_terminal",
                    f"acknowledged {noun} {workflow_id!r} ended {final.get('state')!r}, not one of {terminal}",
                    operations=[op],
                    workflow=workflow_id,
                )
            )
    return _result("acknowledged", checked, violations)


# -- 2. two-phase commit atomicity ------------------------------------------


def check_transactions(history: History) -> CheckResult:
    """All participants commit or all abort, as the one recorded decision says;
    no phase-2 effect without the decision; nobody left prepared."""
    effects = _effects_by_branch(history.effects, TX_PHASES)
    finals = {key: w for key, w in history.workflows_final.items() if _is_transaction(w)}
    recording = {effect.service for effect in history.effects}
    tx_ids = sorted(set(effects) | set(finals))
    violations: list[Violation] = []
    for tx_id in tx_ids:
        violations.extend(_transaction_violations(tx_id, finals.get(tx_id), effects.get(tx_id, {}), recording))
    return _result("twopc_atomicity", len(tx_ids), violations)


def _transaction_violations(
    tx_id: str, final: Mapping[str, Any] | None, by_service: dict[str, dict[str, list[Effect]]], recording: set[str]
) -> list[Violation]:
    found: list[Violation] = []
    state = None if final is None else final.get("state")
    decision = None if final is None else final.get("decision")
    commits = [e for phases in by_service.values() for e in phases.get("commit", [])]
    aborts = [e for phases in by_service.values() for e in phases.get("abort", [])]
    if final is None:
        found.append(
            _violation(
                "unknown_transaction",
                f"participants saw transaction {tx_id!r}, which is missing after the faults",
                transaction=tx_id,
                effects=[e for phases in by_service.values() for es in phases.values() for e in es],
            )
        )
    elif state not in DECISION_OF_STATE or DECISION_OF_STATE[state] != decision:
        found.append(
            _violation(
                "state_decision_mismatch",
                f"transaction {tx_id!r} is {state!r} with decision {decision!r}",
                transaction=tx_id,
            )
        )
    if commits and aborts:
        found.append(
            _violation(
                "torn_transaction",
                f"transaction {tx_id!r}: "
                f"{sorted({e.service for e in commits})} committed, "
                f"{sorted({e.service for e in aborts})} aborted",
                transaction=tx_id,
                decision=decision,
                effects=commits + aborts,
            )
        )
    if commits and decision != "commit":
        found.append(
            _violation(
                "commit_without_decision",
                f"transaction {tx_id!r}: commit effects but the recorded decision is {decision!r}",
                transaction=tx_id,
                effects=commits,
            )
        )
    if aborts and decision != "abort":
        found.append(
            _violation(
                "abort_without_decision",
                f"transaction {tx_id!r}: abort effects but the recorded decision is {decision!r}",
                transaction=tx_id,
                effects=aborts,
            )
        )
    if final is not None:
        found.extend(_participant_violations(tx_id, final, by_service, recording))
    return found


def _voted_yes(effects: list[Effect]) -> bool:
    return any(isinstance(e.output, Mapping) and e.output.get("vote") == "yes" for e in effects)


def _participant_violations(
    tx_id: str, final: Mapping[str, Any], by_service: dict[str, dict[str, list[Effect]]], recording: set[str]
) -> list[Violation]:
    """For a terminal transaction: each participant's effects and state. An
    effect is only required of a service whose effects the history holds."""
    found: list[Violation] = []
    state = final.get("state")
    participants = {p.get("service"): p for p in final["participants"] if isinstance(p, Mapping)}
    for service in sorted(set(by_service) - set(participants)):
        found.append(
            _violation(
                "unknown_participant",
                f"{service} got calls of transaction {tx_id!r}, which does not name it",
                transaction=tx_id,
                effects=[e for es in by_service[service].values() for e in es],
            )
        )
    if state not in TX_TERMINAL:
        return found
    for service, participant in sorted(participants.items(), key=lambda item: str(item[0])):
        phases = by_service.get(service, {})
        prepares = phases.get("prepare", [])
        done = "commit" if state == "committed" else "abort"
        if _voted_yes(prepares) and "commit" not in phases and "abort" not in phases:
            found.append(
                _violation(
                    "participant_left_prepared",
                    f"{service} voted yes in {state} transaction {tx_id!r} and got neither commit nor abort",
                    transaction=tx_id,
                    service=service,
                    effects=prepares,
                )
            )
        elif service in recording and done not in phases:
            found.append(
                _violation(
                    f"participant_not_{state}",
                    f"{service} has no {done} effect in {state} transaction {tx_id!r}",
                    transaction=tx_id,
                    service=service,
                    effects=[e for es in phases.values() for e in es],
                )
            )
        if state == "committed" and service in recording and not _voted_yes(prepares):
            found.append(
                _violation(
                    "commit_without_yes_vote",
                    f"transaction {tx_id!r} committed without a yes prepare effect at {service}",
                    transaction=tx_id,
                    service=service,
                    effects=prepares,
                )
            )
        wanted = "committed" if state == "committed" else "aborted"
        if participant.get("state") != wanted:
            found.append(
                _violation(
                    "participant_state_mismatch",
                    f"{service} is {participant.get('state')!r} in {state} transaction {tx_id!r}",
                    transaction=tx_id,
                    service=service,
                )
            )
    return found


# -- 3. sagas ---------------------------------------------------------------


def check_sagas(history: History) -> CheckResult:
    """Effects of each saga against its final object: actions end succeeded
    or compensated, compensations run backwards and only after an action,
    and no action runs once compensating began."""
    effects = _effects_by_branch(history.effects, SAGA_PHASES)
    finals = {key: w for key, w in history.workflows_final.items() if _is_saga(w)}
    definitions = _saga_definitions(history.operations)
    recording = {effect.service for effect in history.effects}
    saga_ids = sorted(set(effects) | set(finals))
    violations: list[Violation] = []
    for saga_id in saga_ids:
        by_step = effects.get(saga_id, {})
        final = finals.get(saga_id)
        if final is None:
            violations.append(
                _violation(
                    "unknown_saga",
                    f"participants saw saga {saga_id!r}, which is missing after the faults",
                    saga=saga_id,
                    effects=[e for phases in by_step.values() for es in phases.values() for e in es],
                )
            )
            continue
        violations.extend(_saga_order_violations(saga_id, final, by_step))
        violations.extend(_saga_outcome_violations(saga_id, final, by_step, definitions.get(saga_id), recording))
    return _result("sagas", len(saga_ids), violations)


def _saga_definitions(operations: Iterable[Operation]) -> dict[str, Mapping[str, Any]]:
    """The first submitted definition of each saga id, when the history has it."""
    definitions: dict[str, Mapping[str, Any]] = {}
    for op in operations:
        if (
            op.kind == SUBMIT_SAGA
            and isinstance(op.key, str)
            and isinstance(op.value, Mapping)
            and isinstance(op.value.get("steps"), list)
        ):
            definitions.setdefault(op.key, op.value)
    return definitions


def _saga_order_violations(
    saga_id: str, final: Mapping[str, Any], by_step: dict[str, dict[str, list[Effect]]]
) -> list[Violation]:
    found: list[Violation] = []
    order = {s.get("name"): i for i, s in enumerate(final["steps"]) if isinstance(s, Mapping)}
    for step in sorted(set(by_step) - set(order)):
        found.append(
            _violation(
                "unknown_step",
                f"saga {saga_id!r} has no step {step!r}",
                saga=saga_id,
                step=step,
                effects=[e for es in by_step[step].values() for e in es],
            )
        )
    actions = [e for phases in by_step.values() for e in phases.get("action", [])]
    first_compensations = sorted(
        (phases["compensation"][0] for phases in by_step.values() if "compensation" in phases), key=lambda e: e.at_s
    )
    for compensation in first_compensations:
        step = compensation.idempotency_key.rsplit("/", 2)[1]
        if "action" not in by_step[step]:
            found.append(
                _violation(
                    "compensation_without_action",
                    f"saga {saga_id!r} compensated step {step!r}, whose action never ran",
                    saga=saga_id,
                    step=step,
                    effects=[compensation],
                )
            )
    if not first_compensations:
        return found
    began = first_compensations[0]
    for action in sorted(actions, key=lambda e: e.at_s):
        if action.at_s > began.at_s:
            found.append(
                _violation(
                    "action_after_compensation",
                    f"saga {saga_id!r}: action {action.idempotency_key} ran after compensating began",
                    saga=saga_id,
                    effects=[began, action],
                )
            )
    known = [e for e in first_compensations if e.idempotency_key.rsplit("/", 2)[1] in order]
    for earlier, later in itertools.pairwise(known):
        earlier_index = order[earlier.idempotency_key.rsplit("/", 2)[1]]
        later_index = order[later.idempotency_key.rsplit("/", 2)[1]]
        if later_index >= earlier_index:
            found.append(
                _violation(
                    "compensation_out_of_order",
                    f"saga {saga_id!r} compensated step "
                    f"{earlier_index} before step {later_index}: not in reverse step order",
                    saga=saga_id,
                    steps=[earlier_index, later_index],
                    effects=[earlier, later],
                )
            )
    return found


def _saga_outcome_violations(
    saga_id: str,
    final: Mapping[str, Any],
    by_step: dict[str, dict[str, list[Effect]]],
    definition: Mapping[str, Any] | None,
    recording: set[str],
) -> list[Violation]:
    """For a terminal saga: what each step ended as, against its effects."""
    state = final.get("state")
    if state not in SAGA_TERMINAL:
        return []
    found: list[Violation] = []
    wanted = "succeeded" if state == "completed" else "compensated"
    steps = {s.get("name"): s for s in final["steps"] if isinstance(s, Mapping)}
    for name, phases in sorted(by_step.items()):
        if name in steps and "action" in phases and steps[name].get("state") != wanted:
            found.append(
                _violation(
                    "step_not_settled",
                    f"step {name!r} of {state} saga {saga_id!r} ran its action but ended {steps[name].get('state')!r}",
                    saga=saga_id,
                    step=name,
                    effects=phases["action"],
                )
            )
        if state == "completed" and "compensation" in phases:
            found.append(
                _violation(
                    "compensation_in_completed_saga",
                    f"step {name!r} of completed saga {saga_id!r} was compensated",
                    saga=saga_id,
                    step=name,
                    effects=phases["compensation"],
                )
            )
    for spec in definition.get("steps", []) if definition is not None else []:
        if not isinstance(spec, Mapping) or spec.get("service") not in recording:
            continue  # an await step, or a service whose effects are not recorded
        phases = by_step.get(spec.get("name"), {})
        if state == "completed" and "action" not in phases:
            found.append(
                _violation(
                    "succeeded_without_effect",
                    f"step {spec.get('name')!r} of completed saga "
                    f"{saga_id!r} has no action effect at {spec['service']}",
                    saga=saga_id,
                    step=spec.get("name"),
                )
            )
        if state == "compensated" and "action" in phases and spec.get("compensation") and "compensation" not in phases:
            found.append(
                _violation(
                    "action_not_compensated",
                    f"step {spec.get('name')!r} of compensated saga {saga_id!r} ran its action and no compensation",
                    saga=saga_id,
                    step=spec.get("name"),
                    effects=phases["action"],
                )
            )
    return found


# -- 4. exactly one effect per idempotency key -------------------------------


def check_effects_once(history: History) -> CheckResult:
    grouped: dict[tuple[str, str], list[Effect]] = {}
    for effect in sorted(history.effects, key=lambda e: e.at_s):
        grouped.setdefault((effect.service, effect.idempotency_key), []).append(effect)
    violations = [
        _violation(
            "duplicate_effect",
            f"{service} performed {key} {len(effects)} times",
            service=service,
            key=key,
            effects=effects,
        )
        for (service, key), effects in sorted(grouped.items())
        if len(effects) > 1
    ]
    return _result("effects_once", len(grouped), violations)


# -- 5. linearizable service registry ----------------------------------------


def check_registry_linearizable(
    history: History,
    *,
    time_limit_s: float = LINEARIZABILITY_TIME_LIMIT_S_DEFAULT,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    operations = history.operations
    checked = sum(len(ops) for ops in register_operations(operations).values())
    verdicts = check_register(operations, time_limit_s=time_limit_s, clock=clock)
    verdict = combined_verdict(verdicts)
    violations = [v.failure for v in verdicts if v.verdict == FAIL and v.failure is not None]
    undecided = [v.key for v in verdicts if v.verdict == UNKNOWN]
    notes = [f"search gave up (time_limit_s={time_limit_s}) on keys {undecided}"] if undecided else []
    return _result("registry_linearizable", checked, violations, verdict=verdict, notes=notes)


# -- 6. convergence ----------------------------------------------------------


def check_convergence(history: History) -> CheckResult:
    digests = history.node_digests
    if not digests:
        return _result("convergence", 0, [_violation("no_digests", "no node digest was recorded after the faults")])
    violations: list[Violation] = []
    unread = sorted(node for node, d in digests.items() if d.digest is None)
    if unread:
        violations.append(_violation("digest_unread", f"could not read the digest of {unread}", nodes=unread))
    groups: dict[str, list[str]] = {}
    for node, entry in sorted(digests.items()):
        if entry.digest is not None:
            groups.setdefault(entry.digest, []).append(node)
    if len(groups) > 1:
        # The reference is the digest most nodes share (ties: the smallest).
        reference = min(groups, key=lambda digest: (-len(groups[digest]), digest))
        differing = sorted(node for d, nodes in groups.items() if d != reference for node in nodes)
        violations.append(
            _violation(
                "digests_differ",
                f"{differing} differ from the digest of {groups[reference]}",
                nodes=differing,
                reference=reference,
                groups=groups,
                read_at_s={node: entry.read_at_s for node, entry in sorted(digests.items())},
            )
        )
    return _result("convergence", len(digests), violations)


# -- 7. liveness -------------------------------------------------------------


def check_liveness(history: History, *, min_ok_operations: int) -> CheckResult:
    assert min_ok_operations >= 0
    operations = history.operations
    ok_by_kind = Counter(op.kind for op in operations if op.outcome == "ok")
    ok_total = sum(ok_by_kind.values())
    violations = (
        []
        if ok_total >= min_ok_operations
        else [
            _violation(
                "too_few_ok_operations",
                f"{ok_total} operations succeeded, fewer than min_ok_operations={min_ok_operations}",
                ok=ok_total,
                min_ok_operations=min_ok_operations,
                ok_by_kind=dict(sorted(ok_by_kind.items())),
            )
        ]
    )
    return _result("liveness", len(operations), violations)


# -- 8. workers (remote executor mode) --------------------------------------


def check_workers(
    *, dispatched_total: int, calls_by_caller: Mapping[str, int], workers: Iterable[str], unknown: str = "unknown"
) -> CheckResult:
    """Remote mode that did something: ``dispatched_total`` calls were leased
    to a worker (what the nodes' dispatchers counted); of the participant
    calls, by the process that sent them (``calls_by_caller``: a worker id, a
    node id, or ``unknown`` when it could not be found), none came from a
    node, and some were found to come from a worker (else the attribution
    proved nothing)."""
    workers = set(workers)
    calls = sum(calls_by_caller.values())
    by_workers = sum(n for caller, n in calls_by_caller.items() if caller in workers)
    by_nodes = {
        caller: n for caller, n in sorted(calls_by_caller.items()) if caller not in workers and caller != unknown
    }
    violations = []
    if dispatched_total <= 0:
        violations.append(_violation("nothing_leased", "remote mode, and no call was leased to a worker"))
    if by_nodes:
        violations.append(
            _violation(
                "node_called_participant",
                f"in remote mode node processes made participant calls themselves: {by_nodes}",
                calls=by_nodes,
            )
        )
    if calls and not by_workers:
        violations.append(
            _violation(
                "callers_not_found",
                f"none of {calls} participant calls was traced to a worker process",
                calls=dict(calls_by_caller),
            )
        )
    notes = [
        f"leased {dispatched_total}",
        "calls by " + ", ".join(f"{c} {n}" for c, n in sorted(calls_by_caller.items())),
    ]
    return _result("workers", calls, violations, notes=notes)


# -- running and reporting ---------------------------------------------------


def run_all(
    history: History,
    *,
    min_ok_operations: int,
    time_limit_s: float = LINEARIZABILITY_TIME_LIMIT_S_DEFAULT,
    clock: Callable[[], float] = time.monotonic,
) -> list[CheckResult]:
    return [
        check_acknowledged(history),
        check_transactions(history),
        check_sagas(history),
        check_effects_once(history),
        check_registry_linearizable(history, time_limit_s=time_limit_s, clock=clock),
        check_convergence(history),
        check_liveness(history, min_ok_operations=min_ok_operations),
    ]


def run_passed(results: Iterable[CheckResult]) -> bool:
    """A run passes when no checker fails ("unknown" is reported, not failed)."""
    return all(result.verdict != FAIL for result in results)


def render_table(results: Iterable[CheckResult]) -> str:
    rows = [("checker", "verdict", "checked", "violations")]
    rows += [(r.name, r.verdict.upper(), str(r.checked), str(r.violations_total)) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        f"{name:<{widths[0]}}  {verdict:<{widths[1]}}  {checked:>{widths[2]}}  {count:>{widths[3]}}"
        for name, verdict, checked, count in rows
    )


def report_json(
    history: History, results: Iterable[CheckResult], seed: int, duration_s: float, failover_ms: Iterable[float]
) -> dict[str, Any]:
    results = list(results)
    finals = history.workflows_final.values()
    sagas = Counter(str(w.get("state")) for w in finals if _is_saga(w))
    transactions = Counter(str(w.get("state")) for w in finals if _is_transaction(w))
    return {
        "seed": seed,
        "duration_s": duration_s,
        "passed": run_passed(results),
        "operations": history.outcome_counts(),
        "workflows": {
            "sagas": sum(sagas.values()),
            "transactions": sum(transactions.values()),
            "saga_states": dict(sorted(sagas.items())),
            "transaction_states": dict(sorted(transactions.items())),
        },
        "faults": [dict(fault) for fault in history.faults],
        "failover_ms": list(failover_ms),
        "checkers": [result.to_json() for result in results],
    }
