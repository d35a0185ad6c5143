"""Calling participant services: the protocol's headers, per-call timeouts,
answer classification and retries (tenacity), shared by both transports.

`HttpCaller` (here) and `GrpcCaller` (`participants_grpc`) implement
`ParticipantCaller`; each makes one attempt and classifies its answer,
`call_with_retries` owns the loop, the budget and the breaker's slow
interval. Over HTTP:

| answer                                   | outcome                        |
| 2xx                                      | ok, the JSON body is the output |
| 4xx but 408 and 429                      | failed (definite)               |
| 408, 429, 5xx, timeout, refused          | retried; out of budget: unknown |
| a TLS handshake that fails               | retried; out of budget: unknown |
| an address the [services] policy refuses | failed (definite), never sent   |

``https://`` participants are called with the session's SSL context
(`participant_session(..., ssl=...)`: ``[services]`` ``ca_file`` or the
system CAs, and the client certificate when one is set; see
`ParticipantTls` in cluster/core/tls.py). A certificate that does not
verify, or a participant that refuses ours, is a failed connection like a
refused one: nothing ran there that the call can know of, so the outcome is
unknown and the call is retried. Its reason is logged once per service
(`TlsFailures`) until it changes or a call gets through, without a traceback.

The address check (`cluster/core/netpolicy.py`) runs at call time: a literal
address here, a name in the session's resolver (`participant_session`),
which aiohttp asks on every new connection and whose addresses are the
only ones it connects to.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from coordinator.client.participant.signing import SIGNATURE_HEADER, check_keys, sign_checked
from coordinator.cluster.core.netpolicy import AddressRefused, PolicyResolver, ServicePolicy, literal_address
from coordinator.cluster.executor.breaker import Breakers

__all__ = [
    "ATTEMPTS_HARD_MAX",
    "ERROR_CHARS_MAX",
    "OPERATIONS",
    "OUTPUT_BYTES_MAX",
    "CallOutcome",
    "CallSpec",
    "HttpCaller",
    "ParticipantCaller",
    "Retryable",
    "Signer",
    "TlsFailures",
    "call_with_retries",
    "participant_session",
]

ATTEMPTS_HARD_MAX = 100_000  # attempts while a breaker is open do not spend the budget; this bounds them
ERROR_CHARS_MAX = 500
OUTPUT_BYTES_MAX = 64 * 1024

log = logging.getLogger(__name__)

# What a call does at the participant: a saga step's action or compensation,
# or a 2PC phase. HTTP says it with the spec's method and path; gRPC picks
# the RPC by it.
OPERATIONS = ("execute", "compensate", "prepare", "commit", "abort")


@dataclass(frozen=True, slots=True)
class CallOutcome:
    kind: str  # "ok" | "failed" | "unknown"
    output: Any = None
    error: str = ""
    attempts: int = 0


class Retryable(Exception):
    """One attempt ended with its outcome unknown; str() says how."""


@dataclass(frozen=True, slots=True)
class CallSpec:
    service: str
    url: str  # HTTP: the registered base URL; gRPC: the registered target host:port
    method: str  # HTTP only
    path: str
    body: Any
    idempotency_key: str
    fence: str
    timeout_s: float
    max_attempts: int
    backoff_s: float
    max_backoff_s: float
    tls: bool = False  # gRPC: the target speaks TLS (the registration's "tls"); HTTP: the URL's scheme says it
    # The workflow's release, when its definition names one: only workers of
    # that release may make the call (cluster/executor/dispatch.py). Never sent.
    release: str | None = None


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs each participant call (`Coordinator-Signature`, the scheme of
    client/participant/signing.py): HMAC-SHA256 over the method (gRPC: the
    RPC name), the path as sent, the idempotency key, the fence, a digest
    of the body and the time, under the key the participants are configured
    with (`[cluster] participant_key_file` and `participant_key_id`). Every
    attempt is signed anew, so a retry carries a fresh time."""

    key_id: str
    secret: bytes = field(repr=False)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        check_keys({self.key_id: self.secret})

    def header(self, *, method: str, path: str, idempotency_key: str, fence: str, body: bytes) -> str:
        return sign_checked(  # the key was checked once, in __post_init__
            self.secret,
            self.key_id,
            method=method,
            path=path,
            idempotency_key=idempotency_key,
            fence=fence,
            body=body,
            timestamp=int(self.clock()),
        )


