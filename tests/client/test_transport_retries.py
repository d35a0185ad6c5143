"""Retries in the client: what a retried call may and may not conclude."""

import pytest

from coordinator.client._transport import Transport
from coordinator.client.errors import NotFound, OutcomeUnknown


class Plain(Transport):
    @staticmethod
    def normalise(endpoint: str) -> str:
        return endpoint


def transport() -> Transport:
    return Plain(["http://127.0.0.1:1", "http://127.0.0.1:2"], timeout_s=1, attempts=3, retry_budget_s=5, token=None)


def scripted(*answers):
    answers = list(answers)

    async def send(endpoint):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer, endpoint

    return send


async def test_a_delete_not_found_after_an_unknown_outcome_is_itself_unknown():
    send = scripted(OutcomeUnknown("leader lost"), NotFound("no service 'a'"))
    with pytest.raises(OutcomeUnknown, match="earlier try may have deleted"):
        await transport().with_retries(send, "delete_service")


async def test_a_delete_not_found_at_the_first_try_is_definite():
    with pytest.raises(NotFound):
        await transport().with_retries(scripted(NotFound("no service 'a'")), "DELETE /v1/services/a")


async def test_other_operations_keep_not_found_after_an_unknown_outcome():
    with pytest.raises(NotFound):
        await transport().with_retries(scripted(OutcomeUnknown("lost"), NotFound("no saga")), "get_saga")


async def test_a_retry_after_an_unknown_outcome_returns_the_answer():
    assert await transport().with_retries(scripted(OutcomeUnknown("lost"), {"ok": True}), "put_service") == {"ok": True}
