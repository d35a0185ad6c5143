"""The executor's callers: the transport a registered service is called
over, and closing what was given to close (cluster/executor/callers.py)."""

from coordinator.cluster.executor.callers import ParticipantCallers
from coordinator.cluster.executor.http_caller import CallOutcome, CallSpec


class _Caller:
    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, str]] = []
        self.tls: list[bool] = []

    async def call(self, spec: CallSpec, operation: str) -> CallOutcome:
        self.calls.append((spec.service, operation))
        self.tls.append(spec.tls)
        return CallOutcome("ok", self.name, attempts=1)


def _spec(service: str) -> CallSpec:
    return CallSpec(service, "", "POST", "/x", None, "k", "1:1", 1.0, 1, 0.01, 0.1)


async def test_a_grpc_service_goes_over_grpc_and_any_other_over_http():
    http, grpc = _Caller("http"), _Caller("grpc")
    callers = ParticipantCallers(http, grpc)
    assert (await callers.call({"grpc": "h:1"}, _spec("g"), "prepare")).output == "grpc"
    assert (await callers.call({"url": "http://h"}, _spec("h"), "execute")).output == "http"
    assert (grpc.calls, http.calls) == ([("g", "prepare")], [("h", "execute")])


async def test_a_grpc_call_is_tls_as_its_record_says_and_a_record_without_tls_is_plain():
    http, grpc = _Caller("http"), _Caller("grpc")
    callers = ParticipantCallers(http, grpc)
    await callers.call({"grpc": "h:1", "tls": True}, _spec("g"), "execute")
    await callers.call({"grpc": "h:1"}, _spec("g"), "execute")  # written before tls existed
    await callers.call({"url": "https://h"}, _spec("h"), "execute")
    assert grpc.tls == [True, False] and http.tls == [False]  # over HTTP the URL's scheme says it


async def test_an_unregistered_service_is_an_unknown_outcome_and_calls_nothing():
    http = _Caller("http")
    outcome = await ParticipantCallers(http).call(None, _spec("gone"), "execute")
    assert (outcome.kind, outcome.error) == ("unknown", "service 'gone' is not registered")
    assert http.calls == []


async def test_a_grpc_service_without_a_grpc_caller_fails_without_a_call():
    http = _Caller("http")
    outcome = await ParticipantCallers(http).call({"grpc": "h:1"}, _spec("g"), "execute")
    assert outcome.kind == "failed" and http.calls == []


async def test_close_closes_what_it_was_given_in_order_and_once():
    closed: list[str] = []

    async def close(name: str) -> None:
        closed.append(name)

    callers = ParticipantCallers(_Caller("http"), on_close=(lambda: close("grpc"), lambda: close("session")))
    await callers.close()
    await callers.close()
    assert closed == ["grpc", "session"]
