"""Each checker passes a correct history and fails a broken one with the
violation that names what broke."""

from __future__ import annotations

import json

import pytest

from coordinator.chaos.checkers import (
    FAIL,
    PASS,
    UNKNOWN,
    CheckResult,
    check_acknowledged,
    check_convergence,
    check_effects_once,
    check_liveness,
    check_registry_linearizable,
    check_sagas,
    check_transactions,
    check_workers,
    render_table,
    report_json,
    run_all,
    run_passed,
)
from coordinator.chaos.history import History, Operation
from coordinator.chaos.participants import Effect

# -- builders ----------------------------------------------------------------


def effect(at_s: float, service: str, key: str, output: object = None) -> Effect:
    return Effect(
        at_s,
        service,
        "POST",
        "/" + key.rsplit("/", 1)[-1],
        key,
        "2:40",
        key.rsplit("/", 1)[-1],
        {},
        output if output is not None else {"id": key},
    )


def operation(
    op_id: int,
    kind: str,
    key: str,
    outcome: str = "ok",
    value: object = None,
    result: object = 201,
    start: float = 0.0,
    end: float | None = 1.0,
) -> Operation:
    end = None if outcome == "unknown" and end is None else end
    return Operation(op_id, op_id % 4, kind, key, value, start, end, outcome, result)


def saga(saga_id: str, state: str, **steps: str) -> dict:
    return {
        "id": saga_id,
        "state": state,
        "failure": None,
        "history": [],
        "steps": [
            {"name": name, "state": step_state, "attempts": 1, "output": None, "error": None}
            for name, step_state in steps.items()
        ],
    }


def transaction(tx_id: str, state: str, decision: str | None, **participants: str) -> dict:
    return {
        "id": tx_id,
        "state": state,
        "decision": decision,
        "history": [],
        "participants": [
            {"service": service, "vote": "yes", "state": participant_state}
            for service, participant_state in participants.items()
        ],
    }


def kinds(result: CheckResult) -> set[str]:
    return {violation["kind"] for violation in result.violations}


def assert_passes(result: CheckResult) -> None:
    assert (result.verdict, result.passed, result.violations) == (PASS, True, []), result


def assert_fails_with(result: CheckResult, kind: str) -> dict:
    assert result.verdict == FAIL and not result.passed, result
    assert kind in kinds(result), result.violations
    return next(v for v in result.violations if v["kind"] == kind)


YES, NO = {"vote": "yes"}, {"vote": "no"}


def committed_tx_effects(tx: str = "t1", start_s: float = 10.0) -> list[Effect]:
    return [
        effect(start_s, "bank-a", f"{tx}/bank-a/prepare", YES),
        effect(start_s + 0.1, "bank-b", f"{tx}/bank-b/prepare", YES),
        effect(start_s + 0.2, "bank-a", f"{tx}/bank-a/commit"),
        effect(start_s + 0.3, "bank-b", f"{tx}/bank-b/commit"),
    ]


def aborted_tx_effects(tx: str = "t2", start_s: float = 20.0) -> list[Effect]:
    return [
        effect(start_s, "bank-a", f"{tx}/bank-a/prepare", YES),
        effect(start_s + 0.1, "bank-b", f"{tx}/bank-b/prepare", NO),
        effect(start_s + 0.2, "bank-a", f"{tx}/bank-a/abort"),
        effect(start_s + 0.3, "bank-b", f"{tx}/bank-b/abort"),
    ]


def completed_saga_effects(saga_id: str = "s1", start_s: float = 1.0) -> list[Effect]:
    return [
        effect(start_s, "orders", f"{saga_id}/create/action"),
        effect(start_s + 0.1, "payments", f"{saga_id}/charge/action"),
    ]


def compensated_saga_effects(saga_id: str = "s2", start_s: float = 30.0) -> list[Effect]:
    """create and reserve ran, charge failed definitely: reserve, then create, undone."""
    return [
        effect(start_s, "orders", f"{saga_id}/create/action"),
        effect(start_s + 0.1, "inventory", f"{saga_id}/reserve/action"),
        effect(start_s + 0.3, "inventory", f"{saga_id}/reserve/compensation"),
        effect(start_s + 0.4, "orders", f"{saga_id}/create/compensation"),
    ]


SAGA_DEFINITION = {
    "steps": [
        {
            "name": "create",
            "service": "orders",
            "action": {"path": "/orders"},
            "compensation": {"path": "/orders/cancel"},
        },
        {
            "name": "reserve",
            "service": "inventory",
            "action": {"path": "/reservations"},
            "compensation": {"path": "/reservations/release"},
        },
        {"name": "charge", "service": "payments", "action": {"path": "/charges"}},
    ]
}


