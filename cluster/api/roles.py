"""The role each route and RPC needs: one table for HTTP and gRPC.

Roles are cumulative (cluster/core/tokens.py): ``read`` < ``submit`` <
``operate`` < ``admin``. ``read`` is every GET and every Get, List, Watch
and Cluster RPC; ``submit`` submits sagas and transactions; ``operate``
signals and redrives sagas, and serves as a transition worker (the
``Work`` stream: its reports become outcomes); ``admin`` changes the
service registry.
``OPEN`` routes (health and readiness) need no token at all.

Deny by default: a route or RPC not in the table is refused with 403 /
PERMISSION_DENIED whatever the token, and tests/integration/test_roles.py
checks that the table names exactly the routes of the OpenAPI document and
the RPCs of the ``Coordinator`` service, so a new route cannot ship without
a role.

With no token configured the API is open and nothing here is consulted.
"""

from __future__ import annotations

from typing import Final

from coordinator.cluster.core.errors import Forbidden, Unauthorized
from coordinator.cluster.core.tokens import Role, Token, TokenTable

__all__ = ["GRPC_ROLES", "HTTP_ROLES", "OPEN", "authorize", "grpc_role", "http_role"]


class _Open:
    def __repr__(self) -> str:
        return "OPEN"


OPEN: Final = _Open()  # no token needed

READ, SUBMIT, OPERATE, ADMIN = Role.READ, Role.SUBMIT, Role.OPERATE, Role.ADMIN

# (method, route template as aiohttp and the OpenAPI document write it) -> role
HTTP_ROLES: dict[tuple[str, str], Role | _Open] = {
    ("GET", "/healthz"): OPEN,
    ("GET", "/readyz"): OPEN,
    ("GET", "/metrics"): READ,
    ("GET", "/v1/openapi.json"): READ,
    ("GET", "/v1/cluster"): READ,
    ("GET", "/v1/cluster/recent"): READ,
    ("GET", "/v1/services"): READ,
    ("GET", "/v1/services/{name}"): READ,
    ("PUT", "/v1/services/{name}"): ADMIN,
    ("DELETE", "/v1/services/{name}"): ADMIN,
    ("GET", "/v1/services/{name}/outcomes"): READ,
    ("POST", "/v1/sagas"): SUBMIT,
    ("GET", "/v1/sagas"): READ,
    ("GET", "/v1/sagas/{id}"): READ,
    ("POST", "/v1/sagas/{id}/signals/{name}"): OPERATE,
    ("POST", "/v1/sagas/{id}/redrive"): OPERATE,
    ("POST", "/v1/sagas/redrive"): OPERATE,
    ("POST", "/v1/transactions"): SUBMIT,
    ("GET", "/v1/transactions"): READ,
    ("GET", "/v1/transactions/{id}"): READ,
    ("GET", "/v1/events"): READ,
    ("GET", "/v1/workers"): READ,
    # the dashboard's files: no data in them; the page asks for a token
    ("GET", "/ui"): OPEN,
    ("GET", "/ui/"): OPEN,
    ("GET", "/ui/{file}"): OPEN,
}

# RPC of the Coordinator service (proto/coordinator.proto) -> role
GRPC_ROLES: dict[str, Role] = {
    "Cluster": READ,
    "GetService": READ,
    "ListServices": READ,
    "ServiceOutcomes": READ,
    "GetSaga": READ,
    "ListSagas": READ,
    "GetTransaction": READ,
    "ListTransactions": READ,
    "Watch": READ,
    "ListWorkers": READ,
    # a transition worker's stream: what it reports becomes workflow outcomes
    "Work": OPERATE,
    "SubmitSaga": SUBMIT,
    "SubmitTransaction": SUBMIT,
    "SignalSaga": OPERATE,
    "RedriveSaga": OPERATE,
    "RedriveSagas": OPERATE,
    "PutService": ADMIN,
    "DeleteService": ADMIN,
}


def http_role(method: str, template: str) -> Role | _Open | None:
    """The role ``method`` on ``template`` needs (HEAD: as GET), OPEN, or
    None when the table does not name it (refused)."""
    return HTTP_ROLES.get(("GET" if method == "HEAD" else method, template))


def grpc_role(rpc: str) -> Role | None:
    """The role the RPC needs, or None when the table does not name it (refused)."""
    return GRPC_ROLES.get(rpc)


def authorize(
    tokens: TokenTable | None, credential: str | bytes | None, needed: Role | _Open | None, what: str
) -> Token | None:
    """The token a request came with, when it may do ``what`` (a route or an
    RPC needing ``needed``); None when no token is configured or the route is
    open. Unauthorized (401) without a known token, Forbidden (403) for a
    known token whose role is too low or a route the table does not name.
    ``credential`` is the ``Authorization`` value (``Bearer TOKEN``)."""
    if tokens is None or needed is OPEN:
        return None
    token = tokens.bearer(credential)
    if token is None:
        raise Unauthorized("a valid Authorization: Bearer token is required")
    if needed is None:
        raise Forbidden(f"{what} has no role in the roles table; refused for every token")
    if token.role < needed:
        raise Forbidden(f"{what} needs role {needed}; token {token.name} has role {token.role}")
    return token