class ParticipantCaller(Protocol):
    """A participant transport: call until a definite answer or the budget is spent."""

    async def call(self, spec: CallSpec, operation: str) -> CallOutcome: ...


async def call_with_retries(
    spec: CallSpec, breakers: Breakers, attempt: Callable[[], Awaitable[CallOutcome]], rng: random.Random
) -> CallOutcome:
    """Run `attempt` until it returns (a definite answer) or the budget is spent.

    `attempt` raises Retryable for an unknown outcome and records the answer
    on the service's breaker. Attempts made while that breaker is open wait
    the slow interval and do not spend the budget (bounded by
    ATTEMPTS_HARD_MAX). Otherwise the wait is "full jitter": uniform, from
    `rng`, between 0 and an exponential bound (tenacity's
    wait_random_exponential, which draws from the global random instead).

    The loop is written out rather than run by tenacity's AsyncRetrying:
    every participant call passes here and nearly all succeed at once, and
    building the retrying object, its state and its wrapped callables cost
    more than the first attempt's own bookkeeping (2-4 % of a busy
    leader's CPU). The waits are tenacity's: `backoff_bound_s` is its
    wait_exponential."""
    spent = 0
    attempts = 0
    last_error = ""
    while True:
        attempts += 1
        if not breakers.is_open(spec.service):
            spent += 1
        try:
            outcome = await attempt()
        except Retryable as exc:
            last_error = str(exc)
        else:
            return CallOutcome(outcome.kind, outcome.output, outcome.error, attempts)
        if spent >= spec.max_attempts or attempts >= ATTEMPTS_HARD_MAX:
            break
        if breakers.is_open(spec.service):
            await asyncio.sleep(breakers.slow_wait_s())
        else:
            await asyncio.sleep(rng.uniform(0, backoff_bound_s(spec, attempts)))
    return CallOutcome("unknown", error=f"out of retries after {attempts} attempts: {last_error}", attempts=attempts)


def backoff_bound_s(spec: CallSpec, attempts: int) -> float:
    """The bound of the jittered wait after ``attempts`` attempts: tenacity's
    ``wait_exponential(multiplier=backoff_s, max=max_backoff_s)``."""
    try:
        bound = spec.backoff_s * 2 ** (attempts - 1)
    except OverflowError:
        return spec.max_backoff_s
    return max(0.0, min(bound, spec.max_backoff_s))


def participant_session(
    policy: ServicePolicy,
    *,
    connections_max: int,
    resolver: AbstractResolver | None = None,
    ssl: ssl.SSLContext | None = None,
) -> aiohttp.ClientSession:
    """The session participant calls go through: every address a name
    resolves to is checked against `policy` before aiohttp connects to it
    (`resolver`, the system's by default, is asked first). ``https://``
    participants are verified with `ssl` (``ParticipantTls.client_context()``;
    None: aiohttp's default, the system CAs)."""
    connector = aiohttp.TCPConnector(
        limit=connections_max, resolver=PolicyResolver(policy, resolver), ssl=ssl if ssl is not None else True
    )
    return aiohttp.ClientSession(connector=connector)


TLS_REASON_CHARS_MAX = 300


class TlsFailures:
    """Logs why TLS to a participant failed, once per service until the
    reason changes or a call to it gets through (a retried call must not
    log every attempt). Holds one reason per service name."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._logger = logger
        self._last: dict[str, str] = {}

    def failed(self, service: str, target: str, reason: str) -> None:
        reason = reason[:TLS_REASON_CHARS_MAX]
        if self._last.get(service) == reason:
            return
        self._last[service] = reason
        self._logger.warning(
            "participant %s (%s): TLS failed, the call's outcome is unknown: %s", service, target, reason
        )

    def succeeded(self, service: str) -> None:
        self._last.pop(service, None)


def _tls_reason(exc: BaseException) -> str | None:
    """Why TLS failed, when `exc` (or what it wraps) is a TLS failure."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return str(exc.certificate_error)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return str(current)
        if isinstance(current, aiohttp.ClientSSLError):
            return str(current)
        wrapped = getattr(current, "os_error", None)
        current = wrapped if isinstance(wrapped, BaseException) else (current.__cause__ or current.__context__)
    return None


def _refused(exc: AddressRefused) -> CallOutcome:
    """A definite failure: the call never left, so there is no answer to show."""
    return CallOutcome("failed", error=str(exc)[:ERROR_CHARS_MAX])


STALE_FENCE = "stale_fence"


