import pytest

from coordinator.consensus import Applied, Command, LeadershipChange, NotLeader, Rejected, Rejection
from coordinator.consensus.testing import InMemoryLog


class Counter:
    def __init__(self):
        self.value = 0

    def apply(self, index, command):
        if command.kind == "fail":
            raise Rejection("invalid", "refused")
        if command.kind == "bug":
            raise ZeroDivisionError("a bug")
        self.value += command.body
        return self.value

    def snapshot(self):
        return self.value

    def restore(self, value):
        self.value = value


async def test_propose_applies_rejects_and_reports_to_listeners():
    machine, replica = Counter(), Counter()
    log = InMemoryLog(machine, replicas=(replica,))
    seen = []
    log.add_apply_listener(lambda index, command, result: seen.append((index, command.kind, result)))
    await log.start()
    assert await log.propose(Command("add", 2)) == Applied(2, 2)
    rejected = await log.propose(Command("fail", 1))
    assert isinstance(rejected, Rejected) and rejected.code == "invalid"
    bug = await log.propose(Command("bug", 1))
    assert isinstance(bug, Rejected) and bug.code == "internal"
    assert machine.value == replica.value == 2
    assert [s[1] for s in seen] == ["add", "fail", "bug"]
    assert log.stats.proposals == {"applied": 1, "rejected": 2}


async def test_leadership_changes_reach_listeners_and_followers_refuse():
    log = InMemoryLog(Counter(), leader=False)
    changes = []
    log.add_leadership_listener(changes.append)
    await log.start()
    with pytest.raises(NotLeader):
        await log.propose(Command("add", 1))
    log.set_leader(True, term=3)
    log.set_leader(False)
    assert changes == [LeadershipChange(True, 3, 1), LeadershipChange(False, 3, 1)]
    with pytest.raises(NotLeader):
        await log.read_barrier()
