"""The gRPC error mapping: every error the node answers gets the status of
the table in cluster/api/grpc_api.py, and the client raises for it the class it
raises for the same error over HTTP."""

import grpc
import pytest

from coordinator.client.errors import NotLeader, Overloaded, TooLarge, Unavailable, error_from_grpc, error_from_http
from coordinator.cluster.api.grpc_api import abort_details
from coordinator.cluster.api.operations import LeaderElsewhere
from coordinator.cluster.core.config import NodeAddress
from coordinator.cluster.core.errors import ApiError, Conflict, InvalidInput, NotFound, error_for_rejection
from coordinator.cluster.core.errors import Overloaded as ServerOverloaded
from coordinator.cluster.core.errors import TooLarge as ServerTooLarge
from coordinator.cluster.core.errors import Unavailable as ServerUnavailable

LEADER = NodeAddress(id="n2", raft="127.0.0.1:7102", http="127.0.0.1:8102", grpc="127.0.0.1:9102")


def unauthorized():
    error = ApiError("a valid token is required", code="unauthorized")
    error.status = 401
    return error


CASES = [
    (InvalidInput("steps", "must not be empty"), grpc.StatusCode.INVALID_ARGUMENT),
    (unauthorized(), grpc.StatusCode.UNAUTHENTICATED),
    (NotFound("no saga 'x'"), grpc.StatusCode.NOT_FOUND),
    (Conflict("id: saga 'x' exists with another definition"), grpc.StatusCode.ALREADY_EXISTS),
    (error_for_rejection("conflict", "saga 'x' is completed, not stuck"), grpc.StatusCode.ALREADY_EXISTS),
    (ServerTooLarge("body: larger than the limit"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServerOverloaded("100 workflows are in flight", retry_after_s=1), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServerUnavailable("no leader", code="no_leader", retry_after_s=1), grpc.StatusCode.UNAVAILABLE),
    (ServerUnavailable("suspended", code="suspended", retry_after_s=2, services=["a"]), grpc.StatusCode.UNAVAILABLE),
    (ServerUnavailable("not written", code="not_written", retry_after_s=1), grpc.StatusCode.UNAVAILABLE),
    (ServerUnavailable("unknown", code="outcome_unknown", retry_after_s=1), grpc.StatusCode.UNAVAILABLE),
    (LeaderElsewhere(LEADER), grpc.StatusCode.FAILED_PRECONDITION),
    (ApiError("internal error"), grpc.StatusCode.INTERNAL),
]


class FakeRpcError:
    """What the client reads of a grpc.aio.AioRpcError."""

    def __init__(self, status, message, trailers):
        self._status, self._message, self._trailers = status, message, trailers

    def code(self):
        return self._status

    def details(self):
        return self._message

    def trailing_metadata(self):
        return self._trailers


@pytest.mark.parametrize(("error", "status"), CASES, ids=[f"{e.code}-{s.name}" for e, s in CASES])
def test_each_code_has_its_status_and_the_client_class_of_http(error, status):
    got_status, message, trailers = abort_details(error)
    assert got_status == status
    assert dict(trailers)["coordinator-error-code"] == error.code
    over_grpc = error_from_grpc(FakeRpcError(got_status, message, trailers))
    retry_after = str(max(1, round(error.retry_after_s))) if error.retry_after_s is not None else None
    over_http = error_from_http(error.status, error.body(), retry_after)
    assert type(over_grpc) is type(over_http)
    assert (over_grpc.code, over_grpc.message) == (over_http.code, over_http.message)
    assert over_grpc.details.get("retry_after_s") == over_http.details.get("retry_after_s")
    assert over_grpc.details.get("field") == over_http.details.get("field")


def test_not_leader_names_the_leaders_grpc_address():
    status, _, trailers = abort_details(LeaderElsewhere(LEADER))
    error = error_from_grpc(FakeRpcError(status, "follower", trailers))
    assert isinstance(error, NotLeader) and error.leader == "127.0.0.1:9102"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (grpc.StatusCode.UNAVAILABLE, Unavailable),  # no connection
        (grpc.StatusCode.DEADLINE_EXCEEDED, Unavailable),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, TooLarge),  # gRPC's message size limit
        (grpc.StatusCode.INTERNAL, type(error_from_http(500, None))),
    ],
)
def test_statuses_from_grpc_itself_have_no_code(status, expected):
    error = error_from_grpc(FakeRpcError(status, "from grpc", ()))
    assert type(error) is expected and error.details["grpc_status"] == status.name
    assert not isinstance(error, Overloaded)