def _stale_fence(text: str) -> bool:
    """Whether a 409 is the participant kit's `stale_fence`: it saw a newer
    leader's fence, so this call came from a deposed one. That is no business
    answer: recorded as a definite failure, the step would not be compensated
    while the new leader's own call (or a delayed copy of this one) may run
    the action (found by the simulation). It is retried like an unknown
    outcome, until this node learns it no longer leads and stops calling."""
    try:
        error = json.loads(text).get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") == STALE_FENCE


# A cluster calls few services at few paths: their parsed forms are kept
# (yarl's parse and urlsplit are ~10 us a call, on every participant call).
@functools.lru_cache(maxsize=4096)
def _url(text: str) -> URL:
    return URL(text)


@functools.lru_cache(maxsize=1024)
def _host_of(base_url: str) -> str:
    try:
        return urlsplit(base_url).hostname or ""
    except ValueError:
        return ""


class HttpCaller:
    """Checks literal addresses itself; names are checked by the session's
    resolver, so give it a `participant_session` of the same policy. `rng`
    draws the retries' jitter (a fresh random.Random by default)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        breakers: Breakers,
        policy: ServicePolicy | None = None,
        signer: Signer | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._session = session
        self._breakers = breakers
        self._policy = policy if policy is not None else ServicePolicy()
        self._signer = signer
        self._rng = rng if rng is not None else random.Random()
        self._tls_failures = TlsFailures()

    async def _once(self, spec: CallSpec) -> CallOutcome:
        host = _host_of(spec.url)
        literal = literal_address(host)
        if literal is not None:
            try:
                self._policy.check(literal, host)
            except AddressRefused as exc:
                return _refused(exc)
        headers = {"Idempotency-Key": spec.idempotency_key, "Coordinator-Fence": spec.fence}
        data = None
        if spec.body is not None:
            data = json.dumps(spec.body).encode()
            headers["Content-Type"] = "application/json"
        try:
            url = _url(spec.url + spec.path)
        except ValueError as exc:  # never sent, so it never ran
            return CallOutcome("failed", error=f"not a URL: {exc}"[:ERROR_CHARS_MAX])
        if self._signer is not None:
            headers[SIGNATURE_HEADER] = self._signer.header(
                method=spec.method,
                path=url.raw_path_qs,
                idempotency_key=spec.idempotency_key,
                fence=spec.fence,
                body=data or b"",
            )
        breaker = self._breakers.of(spec.service)
        try:
            async with self._session.request(
                spec.method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
                allow_redirects=False,
            ) as response:
                raw = await response.content.read(OUTPUT_BYTES_MAX + 1)
                status = response.status
        except AddressRefused as exc:  # from the session's resolver, before any connection
            return _refused(exc)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            breaker.record_failure()
            reason = _tls_reason(exc)
            if reason is not None:
                self._tls_failures.failed(spec.service, f"{url.scheme}://{url.raw_authority}", reason)
                raise Retryable(f"TLS: {reason}"[:ERROR_CHARS_MAX]) from None
            raise Retryable(f"{exc.__class__.__name__}: {exc}"[:ERROR_CHARS_MAX]) from None
        if url.scheme == "https":
            self._tls_failures.succeeded(spec.service)
        text = raw.decode("utf-8", "replace")
        if 200 <= status < 300:
            breaker.record_success()
            if len(raw) > OUTPUT_BYTES_MAX:
                return CallOutcome("ok", {"_truncated": True})
            try:
                return CallOutcome("ok", json.loads(text) if text.strip() else None)
            except ValueError:
                return CallOutcome("ok", {"text": text[:ERROR_CHARS_MAX]})
        if status == 409 and _stale_fence(text):
            raise Retryable(f"HTTP 409 stale_fence: {text}"[:ERROR_CHARS_MAX])
        if 400 <= status < 500 and status not in (408, 429):
            breaker.record_success()  # the service answered: healthy, the business said no
            return CallOutcome("failed", error=f"HTTP {status}: {text}"[:ERROR_CHARS_MAX])
        breaker.record_failure()
        raise Retryable(f"HTTP {status}: {text}"[:ERROR_CHARS_MAX])

    async def call(self, spec: CallSpec, operation: str = "") -> CallOutcome:
        """Call `spec.method {spec.url}{spec.path}` until a definite answer or
        the budget is spent (`call_with_retries`). `operation` is not used:
        over HTTP the method and path say what the call does."""
        return await call_with_retries(spec, self._breakers, lambda: self._once(spec), self._rng)
