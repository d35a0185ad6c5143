import pytest
from pysyncobj import FAIL_REASON

from coordinator.consensus import NotLeader, NotWritten, OutcomeUnknown, QueueFull
from coordinator.consensus.errors import error_for_fail_reason


@pytest.mark.parametrize(
    "code, expected",
    [
        (FAIL_REASON.QUEUE_FULL, QueueFull),
        (FAIL_REASON.MISSING_LEADER, NotLeader),
        (FAIL_REASON.NOT_LEADER, NotLeader),
        (FAIL_REASON.DISCARDED, NotWritten),
        (FAIL_REASON.REQUEST_DENIED, NotWritten),
        (FAIL_REASON.LEADER_CHANGED, OutcomeUnknown),
        (FAIL_REASON.UNKNOWN_OUTCOME, OutcomeUnknown),
    ],
)
def test_fail_reasons_map_to_typed_errors(code, expected):
    error = error_for_fail_reason(code, "127.0.0.1:7101")
    assert type(error) is expected


@pytest.mark.parametrize("code", [FAIL_REASON.LEADER_CHANGED, FAIL_REASON.UNKNOWN_OUTCOME])
def test_leader_changed_and_unknown_outcome_are_never_not_written(code):
    assert not isinstance(error_for_fail_reason(code), NotWritten)