def correct_history() -> History:
    return History(
        operations=[
            operation(0, "submit_saga", "s1", value={"steps": []}),
            operation(1, "submit_saga", "s2", value=SAGA_DEFINITION),
            operation(2, "submit_tx", "t1"),
            operation(3, "submit_tx", "t2"),
            operation(4, "submit_saga", "s3", outcome="unknown", end=None),  # never made it
            operation(5, "submit_tx", "t3", outcome="fail", result=503),
            operation(6, "registry_put", "orders", value={"url": "u1"}, result=200, start=0, end=1),
            operation(7, "registry_get", "orders", result={"url": "u1"}, start=2, end=3),
            operation(8, "registry_put", "orders", "unknown", {"url": "u2"}, None, 4, None),
            operation(9, "registry_get", "orders", result={"url": "u2"}, start=5, end=6),
        ],
        effects=completed_saga_effects() + compensated_saga_effects() + committed_tx_effects() + aborted_tx_effects(),
        workflows_final={
            "s1": saga("s1", "completed", create="succeeded", charge="succeeded"),
            "s2": saga("s2", "compensated", create="compensated", reserve="compensated", charge="failed"),
            "t1": transaction("t1", "committed", "commit", **{"bank-a": "committed", "bank-b": "committed"}),
            "t2": transaction("t2", "aborted", "abort", **{"bank-a": "aborted", "bank-b": "aborted"}),
        },
        node_digests={"n1": "d1", "n2": "d1", "n3": "d1"},
        faults=[{"at_s": 0.5, "kind": "kill", "node": "n2"}],
    )


def replaced(history: History, **changes) -> History:
    raw = history.to_json()
    raw.update(changes)
    return History.from_json(raw)


# -- the correct history -----------------------------------------------------


def test_a_correct_history_passes_every_checker() -> None:
    results = run_all(correct_history(), min_ok_operations=5)
    for result in results:
        assert_passes(result)
    assert run_passed(results)
    checked = {result.name: result.checked for result in results}
    assert checked == {
        "acknowledged": 4,
        "twopc_atomicity": 2,
        "sagas": 2,
        "effects_once": 14,
        "registry_linearizable": 4,
        "convergence": 3,
        "liveness": 10,
    }


# -- 1. acknowledged submissions ---------------------------------------------


def test_a_lost_acknowledgement_fails() -> None:
    history = correct_history()
    del history.workflows_final["t1"]
    violation = assert_fails_with(check_acknowledged(history), "lost_acknowledgement")
    assert violation["workflow"] == "t1" and violation["operations"][0]["id"] == 2


def test_an_acknowledged_workflow_that_never_finished_fails() -> None:
    history = correct_history()
    history.workflows_final["s1"]["state"] = "compensating"
    assert_fails_with(check_acknowledged(history), "not_terminal")


def test_a_saga_acknowledged_as_a_transaction_is_lost() -> None:
    history = correct_history()
    history.add_operation(operation(20, "submit_tx", "s1"))
    assert_fails_with(check_acknowledged(history), "lost_acknowledgement")


# -- 2. two-phase commit -----------------------------------------------------


def tx_history(effects: list[Effect], final: dict | None) -> History:
    return History(effects=effects, workflows_final={} if final is None else {final["id"]: final})


BOTH_COMMITTED = {"bank-a": "committed", "bank-b": "committed"}
BOTH_ABORTED = {"bank-a": "aborted", "bank-b": "aborted"}


def test_a_torn_transaction_fails() -> None:
    effects = committed_tx_effects()[:3] + [effect(10.3, "bank-b", "t1/bank-b/abort")]
    history = tx_history(effects, transaction("t1", "committed", "commit", **BOTH_COMMITTED))
    violation = assert_fails_with(check_transactions(history), "torn_transaction")
    assert {e["key"] for e in violation["effects"]} == {"t1/bank-a/commit", "t1/bank-b/abort"}


def test_a_commit_without_a_recorded_decision_fails() -> None:
    effects = committed_tx_effects()
    history = tx_history(effects, transaction("t1", "preparing", None, **BOTH_COMMITTED))
    violation = assert_fails_with(check_transactions(history), "commit_without_decision")
    assert len(violation["effects"]) == 2
    missing = assert_fails_with(check_transactions(tx_history(effects, None)), "commit_without_decision")
    assert missing["transaction"] == "t1"


