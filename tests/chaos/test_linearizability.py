"""Wing-Gong-Lowe on the registry's register model, against hand-made,
random and brute-forced histories."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.chaos.history import Operation
from coordinator.chaos.linearizability import FAIL, PASS, UNKNOWN, KeyVerdict, check_register, combined_verdict

PUT, GET, DELETE = "registry_put", "registry_get", "registry_delete"


class Ops:
    """Builds operations with ids in order: `ops.put("k", 1, 0, 1)`."""

    def __init__(self) -> None:
        self.items: list[Operation] = []

    def _add(
        self, kind: str, key: str, value: object, start: float, end: float | None, outcome: str, result: object
    ) -> Operation:
        op = Operation(len(self.items), len(self.items) % 3, kind, key, value, start, end, outcome, result)
        self.items.append(op)
        return op

    def put(self, key, value, start, end=None, outcome="ok"):
        return self._add(PUT, key, value, start, end, outcome, 200)

    def delete(self, key, start, end=None, outcome="ok"):
        return self._add(DELETE, key, None, start, end, outcome, 200)

    def get(self, key, read, start, end=None, outcome="ok"):
        return self._add(GET, key, None, start, end, outcome, read)


def verdict(operations, time_limit_s=10.0, **options) -> str:
    return combined_verdict(check_register(operations, time_limit_s=time_limit_s, **options))


def test_a_sequential_history_is_linearizable() -> None:
    ops = Ops()
    ops.put("orders", {"url": "http://a"}, 0, 1)
    ops.get("orders", {"url": "http://a"}, 2, 3)
    ops.delete("orders", 4, 5)
    ops.get("orders", None, 6, 7)
    assert verdict(ops.items) == PASS


def test_a_stale_read_after_a_completed_put_is_not_linearizable() -> None:
    ops = Ops()
    ops.put("orders", 1, 0, 1)
    ops.put("orders", 2, 2, 3)
    stale = ops.get("orders", 1, 4, 5)
    [result] = check_register(ops.items, time_limit_s=10)
    assert result.verdict == FAIL and result.key == "orders" and result.operations == 3
    failure = result.failure
    assert failure["blocked"] == stale.id and failure["key"] == "orders"
    assert [op["id"] for op in failure["operations"]] == [0, 1, 2]


def test_reading_absent_after_a_completed_put_is_not_linearizable() -> None:
    ops = Ops()
    ops.put("orders", 1, 0, 1)
    ops.get("orders", None, 2, 3)
    assert verdict(ops.items) == FAIL


def test_the_failure_names_the_shortest_prefix_that_cannot_linearize() -> None:
    ops = Ops()
    ops.put("k", 1, 0, 1)
    ops.get("k", 1, 2, 3)
    ops.put("k", 2, 4, 5)
    bad = ops.get("k", 1, 6, 7)
    ops.put("k", 3, 8, 9)  # after the violation: not part of it
    ops.get("k", 3, 10, 11)
    [result] = check_register(ops.items, time_limit_s=10)
    assert result.failure["blocked"] == bad.id
    assert [op["id"] for op in result.failure["operations"]] == [0, 1, 2, 3]
    assert result.failure["longest_linearization"] == [0, 1, 2]


def test_concurrent_operations_and_unknowns_can_linearize() -> None:
    ops = Ops()
    ops.put("k", "a", 0, 10)  # slow put
    ops.get("k", "a", 1, 2)  # sees it before it returns
    ops.put("k", "b", 3, outcome="unknown")  # took effect...
    ops.get("k", "b", 5, 6)  # ...as this read shows
    ops.delete("k", 7, outcome="unknown")
    ops.get("k", None, 8, 9)
    ops.get("k", "zzz", 8, 9, outcome="unknown")  # a read with no answer observes nothing
    ops.put("k", "zzz", 8, 9, outcome="fail")  # never took effect
    assert verdict(ops.items) == PASS


def test_an_unknown_write_may_never_take_effect() -> None:
    ops = Ops()
    ops.put("k", "a", 0, 1)
    ops.put("k", "b", 2, outcome="unknown")
    ops.get("k", "a", 3, 4)
    ops.get("k", "a", 5, 6)
    assert verdict(ops.items) == PASS


def test_an_unknown_write_takes_effect_at_most_once() -> None:
    ops = Ops()
    ops.put("k", "b", 0, outcome="unknown")
    ops.get("k", "b", 1, 2)
    ops.delete("k", 3, 4)
    ops.get("k", "b", 5, 6)  # b cannot come back: nothing writes it again
    assert verdict(ops.items) == FAIL


def test_a_failed_write_never_takes_effect() -> None:
    ops = Ops()
    ops.put("k", "a", 0, 1, outcome="fail")
    ops.get("k", "a", 2, 3)
    assert verdict(ops.items) == FAIL


def test_equal_timestamps_count_as_concurrent() -> None:
    ops = Ops()
    ops.get("k", "b", 0, 1)  # returns at the instant the put is invoked
    ops.put("k", "b", 1, 2)
    assert verdict(ops.items) == PASS


def test_each_key_is_its_own_register() -> None:
    ops = Ops()
    ops.put("x", 1, 0, 1)
    ops.put("y", 2, 0, 1)
    ops.get("x", 1, 2, 3)
    ops.get("y", None, 2, 3)  # y was written before: stale
    results = {r.key: r.verdict for r in check_register(ops.items, time_limit_s=10)}
    assert results == {"x": PASS, "y": FAIL}


def test_values_compare_as_json() -> None:
    ops = Ops()
    ops.put("k", {"url": "u", "grpc": None}, 0, 1)
    ops.get("k", {"grpc": None, "url": "u"}, 2, 3)
    assert verdict(ops.items) == PASS


def hard_history(width: int) -> list[Operation]:
    """`width` concurrent puts, then a read of a value none wrote: every
    order of every subset of the puts is a configuration to rule out."""
    ops = Ops()
    for value in range(width):
        ops.put("k", value, 0, 10)
    ops.get("k", "never", 11, 12)
    return ops.items


def test_the_search_gives_up_at_its_time_limit() -> None:
    started = time.monotonic()
    assert verdict(hard_history(40), time_limit_s=0.2) == UNKNOWN
    assert time.monotonic() - started < 5


def test_a_time_limit_passed_on_a_fake_clock_is_unknown() -> None:
    readings = iter([0.0] + [100.0] * 10)
    results = check_register(hard_history(3), time_limit_s=1, clock=lambda: next(readings))
    assert [r.verdict for r in results] == [UNKNOWN]


def test_the_search_gives_up_beyond_its_cache_bound() -> None:
    assert verdict(hard_history(40), cache_entries_max=1000) == UNKNOWN
    assert verdict(hard_history(6)) == FAIL


def test_unknown_loses_to_fail_and_beats_pass() -> None:
    ops = Ops()
    ops.put("a", 1, 0, 1)
    ops.get("a", 2, 2, 3)
    hard = [dataclasses.replace(op, id=op.id + 2) for op in hard_history(40)]
    results = check_register(ops.items + hard, time_limit_s=0.2)
    assert [(r.key, r.verdict) for r in results] == [("a", FAIL), ("k", UNKNOWN)]
    assert combined_verdict(results) == FAIL
    passing = KeyVerdict("b", PASS, 1)
    assert combined_verdict([passing, results[1]]) == UNKNOWN
    assert combined_verdict([passing]) == PASS


def test_interchangeable_unknown_deletes_do_not_multiply_the_search() -> None:
    """Thirty unknown deletes, each round needing one of them: tried in
    every order this would never end; as interchangeable ones it is quick."""
    ops = Ops()
    for _ in range(30):
        ops.delete("k", 0, outcome="unknown")
    for round_index in range(30):
        at = 10 * round_index + 1
        ops.put("k", round_index, at, at + 1)
        ops.get("k", None, at + 2, at + 3)
    ops.get("k", 0, 400, 401)  # stale: 0 was overwritten and deleted long ago
    started = time.monotonic()
    [result] = check_register(ops.items, time_limit_s=20)
    assert result.verdict == FAIL and result.failure["blocked"] == len(ops.items) - 1
    assert time.monotonic() - started < 5


def simulated(count: int, seed: int, unknown_rate: float) -> list[Operation]:
    """Eight clients on one key against a true register, each operation
    taking effect inside its interval; some writes time out (unknown), and
    half of those never took effect."""
    rng = random.Random(seed)
    planned, busy_until = [], [0.0] * 8
    for index in range(count):
        process = index % 8
        start = max(busy_until[process], index * 0.002)
        point = start + rng.uniform(0, 0.01)
        busy_until[process] = end = point + rng.uniform(0, 0.01)
        planned.append((point, index, process, rng.choice([PUT, GET, GET, DELETE]), start, end))
    value, ops = None, []
    for _, index, process, kind, start, end in sorted(planned):
        unknown = kind != GET and rng.random() < unknown_rate
        written = {"url": f"u{index}"} if kind == PUT else None
        if kind != GET and (not unknown or rng.random() < 0.5):
            value = written
        ops.append(
            Operation(
                index,
                process,
                kind,
                "k",
                written,
                start,
                None if unknown else end,
                "unknown" if unknown else "ok",
                value if kind == GET else 200,
            )
        )
    return sorted(ops, key=lambda op: op.id)


def test_a_stale_read_among_many_unknown_writes_is_found_in_time() -> None:
    ops = simulated(600, seed=5, unknown_rate=0.1)
    assert verdict(ops) == PASS
    reads = [op for op in ops if op.kind == GET and op.result is not None]
    victim, stale = reads[len(reads) * 3 // 4], reads[len(reads) // 4].result
    broken = [dataclasses.replace(op, result=stale) if op is victim else op for op in ops]
    [result] = check_register(broken, time_limit_s=20)
    assert result.verdict == FAIL and result.failure["blocked"] == victim.id


# -- random histories -----------------------------------------------------

writes = st.one_of(st.tuples(st.just(PUT), st.integers(0, 3)), st.tuples(st.just(DELETE), st.none()))
commands = st.lists(st.one_of(writes, st.tuples(st.just(GET), st.none())), min_size=1, max_size=30)


def sequential(commands_list, key="k") -> list[Operation]:
    """Non-overlapping operations, each read answering the current value."""
    ops, value = Ops(), None
    for index, (kind, argument) in enumerate(commands_list):
        start, end = 2 * index, 2 * index + 1
        if kind == PUT:
            value = argument
            ops.put(key, argument, start, end)
        elif kind == DELETE:
            value = None
            ops.delete(key, start, end)
        else:
            ops.get(key, value, start, end)
    return ops.items


@given(commands)
def test_random_sequential_histories_are_linearizable(commands_list) -> None:
    assert verdict(sequential(commands_list)) == PASS


@given(commands, st.data())
def test_a_read_of_a_value_never_written_is_not_linearizable(commands_list, data) -> None:
    ops = sequential(commands_list)
    at = data.draw(st.integers(0, len(ops)))
    ghost = Operation(len(ops), 9, GET, "k", None, 2 * at - 0.5, 2 * at - 0.25, "ok", "ghost")
    assert verdict(ops + [ghost]) == FAIL


@given(commands, st.data())
@settings(max_examples=200)
def test_intervals_around_a_legal_order_are_linearizable(commands_list, data) -> None:
    """Stretch each operation's interval around its linearization point,
    and let some writes go unknown: still linearizable."""
    stretched = []
    for op in sequential(commands_list):
        point = op.invoke_s + 0.5
        start = point - data.draw(st.floats(0, 6))
        end = point + data.draw(st.floats(0, 6))
        unknown = op.kind != GET and data.draw(st.booleans())
        stretched.append(
            Operation(
                op.id,
                op.process,
                op.kind,
                op.key,
                op.value,
                start,
                None if unknown else end,
                "unknown" if unknown else "ok",
                op.result,
            )
        )
    assert verdict(stretched) == PASS


def brute_force(operations: list[Operation]) -> str:
    """Try every subset of unknown writes in every order that respects real time."""
    taking_part = [op for op in operations if op.outcome == "ok" or (op.outcome == "unknown" and op.kind != GET)]
    required = [op for op in taking_part if op.outcome == "ok"]
    optional = [op for op in taking_part if op.outcome == "unknown"]

    def end(op):
        return math.inf if op.outcome == "unknown" else op.complete_s

    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations(required + list(chosen)):
                if any(end(later) < earlier.invoke_s for i, earlier in enumerate(order) for later in order[i + 1 :]):
                    continue
                value, legal = None, True
                for op in order:
                    if op.kind == PUT:
                        value = op.value
                    elif op.kind == DELETE:
                        value = None
                    elif op.result != value:
                        legal = False
                        break
                if legal:
                    return PASS
    return FAIL


@st.composite
def small_histories(draw) -> list[Operation]:
    ops = Ops()
    for _ in range(draw(st.integers(1, 5))):
        start = draw(st.integers(0, 6))
        end = start + draw(st.integers(0, 4))
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "unknown", "fail"]))
        stop = None if outcome == "unknown" else end
        kind = draw(st.sampled_from([PUT, PUT, GET, GET, DELETE]))
        if kind == PUT:
            ops.put("k", draw(st.integers(1, 2)), start, stop, outcome)
        elif kind == GET:
            ops.get("k", draw(st.sampled_from([None, 1, 2])), start, stop, outcome)
        else:
            ops.delete("k", start, stop, outcome)
    return ops.items


@given(small_histories())
@settings(max_examples=400)
def test_the_search_agrees_with_brute_force(operations) -> None:
    assert verdict(operations) == brute_force(operations)
