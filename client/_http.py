"""The HTTP transport: the nodes' JSON API under ``/v1``, following ``307``
to the leader. Endpoints are the nodes' URLs, ``http://host:port``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from ._transport import REDIRECTS_MAX, Transport, backoff_s, is_terminal
from .errors import CoordinatorError, NotLeader, Overloaded, Rejected, TlsRefused, Unavailable, error_from_http

__all__ = ["EVENTS_FAILURES_MAX", "HttpTransport", "WAIT_S_MAX"]

# The longest long poll a node grants (GET ...?wait=S); longer waits are several polls.
WAIT_S_MAX = 60.0
# A long poll's request may take this much longer than its wait.
WAIT_SLACK_S = 10.0
_COLLECTIONS = {"saga": "sagas", "tx": "transactions"}
# Writes say they are JSON even without a body: nodes refuse other writes
# (what a browser page on another site could send; cluster/api/http_api.py).
_WRITE_HEADERS = {"Content-Type": "application/json"}
_WRITES = frozenset({"POST", "PUT", "DELETE", "PATCH"})
# An event stream sends at least a comment every 15 s (cluster/api/http_events.py).
EVENTS_READ_TIMEOUT_S = 45.0
# Failed connections in a row (every node tried in turn) before events() gives up.
EVENTS_FAILURES_MAX = 10


def _base(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _part(value: object) -> str:
    """One path segment or query value, escaped entirely: an id such as
    '../redrive' must stay one segment of the route it was given to."""
    return quote(str(value), safe="")


def _route(operation: str, args: dict) -> tuple[str, str, Any]:
    """(method, path, JSON body) of an operation."""
    if operation == "cluster":
        return "GET", "/v1/cluster", None
    if operation in ("put_service", "get_service", "delete_service", "service_outcomes"):
        service = f"/v1/services/{_part(args['name'])}"
        if operation == "put_service":
            return "PUT", service + ("?force=true" if args.get("force") else ""), args["body"]
        if operation == "get_service":
            return "GET", service, None
        if operation == "delete_service":
            return "DELETE", service, None
        return "GET", f"{service}/outcomes?after={_part(args['after'])}", None
    if operation == "list_services":
        return "GET", "/v1/services", None
    if operation == "list_workers":
        return "GET", "/v1/workers", None
    if operation == "signal_saga":
        return "POST", f"/v1/sagas/{_part(args['id'])}/signals/{_part(args['name'])}", args["payload"]
    if operation == "redrive_saga":
        return "POST", f"/v1/sagas/{_part(args['id'])}/redrive", None
    if operation == "redrive_sagas":
        return "POST", "/v1/sagas/redrive", args["body"]
    verb, kind = operation.split("_", 1)  # submit|get|list _ saga|tx
    collection = _COLLECTIONS[kind]
    if verb == "submit":
        query = f"?wait={args['wait_s']:.3f}" if args.get("wait_s") else ""
        return "POST", f"/v1/{collection}{query}", args["definition"]
    if verb == "get":
        query = ""
        if args.get("wait_s") is not None:
            query = f"?wait={args['wait_s']:.3f}"
            if args.get("since") is not None:
                query += f"&since={_part(args['since'])}"
        return "GET", f"/v1/{collection}/{_part(args['id'])}{query}", None
    if verb == "list":
        state = f"&state={_part(args['state'])}" if args["state"] else ""
        filters = "".join(f"&{name}={_part(value)}" for name, value in args.get("filters", {}).items())
        return "GET", f"/v1/{collection}?limit={_part(args['limit'])}{state}{filters}", None
    raise AssertionError(f"no route for {operation}")


class HttpTransport(Transport):
    """Over HTTP: :mod:`coordinator.client._transport` says what a transport does."""

    def __init__(self, endpoints: list[str], **options: Any) -> None:
        super().__init__(endpoints, **options)  # the options of Transport
        timeout_s, token = self.timeout_s, self.token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    NODE_FIELD = "http"

    async def _cluster_view(self, target: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self._client().get(target + "/v1/cluster", allow_redirects=False, timeout=timeout) as response:
                if response.status != 200:
                    raise Unavailable(f"{target}/v1/cluster answered {response.status}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"{target}/v1/cluster: {exc.__class__.__name__}: {exc}") from exc

    @staticmethod
    def normalise(endpoint: str) -> str:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
        return f"{parts.scheme}://{parts.netloc}"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # https:// endpoints: verified against the given CA (else the system's), with the client certificate
            connector = aiohttp.TCPConnector(ssl=self.tls.ssl_context()) if self.tls is not None else None
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers, connector=connector)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        base: str,
        method: str,
        path: str,
        body: Any,
        timeout_s: float | None = None,
        request_id: str | None = None,
    ) -> tuple[int, Any, str]:
        """One request to ``base``, following 307; (status, JSON, final URL).
        ``request_id`` goes as ``Idempotency-Key`` (registry writes)."""
        url = base + path
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else None
        for _ in range(REDIRECTS_MAX + 1):
            try:
                headers = _WRITE_HEADERS if method in _WRITES else None
                if request_id is not None:
                    headers = {**(headers or {}), "Idempotency-Key": request_id}
                async with self._client().request(
                    method, url, json=body, headers=headers, allow_redirects=False, timeout=timeout
                ) as response:
                    text = await response.text()
                    try:
                        data = json.loads(text) if text else None
                    except ValueError:
                        data = None
                    if response.status == 307 and "Location" in response.headers:
                        location = response.headers["Location"]
                        if not await self.may_follow(_base(url), _base(location)):
                            raise self.foreign_redirect(f"{method} {path}", _base(url), location)
                        url = location
                        continue
                    if response.status == 200 and path == "/v1/cluster":
                        self.learn_nodes(data)
                    if response.status >= 400:
                        raise error_from_http(response.status, data, response.headers.get("Retry-After"))
                    return response.status, data, url
            except aiohttp.ClientConnectorCertificateError as exc:
                raise TlsRefused(
                    f"{url}: the node's certificate is not trusted ({exc.certificate_error}); "
                    "is --ca-file ($COORDINATOR_CA_FILE) the CA that signed the nodes' certificates?"
                ) from exc
            except aiohttp.ClientConnectorSSLError as exc:
                raise TlsRefused(f"{url}: TLS handshake failed ({exc}); does the node serve TLS on this port?") from exc
            except (aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError) as exc:
                # The request may have reached the node: for a write, outcome unknown.
                raise Unavailable(f"{url}: {exc.__class__.__name__}: {exc}{self._hint(url, exc)}") from exc
        raise NotLeader(f"{method} {path}: more than {REDIRECTS_MAX} redirects")

    def _hint(self, url: str, exc: Exception) -> str:
        """What a dropped connection may mean when TLS is in play: a node with
        ``[tls]`` drops plain HTTP, and with mutual TLS a client without a
        certificate (after the handshake, in TLS 1.3)."""
        dropped = isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError))
        if not dropped or isinstance(exc, aiohttp.ClientConnectorError):  # not: nothing listens there
            return ""
        if url.startswith("http://"):
            return " (a node serving TLS drops plain HTTP: use https:// endpoints)"
        if self.tls is None or self.tls.cert_file is None:
            return " (a node with mutual TLS drops a client without a certificate: --cert-file and --key-file)"
        return ""

    async def _send_once(self, endpoint: str, operation: str, args: dict, timeout_s: float | None) -> tuple[Any, str]:
        method, path, body = _route(operation, args)
        _, data, url = await self.send(endpoint, method, path, body, timeout_s, args.get("request"))
        return data, _base(url)

    async def request_path(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> tuple[int, Any]:
        """Any request of the HTTP API, with the retries of :meth:`request`."""

        async def send(endpoint: str) -> tuple[tuple[int, Any], str]:
            status, data, url = await self.send(endpoint, method, path, body, timeout_s)
            return (status, data), _base(url)

        return await self.with_retries(send, f"{method} {path}")

    async def watch(
        self, kind: str, workflow_id: str, *, timeout_s: float | None, every_change: bool
    ) -> AsyncIterator[dict]:
        """Long polls: ``?wait`` until terminal, with ``&since`` for every change."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        last: dict | None = None
        while True:
            wait_s = WAIT_S_MAX if deadline is None else max(0.0, min(deadline - loop.time(), WAIT_S_MAX))
            since = None
            if every_change:  # the state now, then each one updated after it
                wait_s, since = (0.0, None) if last is None else (wait_s, last["updated_at"])
            args = {"id": workflow_id, "wait_s": wait_s, "since": since}
            data = await self.request(f"get_{kind}", args, timeout_s=wait_s + WAIT_SLACK_S)
            if data != last:
                last = data
                yield data
            if is_terminal(kind, data) or (deadline is not None and loop.time() >= deadline):
                return

    async def events(self, query: str, last_event_id: str | None) -> AsyncIterator[dict]:
        """``GET /v1/events?QUERY`` as dicts (each event's JSON), for ever.

        A broken connection, a node that stopped, a 429 or a ``dropped``
        event, a 5xx: the next node in turn is asked with ``Last-Event-ID``
        of the last event yielded (a ``reset`` is yielded like any other
        event: the caller reloads what it follows by GET). 400, 401, 403
        raise. A stream that ends before any event counts as a failure. After
        EVENTS_FAILURES_MAX failed connections in a row, Unavailable."""
        failures, turn = 0, 0
        last_error = ""
        while True:
            endpoints = self.endpoints
            endpoint = endpoints[turn % len(endpoints)]
            turn += 1
            headers = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = last_event_id
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s, sock_read=EVENTS_READ_TIMEOUT_S)
            try:
                async with self._client().get(
                    f"{endpoint}/v1/events{query}", headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    if response.status != 200:
                        text = await response.text()
                        try:
                            data = json.loads(text) if text else None
                        except ValueError:
                            data = None
                        raise error_from_http(response.status, data, response.headers.get("Retry-After"))
                    yielded = False
                    async for name, data in _server_sent_events(response.content):
                        if name == "dropped":
                            break
                        event = json.loads(data)
                        if isinstance(event, dict) and isinstance(event.get("id"), str):
                            last_event_id = event["id"]
                        failures, yielded = 0, True
                        yield event
                    if yielded:
                        continue  # the stream ended (the node stops, or dropped us): the next node at once
                    last_error = f"{endpoint}: the stream ended before any event"
            except Overloaded as exc:  # 429: too many streams there
                last_error = str(exc)
            except Rejected:  # 400, 401, 403: asking again will not help
                raise
            except CoordinatorError as exc:  # 5xx: a node that stops (503 stopping)
                last_error = str(exc)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                last_error = f"{endpoint}: {exc.__class__.__name__}: {exc}"
            failures += 1
            if failures >= EVENTS_FAILURES_MAX:
                raise Unavailable(f"GET /v1/events: {failures} failed connections in a row; last: {last_error}")
            await asyncio.sleep(backoff_s(failures // len(self.endpoints)))


async def _server_sent_events(content: aiohttp.StreamReader) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) of each event of a text/event-stream; comments skipped."""
    name, data = "message", []
    while True:
        line = await content.readline()
        if not line:
            return
        text = line.decode().rstrip("\r\n")
        if not text:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif text.startswith(":"):
            continue
        else:
            field, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