def test_a_commit_against_an_abort_decision_fails() -> None:
    effects = aborted_tx_effects()[:3] + [effect(20.3, "bank-b", "t2/bank-b/commit")]
    history = tx_history(effects, transaction("t2", "aborted", "abort", **BOTH_ABORTED))
    result = check_transactions(history)
    assert {"commit_without_decision", "torn_transaction"} <= kinds(result)


def test_a_participant_left_prepared_fails() -> None:
    effects = aborted_tx_effects()[:2] + [effect(20.3, "bank-b", "t2/bank-b/abort")]
    history = tx_history(effects, transaction("t2", "aborted", "abort", **BOTH_ABORTED))
    violation = assert_fails_with(check_transactions(history), "participant_left_prepared")
    assert violation["service"] == "bank-a"
    assert [e["key"] for e in violation["effects"]] == ["t2/bank-a/prepare"]


def test_a_no_voter_is_not_left_prepared_but_still_owed_its_abort() -> None:
    effects = aborted_tx_effects()[:3]  # bank-b voted no and got no abort
    result = check_transactions(tx_history(effects, transaction("t2", "aborted", "abort", **BOTH_ABORTED)))
    assert kinds(result) == {"participant_not_aborted"}
    assert result.violations[0]["service"] == "bank-b"


def test_a_service_without_recorded_effects_owes_none() -> None:
    effects = [e for e in aborted_tx_effects() if e.service == "bank-a"]
    assert_passes(check_transactions(tx_history(effects, transaction("t2", "aborted", "abort", **BOTH_ABORTED))))


def test_a_transaction_still_committing_may_wait_for_its_commits() -> None:
    effects = committed_tx_effects()[:3]
    history = tx_history(
        effects, transaction("t1", "committing", "commit", **{"bank-a": "committed", "bank-b": "prepared"})
    )
    assert_passes(check_transactions(history))


def test_a_committed_transaction_needs_every_yes_vote_and_commit() -> None:
    effects = [
        committed_tx_effects()[0],
        committed_tx_effects()[2],
        *aborted_tx_effects(),
    ]  # bank-b's effects are recorded
    history = tx_history(effects, transaction("t1", "committed", "commit", **BOTH_COMMITTED))
    assert {"participant_not_committed", "commit_without_yes_vote"} <= kinds(check_transactions(history))


def test_a_final_object_that_contradicts_itself_fails() -> None:
    history = tx_history(committed_tx_effects(), transaction("t1", "committed", "abort", **BOTH_COMMITTED))
    assert_fails_with(check_transactions(history), "state_decision_mismatch")
    history = tx_history(
        committed_tx_effects(), transaction("t1", "committed", "commit", **{"bank-a": "committed", "bank-b": "aborted"})
    )
    assert_fails_with(check_transactions(history), "participant_state_mismatch")


# -- 3. sagas ----------------------------------------------------------------


def saga_history(effects: list[Effect], final: dict | None, definition: dict | None = None) -> History:
    operations = [] if definition is None else [operation(0, "submit_saga", "s2", value=definition)]
    return History(
        operations=operations, effects=effects, workflows_final={} if final is None else {final["id"]: final}
    )


COMPENSATED_S2 = saga("s2", "compensated", create="compensated", reserve="compensated", charge="failed")


def test_an_out_of_order_compensation_fails() -> None:
    effects = compensated_saga_effects()
    effects[2], effects[3] = (
        effect(30.4, "inventory", "s2/reserve/compensation"),
        effect(30.3, "orders", "s2/create/compensation"),
    )
    violation = assert_fails_with(check_sagas(saga_history(effects, COMPENSATED_S2)), "compensation_out_of_order")
    assert violation["steps"] == [0, 1]
    assert [e["key"] for e in violation["effects"]] == ["s2/create/compensation", "s2/reserve/compensation"]


def test_an_action_after_compensation_began_fails() -> None:
    effects = compensated_saga_effects() + [effect(30.35, "payments", "s2/charge/action")]
    final = saga("s2", "compensated", create="compensated", reserve="compensated", charge="compensated")
    violation = assert_fails_with(check_sagas(saga_history(effects, final)), "action_after_compensation")
    assert [e["key"] for e in violation["effects"]] == ["s2/reserve/compensation", "s2/charge/action"]


def test_a_compensation_without_an_action_fails() -> None:
    effects = [
        effect(30.0, "orders", "s2/create/action"),
        effect(30.3, "inventory", "s2/reserve/compensation"),
        effect(30.4, "orders", "s2/create/compensation"),
    ]
    violation = assert_fails_with(check_sagas(saga_history(effects, COMPENSATED_S2)), "compensation_without_action")
    assert violation["step"] == "reserve"


