"""Group commit: commands proposed while the pipeline is full share one entry."""

import asyncio
import threading

import pytest

from coordinator.cluster.core.state import ClusterState
from coordinator.consensus import Command, NotLeader, OutcomeUnknown, encode_command
from coordinator.consensus.applier import Applier
from coordinator.consensus.batching import BATCH_COMMANDS_MAX, Batcher, encode_batch
from coordinator.consensus.codec import ENTRY_BYTES_MAX, decode_command
from coordinator.consensus.port import Applied, Rejected
from coordinator.consensus.stats import LogStats


class FakeLog:
    """Records every entry sent; a test settles them by hand."""

    def __init__(self, pipeline: int = 2) -> None:
        self.sent: list[tuple[bytes, object]] = []
        self.leader = True
        self.batcher = Batcher(self.send, lambda: self.leader, lambda: NotLeader(None), pipeline)

    def send(self, data, on_done):
        self.sent.append((data, on_done))

    def commands(self, n: int) -> list[list[str]]:
        command = decode_command(self.sent[n][0])
        if command.kind != "raft.batch":
            return [command.kind]
        return [decode_command(item).kind for item in command.body]


def put(n: int) -> bytes:
    return encode_command(Command("service.put", {"name": f"s{n}", "url": "http://127.0.0.1:1"}, 1))


async def test_a_lone_proposer_is_sent_at_once_as_a_plain_entry():
    log = FakeLog()
    future = log.batcher.submit(put(1))
    assert len(log.sent) == 1 and log.commands(0) == ["service.put"]
    log.sent[0][1]("result", None)
    assert await future == "result"


async def test_commands_queued_behind_a_full_pipeline_go_out_as_one_batch_entry():
    log = FakeLog(pipeline=1)
    first = log.batcher.submit(put(0))
    queued = [log.batcher.submit(put(n)) for n in range(1, 6)]
    assert len(log.sent) == 1, "the pipeline holds one entry; the rest must wait"
    log.sent[0][1]("r0", None)
    assert await first == "r0"
    assert len(log.sent) == 2 and log.commands(1) == ["service.put"] * 5
    log.sent[1][1]([f"r{n}" for n in range(1, 6)], None)
    assert [await f for f in queued] == [f"r{n}" for n in range(1, 6)]
    assert (log.batcher.entries, log.batcher.commands) == (2, 6)


async def test_an_entry_error_reaches_every_proposer_of_the_batch():
    log = FakeLog(pipeline=1)
    log.batcher.submit(put(0))
    queued = [log.batcher.submit(put(n)) for n in (1, 2)]
    log.sent[0][1](None, RuntimeError("first entry lost"))
    log.sent[1][1](None, NotLeader(None))
    for future in queued:
        with pytest.raises(NotLeader):
            await future


async def test_a_proposer_that_stopped_waiting_is_never_sent():
    log = FakeLog(pipeline=1)
    log.batcher.submit(put(0))
    gone = log.batcher.submit(put(1))
    kept = log.batcher.submit(put(2))
    gone.cancel()
    log.sent[0][1]("r0", None)
    assert len(log.sent) == 2 and decode_command(log.sent[1][0]).body["name"] == "s2"
    log.sent[1][1]("r2", None)
    assert await kept == "r2"


async def test_losing_leadership_fails_what_is_queued_with_not_leader():
    log = FakeLog(pipeline=1)
    log.batcher.submit(put(0))
    queued = log.batcher.submit(put(1))
    log.leader = False
    log.sent[0][1]("r0", None)
    with pytest.raises(NotLeader):
        await queued
    assert len(log.sent) == 1


async def test_a_batch_stays_within_the_entry_size_and_command_count_limits():
    log = FakeLog(pipeline=1)
    futures = [log.batcher.submit(put(0))]
    big = encode_command(Command("service.put", {"name": "big", "pad": "x" * (ENTRY_BYTES_MAX // 3)}, 1))
    futures += [log.batcher.submit(big) for _ in range(4)]
    futures += [log.batcher.submit(put(n)) for n in range(BATCH_COMMANDS_MAX + 10)]
    settled = 0
    while settled < len(log.sent):
        data, on_done = log.sent[settled]
        settled += 1
        command = decode_command(data)
        count = len(command.body) if command.kind == "raft.batch" else 1
        assert len(data) <= ENTRY_BYTES_MAX and count <= BATCH_COMMANDS_MAX
        on_done([None] * count if command.kind == "raft.batch" else None, None)
    assert all(f.done() for f in futures)
    assert 4 <= len(log.sent) <= 6  # 1 + the bigs split by size + the rest split by count


def test_the_applier_applies_a_batch_in_order_and_returns_each_result():
    state = ClusterState()
    stats = LogStats()
    applier = Applier(state, threading.RLock(), stats)
    items = [put(1), encode_command(Command("service.delete", {"name": "missing"}, 1)), put(2), b"\xc1junk"]
    result, applied = applier.apply_entry(7, encode_batch(items))
    assert [type(r) for r in result] == [Applied, Rejected, Applied, Rejected]
    assert all(r.index == 7 for r in result)
    assert [c.kind for c, _ in applied] == ["service.put", "service.delete", "service.put"]
    assert [state.registry.get(n)["revision"] for n in ("s1", "s2")] == [1, 2]
    assert state.applied_index == 7
    assert (stats.entries_applied, stats.commands_applied) == (1, 3)


def test_a_nested_or_empty_batch_is_rejected_and_changes_nothing():
    state = ClusterState()
    applier = Applier(state, threading.RLock(), LogStats())
    before = state.digest()
    nested, _ = applier.apply_entry(2, encode_batch([encode_batch([put(1)])]))
    empty, _ = applier.apply_entry(3, encode_batch([]))
    assert isinstance(nested[0], Rejected) and isinstance(empty, Rejected)
    assert state.digest() == before


async def test_through_a_real_event_loop_concurrent_proposers_share_entries():
    loop = asyncio.get_running_loop()
    state = ClusterState()
    applier = Applier(state, threading.RLock(), LogStats())
    index = 1

    def send(data, on_done):
        def commit():
            nonlocal index
            index += 1
            on_done(applier.apply_entry(index, data)[0], None)

        loop.call_later(0.005, commit)

    batcher = Batcher(send, lambda: True, lambda: NotLeader(None), 2)
    results = await asyncio.gather(*(batcher.submit(put(n)) for n in range(100)))
    assert all(isinstance(r, Applied) for r in results)
    assert sorted(r.value["revision"] for r in results) == list(range(1, 101))
    assert batcher.entries < 10 and batcher.commands == 100


async def test_stopping_to_lead_fails_sent_entries_as_unknown_and_queued_ones_as_not_written():
    log = FakeLog(pipeline=1)
    sent = log.batcher.submit(put(0))
    queued = log.batcher.submit(put(1))
    log.batcher.abandon(NotLeader(None), OutcomeUnknown("stopped leading"))
    with pytest.raises(OutcomeUnknown):
        await sent
    with pytest.raises(NotLeader):
        await queued
    log.sent[0][1]("late", None)  # PySyncObj's late callback is ignored
    later = log.batcher.submit(put(2))
    assert len(log.sent) == 2, "the pipeline is free again after abandoning"
    log.sent[1][1]("r2", None)
    assert await later == "r2"
