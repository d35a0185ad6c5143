"""Invariants the simulation checks as the run goes (``sim_invariants``).

:class:`RegisterWatch` - a linearizable read of the registry never returns
a value older than the last *acknowledged* write of its key. Per key it
keeps every write (put: its URL, delete: absent) with its invoke time,
completion time and outcome. When a read that was invoked at ``t`` returns,
the values that could be current are those of

- the initial value (absent), unless a write was acknowledged before ``t``;
- every write acknowledged (ok) that completed no earlier than the invoke
  of the latest-invoked write acknowledged before ``t``: anything that
  completed before that write was invoked is ordered before it, so
  overwritten by the time of the read;
- every write still pending or whose outcome is unknown (it may take
  effect at any time after its invoke, or never);

a definitely failed write never took effect and is left out. A read that
returns anything else is a violation at that moment, recorded with the
trace lines around it. This is a necessary condition of linearizability
(``registry_linearizable`` checks the whole history after the run); it
catches a stale read where it happens, with its context.

:func:`deadline_violations` - clock skew makes a deadline fire at most the
declared skew bound early (see :mod:`coordinator.chaos.sim.clock`): every saga or
await step that timed out, and every transaction aborted on its deadline,
must have run at least its timeout minus the bound on the true clock,
from the moment its start was stamped to the moment the deadline's event
was stamped. Stamps are mapped to the true time at which a node proposed
them (the earliest proposal of the start stamp, the latest of the deadline
stamp: only a deadline surely too early is reported).

:func:`flap_violations` - link flaps do not become an election storm: see
the comment above ``FLAP_ELECTIONS_SLACK_ROUNDS``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coordinator import saga as saga_machine

__all__ = ["FLAP_ELECTIONS_SLACK_ROUNDS", "FLAP_SETTLE_S", "RegisterWatch", "deadline_violations", "flap_violations"]

PUT, GET, DELETE = "registry_put", "registry_get", "registry_delete"
WRITES_PER_KEY_MAX = 100_000


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class _Write:
    op_id: int
    value: str  # canonical JSON; "null": absent
    invoke_s: float
    complete_s: float = math.inf  # pending or unknown: +infinity
    outcome: str = "pending"


class RegisterWatch:
    """Online: reads never older than the last acknowledged write (see the module docstring)."""

    def __init__(self, now: Callable[[], float], on_violation: Callable[..., None]) -> None:
        self._now = now
        self._on_violation = on_violation
        self._writes: dict[str, list[_Write]] = {}
        self._by_id: dict[int, _Write] = {}
        self._reads: dict[int, tuple[str, float]] = {}
        self.reads_checked = 0

    def invoked(self, op_id: int, kind: str, key: str | None, value: Any) -> None:
        if key is None or kind not in (PUT, GET, DELETE):
            return
        if kind == GET:
            self._reads[op_id] = (key, self._now())
            return
        writes = self._writes.setdefault(key, [])
        assert len(writes) < WRITES_PER_KEY_MAX, f"over WRITES_PER_KEY_MAX ({WRITES_PER_KEY_MAX}) writes of {key}"
        write = _Write(op_id, _canonical(value if kind == PUT else None), self._now())
        writes.append(write)
        self._by_id[op_id] = write

    def completed(self, op_id: int, outcome: str, result: Any) -> None:
        write = self._by_id.pop(op_id, None)
        if write is not None:
            write.outcome = outcome
            if outcome == "ok":
                write.complete_s = self._now()
            return
        read = self._reads.pop(op_id, None)
        if read is None or outcome != "ok":
            return  # a failed or unknown read observed nothing
        key, invoke_s = read
        self.reads_checked += 1
        possible, acknowledged = self.possible(key, invoke_s)
        if _canonical(result) not in possible:
            self._on_violation(
                "stale_read",
                f"registry_get {key!r} (op {op_id}, invoked at {invoke_s:.6f}) returned {result!r}; "
                f"it could only return one of {sorted(possible)} (last acknowledged write before it: "
                f"{acknowledged})",
                key=key,
                op=op_id,
                returned=result,
                possible=sorted(possible),
                acknowledged=acknowledged,
            )

    def possible(self, key: str, invoke_s: float) -> tuple[set[str], dict[str, Any] | None]:
        """The values a read of ``key`` invoked at ``invoke_s`` may return now, and
        the acknowledged write that bounds them (None: none yet)."""
        writes = [w for w in self._writes.get(key, ()) if w.outcome != "fail"]
        done = [w for w in writes if w.outcome == "ok" and w.complete_s < invoke_s]
        if not done:
            return {_canonical(None)} | {w.value for w in writes}, None
        last = max(done, key=lambda w: w.invoke_s)
        possible = {w.value for w in writes if w.complete_s >= last.invoke_s}
        bound = {
            "op": last.op_id,
            "value": json.loads(last.value),
            "invoke_s": last.invoke_s,
            "complete_s": last.complete_s,
        }
        return possible, bound


MS_ROUNDING_S = 0.002


def deadline_violations(state: Any, stamps: dict[int, tuple[float, float]], bound_s: float) -> tuple[int, list[dict]]:
    """(deadlines checked, violations) over the final state of a node (see the module docstring)."""
    checked, found = 0, []

    def judge(kind: str, workflow_id: str, what: str, start_ms: int, fired_ms: int, timeout_s: float) -> None:
        nonlocal checked
        start, fired = stamps.get(start_ms), stamps.get(fired_ms)
        if start is None or fired is None:
            return  # not stamped by a proposal seen here (cannot be timed)
        checked += 1
        took_s = fired[1] - start[0]
        if took_s < timeout_s - bound_s - MS_ROUNDING_S:
            found.append(
                {
                    "kind": "deadline_too_early",
                    "message": f"{kind} {workflow_id!r}: {what} timed out "
                    f"{took_s:.3f} s after it started on the true clock; its timeout is {timeout_s:g} s and "
                    f"clocks differ by at most {bound_s:g} s",
                    "workflow": workflow_id,
                    "took_s": took_s,
                    "timeout_s": timeout_s,
                }
            )

    sagas, transactions = state.sagas.sagas, state.transactions.transactions
    for saga_id in list(sagas):
        saga = sagas[saga_id]
        failure = saga.failure
        if failure is None or failure.reason is not saga_machine.FailureReason.TIMED_OUT:
            continue
        fired = [r.at_ms for r in saga.history if r.event is saga_machine.HistoryEvent.TIMED_OUT]
        if not fired:
            continue
        if failure.error.startswith("saga deadline") and saga.definition.timeout_s is not None:
            judge("saga", saga_id, "the saga", saga.created_at_ms, fired[0], saga.definition.timeout_s)
            continue
        names = [step.name for step in saga.definition.steps]
        if failure.step in names:
            index = names.index(failure.step)
            started = saga.steps[index].started_at_ms
            if started is not None:
                judge(
                    "saga", saga_id, f"step {failure.step!r}", started, fired[0], saga.definition.steps[index].timeout_s
                )
    for tx_id in list(transactions):
        tx = transactions[tx_id]
        fired = [r.at_ms for r in tx.history if r.event == "timed_out"]
        if fired:
            judge("transaction", tx_id, "the transaction", tx.created_at_ms, fired[0], tx.definition.timeout_s)
    return checked, found


# Link flaps and elections. A flap episode resets every connection of one
# node (the leader when it begins) a few times; the simulated connections
# come back 10-500 ms later. A follower that loses its leader's connection
# stands soon after (coordinator.consensus.pysyncobj_log._elect_soon_after_leader_loss,
# ranked by address), and PySyncObj has no pre-vote: a candidate whose log
# is behind cannot win, yet bumps the term of the others, so a peer with a
# longer log stands next and the leader, seeing the higher term, steps down
# and may stand too. In that cascade each node stands about once per reset,
# so an episode of r resets in a cluster of n nodes should see at most
# n * r candidacies, plus two rounds of every node (2 n) for split votes
# and background connection resets in the same window. Measured with
# link-flap alone (seeds 1-20, 20 s): at most 4.5 per reset in a 2-reset
# episode (9 <= 3*2 + 6) and 20 in a 5-reset one (<= 21). A node that
# stands on every reset, without waiting for its rank, splits the vote with
# the others and they stand again round after round: up to 32 in 5 resets.
FLAP_ELECTIONS_SLACK_ROUNDS = 2  # times the number of nodes
# After its last reset an episode's window stays open this long: the
# elections it caused happen within a connection retry and an election timeout.
FLAP_SETTLE_S = 1.5
# Another fault within this long before an episode (or during it) would
# cause elections of its own: such an episode is not judged.
FLAP_QUIET_BEFORE_S = 3.0


def flap_violations(
    episodes: list[dict], candidacies: list[tuple[float, str, int]], other_faults: list[tuple[float, float]], nodes: int
) -> tuple[dict[str, Any], list[dict]]:
    """(stats, violations): candidacies per flap episode against ``nodes * (resets + FLAP_ELECTIONS_SLACK_ROUNDS)``.

    ``episodes``: {"start_s", "end_s", "node", "resets"}; ``other_faults``: (start, end) of every other fault."""
    found: list[dict] = []
    judged = window_s = in_flaps = 0
    for episode in episodes:
        start, end = episode["start_s"], episode["end_s"] + FLAP_SETTLE_S
        window_s += end - start
        count = sum(1 for at, _, _ in candidacies if start <= at <= end)
        in_flaps += count
        episode["candidacies"] = count
        if any(b >= start - FLAP_QUIET_BEFORE_S and a <= end for a, b in other_faults):
            continue  # another fault overlaps: its elections are not the flaps'
        judged += 1
        bound = nodes * (episode["resets"] + FLAP_ELECTIONS_SLACK_ROUNDS)
        if count > bound:
            found.append(
                {
                    "kind": "election_storm",
                    "message": f"{episode['resets']} resets of {episode['node']}'s "
                    f"links from {start:.3f} s to {episode['end_s']:.3f} s: {count} candidacies (at most "
                    f"{bound} expected)",
                    **episode,
                }
            )
    stats = {
        "flap_episodes": len(episodes),
        "flap_episodes_judged": judged,
        "elections_under_flaps": in_flaps,
        "elections_per_min_under_flaps": round(in_flaps * 60 / window_s, 1) if window_s else None,
    }
    return stats, found
