"""The async client: finds the leader, follows 307, retries what is safe.

Every method is idempotent on the server (PUT of a service; submissions
carry their id), so a retry after an unknown outcome cannot do a thing twice.
Definite rejections (4xx) are never retried.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_random_exponential

from .errors import CoordinatorError, NoLeader, NotLeader, OutcomeUnknown, Timeout, Unavailable, error_from_http
from .types import ClusterInfo, Saga, Service, Transaction

__all__ = ["Coordinator", "DEFAULT_ENDPOINTS", "endpoints_from_env"]

DEFAULT_ENDPOINTS = ("http://127.0.0.1:8101", "http://127.0.0.1:8102", "http://127.0.0.1:8103")
REDIRECTS_MAX = 3
_RETRYABLE = (NoLeader, NotLeader, OutcomeUnknown, Unavailable)


def endpoints_from_env() -> list[str]:
    raw = os.environ.get("COORDINATOR_ENDPOINTS", "")
    return [e.strip() for e in raw.split(",") if e.strip()] or list(DEFAULT_ENDPOINTS)


def _normalise(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
    return f"{parts.scheme}://{parts.netloc}"


class Coordinator:
    def __init__(
        self,
        endpoints: list[str] | tuple[str, ...] | str | None = None,
        *,
        transport: str = "http",
        timeout_s: float = 10.0,
        attempts: int = 6,
        retry_budget_s: float = 30.0,
        token: str | None = None,
    ) -> None:
        if transport != "http":
            raise ValueError(f"transport {transport!r} is not supported yet (only 'http')")
        if isinstance(endpoints, str):
            endpoints = [e for e in endpoints.split(",") if e.strip()]
        self.endpoints = [_normalise(e) for e in (endpoints or endpoints_from_env())]
        if not self.endpoints:
            raise ValueError("at least one endpoint is required")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = attempts
        self._retry_budget_s = retry_budget_s
        self._leader: str | None = None
        self._session: aiohttp.ClientSession | None = None
        token = token if token is not None else os.environ.get("COORDINATOR_TOKEN") or None
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def __aenter__(self) -> "Coordinator":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self._session

    # -- transport -------------------------------------------------------------
    def _order(self) -> list[str]:
        if self._leader is None:
            return list(self.endpoints)
        return [self._leader] + [e for e in self.endpoints if e != self._leader]

    async def _send_once(
        self, base: str, method: str, path: str, body: Any, timeout_s: float | None = None
    ) -> tuple[int, Any, str]:
        url = base + path
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        for _ in range(REDIRECTS_MAX + 1):
            try:
                async with self._client().request(method, url, json=body, allow_redirects=False, timeout=timeout) as response:
                    text = await response.text()
                    try:
                        data = json.loads(text) if text else None
                    except ValueError:
                        data = None
                    if response.status == 307 and "Location" in response.headers:
                        url = response.headers["Location"]
                        continue
                    if response.status >= 400:
                        raise error_from_http(response.status, data, response.headers.get("Retry-After"))
                    return response.status, data, url
            except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
                # The request may have reached the node: for a write, outcome unknown.
                raise Unavailable(f"{url}: {exc.__class__.__name__}: {exc}") from exc
        raise NotLeader(f"{method} {path}: more than {REDIRECTS_MAX} redirects")

    async def _request(self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None) -> tuple[int, Any]:
        async def attempt() -> tuple[int, Any]:
            last: CoordinatorError | None = None
            for base in self._order():
                try:
                    status, data, final_url = await self._send_once(base, method, path, body, timeout_s)
                except (Unavailable, NoLeader) as exc:
                    last = exc
                    continue
                parts = urlsplit(final_url)
                self._leader = f"{parts.scheme}://{parts.netloc}"
                return status, data
            assert last is not None
            raise last

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_RETRYABLE),
            stop=stop_after_attempt(self._attempts) | stop_after_delay(self._retry_budget_s),
            wait=wait_random_exponential(multiplier=0.1, max=2.0),
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except TimeoutError as exc:
            raise Timeout(f"{method} {path}: timed out") from exc

    # -- cluster and services --------------------------------------------------------
    async def cluster(self, endpoint: str | None = None) -> ClusterInfo:
        if endpoint is not None:
            _, data, _ = await self._send_once(_normalise(endpoint), "GET", "/v1/cluster", None)
            return ClusterInfo.from_json(data)
        _, data = await self._request("GET", "/v1/cluster")
        return ClusterInfo.from_json(data)

    async def put_service(self, name: str, url: str | None = None, *, grpc: str | None = None) -> Service:
        body = {"url": url} if grpc is None else {"grpc": grpc}
        if (url is None) == (grpc is None):
            raise ValueError("give exactly one of url or grpc")
        _, data = await self._request("PUT", f"/v1/services/{name}", body)
        return Service.from_json(data)

    async def get_service(self, name: str) -> Service:
        _, data = await self._request("GET", f"/v1/services/{name}")
        return Service.from_json(data)

    async def list_services(self) -> list[Service]:
        _, data = await self._request("GET", "/v1/services")
        return [Service.from_json(s) for s in data["services"]]

    async def delete_service(self, name: str) -> Service:
        _, data = await self._request("DELETE", f"/v1/services/{name}")
        return Service.from_json(data)

    # -- sagas ---------------------------------------------------------------------------
    async def submit_saga(self, definition: Any) -> Saga:
        """Submit a saga (a dict, or a builder with ``build()``). An id is
        generated here when absent, so a retried submission cannot create
        two sagas: the cluster answers the same id with the existing one."""
        raw = definition.build() if hasattr(definition, "build") else dict(definition)
        raw.setdefault("id", uuid.uuid4().hex)
        _, data = await self._request("POST", "/v1/sagas", raw)
        return Saga.from_json(data)

    async def get_saga(self, saga_id: str) -> Saga:
        _, data = await self._request("GET", f"/v1/sagas/{saga_id}")
        return Saga.from_json(data)

    async def wait_saga(self, saga_id: str, timeout: float = 30.0) -> Saga:
        """Long-poll until the saga is terminal; :class:`Timeout` if it is not within ``timeout`` s."""
        return await self._wait("sagas", saga_id, timeout, Saga.from_json)

    async def _wait(self, collection: str, workflow_id: str, timeout: float, parse):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            wait_s = max(0.0, min(deadline - loop.time(), 60.0))
            _, data = await self._request("GET", f"/v1/{collection}/{workflow_id}?wait={wait_s:.3f}", timeout_s=wait_s + 10)
            workflow = parse(data)
            if workflow.terminal:
                return workflow
            if loop.time() >= deadline:
                raise Timeout(f"{workflow_id} is still {workflow.state} after {timeout:g} s", details={"workflow": data})

    async def list_sagas(self, state: str | None = None, limit: int = 100) -> list[Saga]:
        query = f"?limit={limit}" + (f"&state={state}" if state else "")
        _, data = await self._request("GET", f"/v1/sagas{query}")
        return [Saga.from_json(s) for s in data["sagas"]]

    async def signal_saga(self, saga_id: str, name: str, payload: Any = None) -> dict:
        _, data = await self._request("POST", f"/v1/sagas/{saga_id}/signals/{name}", payload)
        return data

    async def redrive_saga(self, saga_id: str) -> dict:
        _, data = await self._request("POST", f"/v1/sagas/{saga_id}/redrive")
        return data

    async def service_outcomes(self, name: str, after: int = 0) -> dict:
        _, data = await self._request("GET", f"/v1/services/{name}/outcomes?after={after}")
        return data

    # -- transactions ----------------------------------------------------------------------
    async def submit_transaction(self, definition: Any) -> Transaction:
        """Submit a 2PC transaction; an id is generated here when absent (safe retries)."""
        raw = definition.build() if hasattr(definition, "build") else dict(definition)
        raw.setdefault("id", uuid.uuid4().hex)
        _, data = await self._request("POST", "/v1/transactions", raw)
        return Transaction.from_json(data)

    async def get_transaction(self, tx_id: str) -> Transaction:
        _, data = await self._request("GET", f"/v1/transactions/{tx_id}")
        return Transaction.from_json(data)

    async def wait_transaction(self, tx_id: str, timeout: float = 30.0) -> Transaction:
        return await self._wait("transactions", tx_id, timeout, Transaction.from_json)

    async def list_transactions(self, state: str | None = None, limit: int = 100) -> list[Transaction]:
        query = f"?limit={limit}" + (f"&state={state}" if state else "")
        _, data = await self._request("GET", f"/v1/transactions{query}")
        return [Transaction.from_json(t) for t in data["transactions"]]