def test_a_step_with_an_action_must_end_succeeded_or_compensated() -> None:
    final = saga("s2", "compensated", create="compensated", reserve="failed", charge="failed")
    violation = assert_fails_with(check_sagas(saga_history(compensated_saga_effects(), final)), "step_not_settled")
    assert violation["step"] == "reserve"


def test_a_completed_saga_has_no_compensation() -> None:
    effects = completed_saga_effects() + [effect(2.0, "orders", "s1/create/compensation")]
    final = saga("s1", "completed", create="succeeded", charge="succeeded")
    assert_fails_with(check_sagas(saga_history(effects, final)), "compensation_in_completed_saga")


def test_with_the_definition_every_action_of_a_compensated_saga_is_undone() -> None:
    effects = compensated_saga_effects()[:3]  # create's compensation never ran
    assert_passes(check_sagas(saga_history(effects, COMPENSATED_S2)))  # no definition: no rule
    result = check_sagas(saga_history(effects, COMPENSATED_S2, SAGA_DEFINITION))
    assert assert_fails_with(result, "action_not_compensated")["step"] == "create"


def test_with_the_definition_a_completed_step_needs_its_action() -> None:
    final = saga("s2", "completed", create="succeeded", reserve="succeeded", charge="succeeded")
    effects = [
        effect(1.0, "orders", "s2/create/action"),
        effect(1.1, "inventory", "s2/reserve/action"),
        effect(1.2, "payments", "other/charge/action"),
    ]
    result = check_sagas(saga_history(effects, final, SAGA_DEFINITION))
    assert assert_fails_with(result, "succeeded_without_effect")["step"] == "charge"


def test_effects_of_a_saga_missing_after_the_faults_fail() -> None:
    assert_fails_with(check_sagas(saga_history(compensated_saga_effects(), None)), "unknown_saga")


def test_a_stuck_saga_is_judged_on_order_only() -> None:
    effects = compensated_saga_effects()[:3]
    final = saga("s2", "stuck", create="compensating", reserve="compensated", charge="failed")
    assert_passes(check_sagas(saga_history(effects, final, SAGA_DEFINITION)))


# -- 4. exactly one effect per key -------------------------------------------


def test_a_doubled_effect_fails() -> None:
    history = correct_history()
    history.add_effects([effect(31.0, "orders", "s2/create/action")])
    violation = assert_fails_with(check_effects_once(history), "duplicate_effect")
    assert violation["key"] == "s2/create/action" and len(violation["effects"]) == 2


# -- 5. registry linearizability ---------------------------------------------


def test_a_stale_registry_read_fails() -> None:
    history = correct_history()
    history.add_operation(operation(20, "registry_put", "payments", value={"url": "p1"}, result=200, start=10, end=11))
    history.add_operation(operation(21, "registry_get", "payments", result=None, start=12, end=13))
    violation = assert_fails_with(check_registry_linearizable(history), "not_linearizable")
    assert violation["key"] == "payments" and violation["blocked"] == 21
    assert [op["id"] for op in violation["operations"]] == [20, 21]


def test_a_registry_search_out_of_time_is_unknown_and_does_not_fail_the_run() -> None:
    history = correct_history()
    for value in range(40):
        history.add_operation(operation(100 + value, "registry_put", "hard", value=value, result=200, start=0, end=10))
    history.add_operation(operation(200, "registry_get", "hard", result="never", start=11, end=12))
    results = run_all(history, min_ok_operations=1, time_limit_s=0.2)
    [registry] = [r for r in results if r.name == "registry_linearizable"]
    assert (registry.verdict, registry.passed, registry.violations) == (UNKNOWN, False, [])
    assert "hard" in registry.notes[0]
    assert run_passed(results)
    assert "UNKNOWN" in render_table(results)


# -- 6. convergence ----------------------------------------------------------


def test_diverging_digests_fail_and_name_the_nodes() -> None:
    history = replaced(
        correct_history(),
        node_digests={
            "n1": {"digest": "d1", "read_at_s": 9.0},
            "n2": {"digest": "d2", "read_at_s": 9.1},
            "n3": {"digest": "d1", "read_at_s": 9.2},
        },
    )
    violation = assert_fails_with(check_convergence(history), "digests_differ")
    assert violation["nodes"] == ["n2"] and violation["reference"] == "d1"
    assert violation["groups"] == {"d1": ["n1", "n3"], "d2": ["n2"]}


