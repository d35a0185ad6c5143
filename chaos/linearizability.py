"""Linearizability of the service registry: Wing & Gong's search with
Lowe's memoisation (as in Porcupine), one register per key.

The registry is a map of independent registers, so a history is
linearizable exactly when each key's sub-history is (P-compositionality):
each key is searched on its own, which keeps every search small.

The model of one key: the state is the value (absent: None);
`registry_put` sets it, `registry_delete` clears it, `registry_get` must
return it (an operation's `result`; None for absent). Values compare by
their canonical JSON.

Which operations take part:
- "ok": took effect between its invoke and its completion;
- "fail": never took effect; left out;
- "unknown" put or delete: may take effect at any point after its invoke,
  or never. It completes at +infinity: it has no return entry, and the
  search succeeds once every operation that has one is linearized;
- "unknown" get: observed nothing; left out.

The search (Lowe, "Testing for linearizability", 2017): entries (calls and
returns) sorted by time, calls first on equal times, in a doubly linked
list. Walking from the head, a call whose operation the model accepts is
linearized: its call and return entries are lifted out of the list and the
walk starts over; a return entry reached means its operation was not
linearized in time, so the last choice is undone. A configuration
(linearized set, state) seen before is not explored again.

Unknown writes need more care: each one left free doubles the
configurations a failing search must rule out, and writes that never took
effect are the common unknowns. Four rules keep them in check, each
sound because dropping an unknown write that no read saw from a
linearization leaves a linearization:
- an unknown write is linearized only when it changes the value, and then
  only a read (of its value) may come next; one whose value no read
  returns is left out from the start;
- unknown writes sit in a list of their own and are tried only after every
  completed operation that could go next, so "never" is explored first;
- unknown writes of one value are interchangeable once invoked, so only
  the earliest invoked of them not yet linearized is tried;
- a configuration is also skipped when one seen before had the same
  completed operations and state with a subset of its unknown writes: all
  that could follow it could follow the one seen, which failed.

The keys share `time_limit_s`: each key may use its share of the time
left (the time left over the keys still to search), so one hard key does
not leave the others unsearched. A search that passes its time or
`CACHE_ENTRIES_MAX` configurations gives up: the verdict is "unknown",
neither a pass nor a failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator.chaos.history import Operation

__all__ = [
    "CACHE_ENTRIES_MAX",
    "FAIL",
    "PASS",
    "REGISTER_KINDS",
    "UNKNOWN",
    "KeyVerdict",
    "check_register",
    "combined_verdict",
    "register_operations",
]

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
PUT, GET, DELETE = "registry_put", "registry_get", "registry_delete"
REGISTER_KINDS = (PUT, GET, DELETE)
# Configurations one key's search may remember before it gives up.
CACHE_ENTRIES_MAX = 2_000_000
# How many search steps pass between two looks at the clock.
CLOCK_EVERY_STEPS = 256
# Operations a failure names (the prefix that could not be linearized).
FAILURE_OPERATIONS_MAX = 200

Clock = Callable[[], float]
# The register's value (canonical JSON; None: absent) and whether the last
# operation linearized was an unknown write, which only a read may follow.
_State = tuple[str | None, bool]


@dataclass(frozen=True)
class KeyVerdict:
    """The verdict on one key; `failure` says why it is not linearizable."""

    key: str
    verdict: str
    operations: int
    failure: dict[str, Any] | None = field(default=None)


def register_operations(operations: Iterable[Operation]) -> dict[str, list[Operation]]:
    """The operations that take part in the check, by key (see the docstring)."""
    by_key: dict[str, list[Operation]] = {}
    for operation in operations:
        if operation.kind not in REGISTER_KINDS or operation.outcome == "fail":
            continue
        if operation.kind == GET and operation.outcome == "unknown":
            continue
        assert operation.key is not None, f"registry operation {operation.id} without a key"
        by_key.setdefault(operation.key, []).append(operation)
    return by_key


def check_register(
    operations: Iterable[Operation],
    *,
    time_limit_s: float,
    clock: Clock = time.monotonic,
    cache_entries_max: int = CACHE_ENTRIES_MAX,
) -> list[KeyVerdict]:
    """A verdict per key, keys in sorted order, all within one time limit."""
    assert time_limit_s >= 0 and cache_entries_max > 0
    deadline_s = clock() + time_limit_s
    by_key = sorted(register_operations(operations).items())
    verdicts = []
    for position, (key, key_operations) in enumerate(by_key):
        now_s = clock()
        key_deadline_s = now_s + (deadline_s - now_s) / (len(by_key) - position)
        search = _Search(_observed(key_operations), key_deadline_s, clock, cache_entries_max)
        verdict, failure = search.run()
        verdicts.append(KeyVerdict(key, verdict, len(key_operations), failure))
    return verdicts


def _observed(operations: list[Operation]) -> list[Operation]:
    """Without the unknown writes whose value no read returns."""
    read = {_canonical(op.result) for op in operations if op.kind == GET}
    return [
        op for op in operations if op.outcome == "ok" or _canonical(None if op.kind == DELETE else op.value) in read
    ]


def combined_verdict(verdicts: Iterable[KeyVerdict]) -> str:
    """Fail if any key fails; else unknown if any key is unknown; else pass."""
    seen = {verdict.verdict for verdict in verdicts}
    return FAIL if FAIL in seen else UNKNOWN if UNKNOWN in seen else PASS


def _canonical(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))


class _Search:
    """One key's search. Completed operations' calls and returns are in the
    main list, unknown writes' calls in their own; entries are numbered in
    time order, 0 heads both lists and -1 ends them."""

    def __init__(self, operations: list[Operation], deadline_s: float, clock: Clock, cache_entries_max: int) -> None:
        self.operations = operations
        self.deadline_s = deadline_s
        self.clock = clock
        self.cache_entries_max = cache_entries_max
        self.is_read = [op.kind == GET for op in operations]
        # Per operation: the value it writes (puts, deletes) or must read (gets).
        self.canonical = [
            None if op.kind == DELETE else _canonical(op.result if op.kind == GET else op.value) for op in operations
        ]
        self.has_return = [op.outcome == "ok" for op in operations]
        self._build_lists()
        # Per unknown write: the one invoked last before it with the same value.
        self.same_before = [-1] * len(operations)
        last_by_value: dict[str | None, int] = {}
        for entry in range(1, len(self.entry_op)):
            index = self.entry_op[entry]
            if not self.has_return[index]:
                self.same_before[index] = last_by_value.get(self.canonical[index], -1)
                last_by_value[self.canonical[index]] = index

    def _build_lists(self) -> None:
        events = []  # (time, 0 call | 1 return, operation index)
        for index, op in enumerate(self.operations):
            events.append((op.invoke_s, 0, index))
            if self.has_return[index]:
                assert op.complete_s is not None
                events.append((op.complete_s, 1, index))
        events.sort()
        count = len(events) + 1
        self.entry_op = [-1] * count
        self.entry_is_call = [False] * count
        self.match = [-1] * count  # a completed operation's call -> its return
        self.next, self.previous = [-1] * count, [-1] * count
        self.next_unknown, self.previous_unknown = [-1] * count, [-1] * count
        tails = {True: 0, False: 0}  # last entry of the main / unknown list
        call_of: dict[int, int] = {}
        for entry, (_, kind, index) in enumerate(events, start=1):
            self.entry_op[entry] = index
            self.entry_is_call[entry] = kind == 0
            if kind == 0:
                call_of[index] = entry
            else:
                self.match[call_of[index]] = entry
            main = self.has_return[index]
            nxt, prv = self._links(main)
            nxt[tails[main]], prv[entry], tails[main] = entry, tails[main], entry

    def _links(self, main: bool) -> tuple[list[int], list[int]]:
        return (self.next, self.previous) if main else (self.next_unknown, self.previous_unknown)

    def _lift(self, entry: int) -> None:
        nxt, prv = self._links(self.has_return[self.entry_op[entry]])
        for lifted in (entry, self.match[entry]):
            if lifted != -1:
                nxt[prv[lifted]] = nxt[lifted]
                if nxt[lifted] != -1:
                    prv[nxt[lifted]] = prv[lifted]

    def _unlift(self, entry: int) -> None:
        nxt, prv = self._links(self.has_return[self.entry_op[entry]])
        for lifted in (self.match[entry], entry):
            if lifted != -1:
                nxt[prv[lifted]] = lifted
                if nxt[lifted] != -1:
                    prv[nxt[lifted]] = lifted

    def _step(self, index: int, state: _State, unknown_bits: int) -> _State | None:
        """The state after operation `index`; None when it cannot go next."""
        value, must_read = state
        written = self.canonical[index]
        if self.is_read[index]:
            return (value, False) if written == value else None
        if must_read:
            return None
        if self.has_return[index]:
            return written, False
        earlier = self.same_before[index]
        if earlier != -1 and not unknown_bits >> earlier & 1:
            return None  # an interchangeable unknown write goes first
        return (written, True) if written != value else None

    def run(self) -> tuple[str, dict[str, Any] | None]:
        """Walk the main list up to its first return entry (`bound`), then
        the unknown writes invoked before it; past those, undo a choice."""
        required_total, required_done = sum(self.has_return), 0
        state: _State = (None, False)
        required_bits = unknown_bits = 0  # bit i: operation i is linearized
        stack: list[tuple[int, _State, int]] = []  # (call entry, state before, bound)
        seen: dict[tuple[int, _State], list[int]] = {(0, state): [0]}  # -> unknown sets
        seen_count, steps, furthest, longest = 1, 0, 0, []
        entry, bound = self.next[0], -1  # bound -1: walking the main list
        while required_done < required_total:
            if steps % CLOCK_EVERY_STEPS == 0 and self.clock() >= self.deadline_s:
                return UNKNOWN, None
            steps += 1
            if bound == -1 and not self.entry_is_call[entry]:
                entry, bound = self.next_unknown[0], entry
                continue
            if bound == -1 or (entry != -1 and entry < bound):
                index = self.entry_op[entry]
                after = self._step(index, state, unknown_bits)
                if after is not None:
                    bit = 1 << index
                    main = self.has_return[index]
                    new_required = required_bits | bit if main else required_bits
                    new_unknown = unknown_bits if main else unknown_bits | bit
                    sets = seen.setdefault((new_required, after), [])
                    if not any(old & ~new_unknown == 0 for old in sets):
                        if seen_count >= self.cache_entries_max:
                            return UNKNOWN, None
                        sets.append(new_unknown)
                        seen_count += 1
                        stack.append((entry, state, bound))
                        state, required_bits, unknown_bits = after, new_required, new_unknown
                        required_done += main
                        self._lift(entry)
                        entry, bound = self.next[0], -1
                        continue
                entry = self.next[entry] if bound == -1 else self.next_unknown[entry]
                continue
            # Nothing else can go before the operation of `bound` returns.
            furthest = max(furthest, bound)
            if len(stack) > len(longest):
                longest = [self.entry_op[e] for e, _, _ in stack]
            if not stack:
                return FAIL, self._failure(furthest, longest)
            entry, state, bound = stack.pop()
            index = self.entry_op[entry]
            required_bits &= ~(1 << index)
            unknown_bits &= ~(1 << index)
            required_done -= self.has_return[index]
            self._unlift(entry)
            entry = self.next[entry] if bound == -1 else self.next_unknown[entry]
        return PASS, None

    def _failure(self, furthest_return: int, longest_order: list[int]) -> dict[str, Any]:
        """The shortest prefix the search shows is not linearizable: every
        operation invoked before the furthest return entry it reached (the
        ones still running there may or may not have taken effect)."""
        blocked = self.operations[self.entry_op[furthest_return]]
        prefix = [
            self.operations[self.entry_op[entry]]
            for entry in range(1, furthest_return + 1)
            if self.entry_is_call[entry]
        ]
        return {
            "kind": "not_linearizable",
            "key": blocked.key,
            "blocked": blocked.id,
            "message": f"operation {blocked.id} ({blocked.kind}) cannot take effect by its "
            f"completion, in any order of the {len(prefix)} operations invoked by then",
            "operations": [op.to_json() for op in prefix[-FAILURE_OPERATIONS_MAX:]],
            "operations_omitted": max(0, len(prefix) - FAILURE_OPERATIONS_MAX),
            "longest_linearization": [self.operations[i].id for i in longest_order],
        }