def test_a_digest_not_read_or_none_at_all_fails() -> None:
    history = correct_history()
    history.record_digest("n4", None)
    assert assert_fails_with(check_convergence(history), "digest_unread")["nodes"] == ["n4"]
    assert_fails_with(check_convergence(History()), "no_digests")


# -- 7. liveness -------------------------------------------------------------


def test_too_few_successful_operations_fail() -> None:
    history = correct_history()
    assert_passes(check_liveness(history, min_ok_operations=7))
    violation = assert_fails_with(check_liveness(history, min_ok_operations=8), "too_few_ok_operations")
    assert violation["ok"] == 7
    assert_fails_with(check_liveness(History(), min_ok_operations=1), "too_few_ok_operations")


# -- reporting ---------------------------------------------------------------


def test_the_table_has_a_line_per_checker() -> None:
    history = correct_history()
    del history.workflows_final["s1"]
    results = run_all(history, min_ok_operations=1)
    lines = render_table(results).splitlines()
    assert len(lines) == 1 + len(results)
    assert lines[1].split() == ["acknowledged", "FAIL", "4", "1"]
    assert not run_passed(results)


def test_the_report_is_json_and_counts_the_run() -> None:
    history = correct_history()
    results = run_all(history, min_ok_operations=1)
    report = json.loads(json.dumps(report_json(history, results, seed=42, duration_s=60.0, failover_ms=[812.5, 640.0])))
    assert report["seed"] == 42 and report["duration_s"] == 60.0 and report["passed"] is True
    assert report["operations"] == {"ok": 7, "fail": 1, "unknown": 2}
    assert report["workflows"]["sagas"] == 2 and report["workflows"]["transactions"] == 2
    assert report["faults"] == [{"at_s": 0.5, "kind": "kill", "node": "n2"}]
    assert report["failover_ms"] == [812.5, 640.0]
    assert [c["name"] for c in report["checkers"]] == [r.name for r in results]
    assert {"name", "passed", "checked", "violations"} <= set(report["checkers"][0])


def test_a_failing_history_checks_the_same_offline(tmp_path) -> None:
    history = correct_history()
    history.add_effects([effect(10.5, "bank-a", "t1/bank-a/commit")])
    history.node_digests.pop("n3")
    history.record_digest("n3", "d9", read_at_s=50.0)
    path = tmp_path / "failing.json"
    history.dump(path)
    before = [r.to_json() for r in run_all(history, min_ok_operations=1)]
    after = [r.to_json() for r in run_all(History.load(path), min_ok_operations=1)]
    assert before == after
    assert {c["name"] for c in after if c["verdict"] == FAIL} == {"effects_once", "convergence"}


def test_violations_beyond_the_bound_are_counted_not_kept() -> None:
    effects = [effect(float(i), "orders", f"s{i // 2}/a/action") for i in range(400)]
    result = check_effects_once(History(effects=effects))
    assert result.violations_total == 200 and len(result.violations) == 100


@pytest.mark.parametrize("verdict", [PASS, UNKNOWN])
def test_a_result_without_violations_cannot_claim_to_fail(verdict: str) -> None:
    with pytest.raises(AssertionError):
        CheckResult("x", verdict == PASS, 0, [{"kind": "k"}], verdict, 1)


def test_workers_pass_when_calls_were_leased_and_only_workers_called() -> None:
    result = check_workers(
        dispatched_total=40, calls_by_caller={"w1": 30, "w2": 12, "unknown": 2}, workers=["w1", "w2"]
    )
    assert result.verdict == PASS and result.checked == 44
    assert result.notes == ("leased 40", "calls by unknown 2, w1 30, w2 12")


def test_workers_fail_when_nothing_was_leased() -> None:
    result = check_workers(dispatched_total=0, calls_by_caller={}, workers=["w1"])
    assert result.verdict == FAIL and [v["kind"] for v in result.violations] == ["nothing_leased"]


def test_workers_fail_when_a_node_called_a_participant() -> None:
    result = check_workers(dispatched_total=9, calls_by_caller={"w1": 8, "n2": 1}, workers=["w1", "w2"])
    assert result.verdict == FAIL
    assert [(v["kind"], v["calls"]) for v in result.violations] == [("node_called_participant", {"n2": 1})]


def test_workers_fail_when_no_call_could_be_traced_to_a_worker() -> None:
    result = check_workers(dispatched_total=9, calls_by_caller={"unknown": 9}, workers=["w1"])
    assert result.verdict == FAIL and [v["kind"] for v in result.violations] == ["callers_not_found"]
