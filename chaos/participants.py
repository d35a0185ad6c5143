"""Recording participants: services that keep every effect they perform.

Tests and chaos runs judge what happened on the participants' side, not
what the coordinator reports (``duplicate_effects([running]) == []``).

A request to any path outside `/_` is a participant call through the kit
(`saga_participant(MemoryStore())`): it needs an `Idempotency-Key`, a retry
replays the stored answer, stale fences, null compensations and hanging
actions are handled by the kit. The business handler follows the rule of
the exact path, else the default (`Script(default=Ok(), paths={...})`):

    Ok(output)           200, `output` merged over {"service", "key", "id"}
                         (plus "vote": "yes" when the key ends in /prepare)
    Fail(status, error)  a scripted error (definite when 4xx but 408/429)
    Flaky(failures, status)  the first `failures` calls of each key answer
                         `status` (not stored by the kit, so retried); then Ok
    Slow(delay_s)        sleeps, then Ok: a coordinator with a shorter timeout
                         retries, waits on the kit's lock and gets the replay
    Vote(vote)           200 {"vote": "yes"|"no"} for 2PC prepare paths
    Chaos(seed, error_rate, slow_rate, slow_s)  per call, from its own
                         random.Random(seed): `error_status`, or slow then Ok,
                         or Ok

An `Effect` is recorded when the business handler runs and answers 2xx; a
replay, a null compensation, a refused fence or a failure is none, so a
correct coordinator leaves exactly one effect per idempotency key
(`duplicate_effects` lists the others). A `RequestRecord` is kept for every
participant call, replays included.

HTTP extras for out-of-process use: `GET /_effects` -> {"effects": [...]},
`GET /_requests` -> {"requests": [...]}, `GET|PUT /_script` (`Script.to_json`
form: {"default": RULE, "paths": {PATH: RULE}}, RULE = {"rule": "ok"|"fail"|
"flaky"|"slow"|"vote"|"chaos", FIELD: VALUE...}), `POST /_reset` (forgets
effects, requests, stored answers, fences and counters; keeps the script).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from coordinator.client.participant import IdempotencyStore, MemoryStore, participant_route, saga_participant
from coordinator.cluster.launcher.local import serve_on_loopback

__all__ = [
    "Chaos",
    "Effect",
    "Fail",
    "Flaky",
    "Ok",
    "RecordingService",
    "RequestRecord",
    "Rule",
    "RunningService",
    "Script",
    "Slow",
    "Vote",
    "deterministic_id",
    "duplicate_effects",
    "effects_by_key",
    "fetch_effects",
    "put_script",
    "start_recording_service",
]

SERVICE_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Requests one service records (effects are a subset); beyond, calls get 503.
RECORDS_MAX_DEFAULT = 100_000
SCRIPT_PATHS_MAX = 256
FLAKY_FAILURES_MAX = 1_000
DELAY_S_MAX = 300.0
# How long close() lets in-flight calls (a Slow sleep) finish.
CLOSE_TIMEOUT_S = 2.0
KINDS = ("action", "compensation", "prepare", "commit", "abort")
REPLAYED_HEADER = "Idempotent-Replayed"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _within(value: object, low: float, high: float, integer: bool = False) -> bool:
    types = (int,) if integer else (int, float)
    return isinstance(value, types) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class Ok:
    output: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _check(self.output is None or isinstance(self.output, Mapping), "Ok.output: an object")


@dataclass(frozen=True)
class Fail:
    status: int = 422
    error: str = "declined"

    def __post_init__(self) -> None:
        _check(_within(self.status, 400, 599, True), "Fail.status must be 400..599")
        _check(isinstance(self.error, str) and self.error != "", "Fail.error must be a code")


@dataclass(frozen=True)
class Flaky:
    failures: int
    status: int = 503

    def __post_init__(self) -> None:
        _check(
            _within(self.failures, 0, FLAKY_FAILURES_MAX, True),
            f"Flaky.failures must be 0..{FLAKY_FAILURES_MAX} (FLAKY_FAILURES_MAX)",
        )
        _check(_within(self.status, 400, 599, True), "Flaky.status must be 400..599")


@dataclass(frozen=True)
class Slow:
    delay_s: float

    def __post_init__(self) -> None:
        _check(_within(self.delay_s, 0, DELAY_S_MAX), f"Slow.delay_s must be 0..{DELAY_S_MAX}")


@dataclass(frozen=True)
class Vote:
    vote: str

    def __post_init__(self) -> None:
        _check(self.vote in ("yes", "no"), "Vote.vote must be 'yes' or 'no'")


@dataclass(frozen=True)
class Chaos:
    seed: int
    error_rate: float
    slow_rate: float = 0.0
    slow_s: float = 0.0
    error_status: int = 503

    def __post_init__(self) -> None:
        _check(_within(self.seed, -(2**63), 2**63 - 1, True), "Chaos.seed must be an integer")
        rates_ok = _within(self.error_rate, 0, 1) and _within(self.slow_rate, 0, 1)
        _check(
            rates_ok and self.error_rate + self.slow_rate <= 1,
            "Chaos rates must be 0..1 and error_rate + slow_rate <= 1",
        )
        _check(_within(self.slow_s, 0, DELAY_S_MAX), f"Chaos.slow_s must be 0..{DELAY_S_MAX}")
        _check(_within(self.error_status, 400, 599, True), "Chaos.error_status must be 400..599")


Rule = Ok | Fail | Flaky | Slow | Vote | Chaos
_RULE_NAMES: dict[str, type] = {"ok": Ok, "fail": Fail, "flaky": Flaky, "slow": Slow, "vote": Vote, "chaos": Chaos}


def rule_to_json(rule: Rule) -> dict[str, Any]:
    name = next(name for name, cls in _RULE_NAMES.items() if type(rule) is cls)
    return {"rule": name, **dataclasses.asdict(rule)}


def rule_from_json(raw: object, where: str) -> Rule:
    _check(isinstance(raw, dict), f"{where} must be an object")
    assert isinstance(raw, dict)
    fields = dict(raw)
    name = fields.pop("rule", None)
    cls = _RULE_NAMES.get(name) if isinstance(name, str) else None
    _check(cls is not None, f"{where}.rule must be one of {sorted(_RULE_NAMES)}")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


@dataclass(frozen=True)
class Script:
    """The rule for each exact path, else `default`."""

    default: Rule = Ok()
    paths: Mapping[str, Rule] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(isinstance(self.default, Rule), "Script.default must be a rule")
        _check(isinstance(self.paths, Mapping), "Script.paths must map paths to rules")
        _check(len(self.paths) <= SCRIPT_PATHS_MAX, f"over SCRIPT_PATHS_MAX ({SCRIPT_PATHS_MAX})")
        for path, rule in self.paths.items():
            _check(
                isinstance(path, str) and path.startswith("/") and not path.startswith("/_"),
                f"script path {path!r} must start with '/' and not with '/_'",
            )
            _check(isinstance(rule, Rule), f"rule for {path!r} must be a rule")
        object.__setattr__(self, "paths", dict(self.paths))

    def rule_for(self, path: str) -> Rule:
        return self.paths.get(path, self.default)

    def with_path(self, path: str, rule: Rule) -> Script:
        return Script(self.default, {**self.paths, path: rule})

    def to_json(self) -> dict[str, Any]:
        return {
            "default": rule_to_json(self.default),
            "paths": {path: rule_to_json(rule) for path, rule in self.paths.items()},
        }

    @staticmethod
    def from_json(raw: object) -> Script:
        _check(isinstance(raw, dict), "script must be an object")
        assert isinstance(raw, dict)
        _check(set(raw) <= {"default", "paths"}, "script fields are 'default' and 'paths'")
        default = rule_from_json(raw.get("default", {"rule": "ok"}), "default")
        paths = raw.get("paths", {})
        _check(isinstance(paths, dict), "paths must be an object")
        return Script(default, {p: rule_from_json(r, f"paths[{p!r}]") for p, r in paths.items()})


@dataclass(frozen=True)
class Effect:
    """A business handler that ran and answered 2xx."""

    at_s: float  # the service's clock (time.monotonic() by default) when the handler finished
    service: str
    method: str
    path: str
    idempotency_key: str
    fence: str | None
    kind: str  # one of KINDS, or "other"
    body: Any
    output: Any

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RequestRecord:
    """One participant call as it arrived, and what it was answered."""

    at_s: float  # the service's clock (time.monotonic() by default) on arrival
    service: str
    method: str
    path: str
    idempotency_key: str | None
    fence: str | None
    body: Any  # parsed JSON; None when empty or not JSON
    status: int | None  # None: no answer (cancelled at shutdown)
    replayed: bool
    duration_s: float
    caller: str | None = None  # the process that sent it, when the service was given ``caller_of``


def kind_of(key: str) -> str:
    last = key.rsplit("/", 1)[-1]
    return last if last in KINDS else "other"


def deterministic_id(name: str, key: str) -> str:
    return f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def _error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


async def _json_body(request: web.Request) -> Any:
    """The parsed body; None when empty; ValueError when not JSON."""
    raw = await request.read()
    return json.loads(raw) if raw.strip() else None


class RecordingService:
    """A scripted participant that records its effects and requests, each
    with the time of ``clock`` (the simulation gives its virtual clock)."""

    def __init__(
        self,
        name: str,
        script: Script | None = None,
        *,
        records_max: int = RECORDS_MAX_DEFAULT,
        clock: Callable[[], float] = time.monotonic,
        store: IdempotencyStore | None = None,
        wall: Callable[[], float] = time.time,
        caller_of: Callable[[web.Request], str] | None = None,
    ) -> None:
        """``store``: where the participant kit keeps answers and fences (a
        fresh MemoryStore when None); ``wall``: the kit's wall clock;
        ``caller_of``: who sent a request, kept in its RequestRecord
        (``coordinator.chaos.callers.CallerLookup``)."""
        _check(SERVICE_NAME_PATTERN.fullmatch(name) is not None, f"bad service name {name!r}")
        assert records_max > 0
        self.name = name
        self.clock = clock
        self.script = Script() if script is None else script
        self.effects: list[Effect] = []
        self.requests: list[RequestRecord] = []
        self._records_max = records_max
        self._failures_by_key: Counter[str] = Counter()
        # Keys whose 2xx effect is recorded, and action keys whose handler was
        # stopped half-way (a crash): see _nothing_to_undo.
        self._effect_keys: set[str] = set()
        self.interrupted: set[str] = set()
        self._random_by_path: dict[str | None, random.Random] = {}
        self._wall = wall
        self._caller_of = caller_of
        self._kit = saga_participant(MemoryStore() if store is None else store, clock=wall)

    def set_script(self, script: Script) -> None:
        self.script = script
        self._random_by_path.clear()

    def reset(self) -> None:
        """Forget effects, requests, stored answers, fences and counters."""
        self.effects.clear()
        self.requests.clear()
        self._failures_by_key.clear()
        self._effect_keys.clear()
        self.interrupted.clear()
        self._random_by_path.clear()
        self._kit = saga_participant(MemoryStore(), clock=self._wall)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/_effects", self._get_effects)
        app.router.add_get("/_requests", self._get_requests)
        app.router.add_get("/_script", self._get_script)
        app.router.add_put("/_script", self._put_script)
        app.router.add_post("/_reset", self._reset)
        app.router.add_route("*", r"/{path:(?!_).*}", self._participant)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_"):
            return await handler(request)
        if len(self.requests) >= self._records_max:
            message = f"{self.name} recorded records_max ({self._records_max}) requests"
            return web.json_response(_error_body("recorder_full", message), status=503)
        at_s = self.clock()
        caller = self._caller_of(request) if self._caller_of is not None else None
        try:
            body = await _json_body(request)
        except (ValueError, web.HTTPException):
            body = None
        status: int | None = None
        replayed = False
        try:
            response = await self._kit(request, handler)
            status, replayed = response.status, response.headers.get(REPLAYED_HEADER) == "true"
            return response
        except web.HTTPException as exception:
            status = exception.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.requests.append(
                RequestRecord(
                    at_s,
                    self.name,
                    request.method,
                    request.path,
                    request.headers.get("Idempotency-Key"),
                    request.headers.get("Coordinator-Fence"),
                    body,
                    status,
                    replayed,
                    self.clock() - at_s,
                    caller,
                )
            )

    @participant_route
    async def _participant(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]  # the kit refuses calls without one
        try:
            body = await _json_body(request)
        except ValueError:
            return web.json_response(_error_body("invalid", "body is not valid JSON"), status=400)
        path = request.path
        if self._nothing_to_undo(key):
            return web.json_response({"compensated": False, "reason": "nothing to undo"})
        rule = self.script.rule_for(path)
        try:
            status, output = await self._perform(rule, path if path in self.script.paths else None, key)
        except asyncio.CancelledError:  # the process died (or was killed) mid-handler
            self.interrupted.add(key)
            raise
        if 200 <= status < 300:
            self._effect_keys.add(key)
            self.effects.append(
                Effect(
                    self.clock(),
                    self.name,
                    request.method,
                    path,
                    key,
                    request.headers.get("Coordinator-Fence"),
                    kind_of(key),
                    body,
                    output,
                )
            )
        return web.json_response(output, status=status)

    def _nothing_to_undo(self, key: str) -> bool:
        """A compensation whose action was stopped half-way and left no effect.

        The kit keeps the attempt mark of a handler that never came back (it
        may have had effects) and so calls the compensation handler, which
        must then tolerate "nothing to undo": it answers without a business
        effect, as a real one checking its own records would. Any other
        compensation without an action effect is still recorded, so the
        checkers see it (``compensation_without_action``)."""
        prefix, _, kind = key.rpartition("/")
        if kind != "compensation":
            return False
        action = f"{prefix}/action"
        return action in self.interrupted and action not in self._effect_keys

    async def _perform(self, rule: Rule, slot: str | None, key: str) -> tuple[int, dict[str, Any]]:
        """The scripted answer: status and JSON body."""
        match rule:
            case Ok(output=output):
                return 200, self._ok(key, output)
            case Fail(status=status, error=error):
                return status, _error_body(error, f"{self.name}: scripted failure")
            case Flaky(failures=failures, status=status):
                if self._failures_by_key[key] < failures:
                    self._failures_by_key[key] += 1
                    attempt = self._failures_by_key[key]
                    message = f"{self.name}: failure {attempt}/{failures}"
                    return status, _error_body("flaky", message)
                return 200, self._ok(key, None)
            case Slow(delay_s=delay_s):
                await asyncio.sleep(delay_s)
                return 200, self._ok(key, None)
            case Vote(vote=vote):
                return 200, self._ok(key, {"vote": vote})
            case Chaos():
                draw = self._random_for(slot, rule).random()
                if draw < rule.error_rate:
                    return rule.error_status, _error_body("chaos", f"{self.name}: injected error")
                if draw < rule.error_rate + rule.slow_rate:
                    await asyncio.sleep(rule.slow_s)
                return 200, self._ok(key, None)
        raise AssertionError(f"not a rule: {rule!r}")

    def _ok(self, key: str, output: Mapping[str, Any] | None) -> dict[str, Any]:
        base: dict[str, Any] = {"service": self.name, "key": key, "id": deterministic_id(self.name, key)}
        if kind_of(key) == "prepare":
            base["vote"] = "yes"
        return {**base, **(output or {})}

    def _random_for(self, slot: str | None, rule: Chaos) -> random.Random:
        rng = self._random_by_path.get(slot)
        if rng is None:
            rng = self._random_by_path[slot] = random.Random(rule.seed)
        return rng

    async def _get_effects(self, request: web.Request) -> web.Response:
        return web.json_response({"effects": [effect.to_json() for effect in self.effects]})

    async def _get_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": [dataclasses.asdict(r) for r in self.requests]})

    async def _get_script(self, request: web.Request) -> web.Response:
        return web.json_response(self.script.to_json())

    async def _put_script(self, request: web.Request) -> web.Response:
        try:
            script = Script.from_json(await _json_body(request))
        except ValueError as error:
            return web.json_response(_error_body("invalid", str(error)), status=400)
        self.set_script(script)
        return web.json_response(script.to_json())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"reset": True})


class RunningService:
    """A RecordingService listening on loopback; `async with` closes it.

    `crash()` stops it as a killed process would: the port closes, every
    handler still running is cancelled at once and its caller's connection
    drops; `restart()` serves it again on the same address with what the
    service keeps (its idempotency store, its effects and requests)."""

    def __init__(self, service: RecordingService, url: str, runner: web.AppRunner) -> None:
        self.service = service
        self.url = url
        self._runner: web.AppRunner | None = runner
        self.crashes = 0

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def crash(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            self.crashes += 1
            for connection in runner.server.connections if runner.server is not None else ():
                task = connection._task_handler  # runs the handler of the request in progress
                if task is not None:
                    task.cancel()
                if connection.transport is not None:
                    connection.transport.abort()  # the caller sees the connection drop
            runner._shutdown_timeout = 0.0
            await runner.cleanup()

    async def restart(self) -> None:
        if self._runner is not None:
            return
        url = URL(self.url)
        runner = web.AppRunner(self.service.app(), shutdown_timeout=CLOSE_TIMEOUT_S, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, url.host, url.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def __aenter__(self) -> RunningService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_recording_service(
    name: str,
    script: Script | None = None,
    *,
    records_max: int = RECORDS_MAX_DEFAULT,
    host: str = "127.0.0.1",
    caller_of: Callable[[web.Request], str] | None = None,
) -> RunningService:
    """Serve a new RecordingService on 127.0.0.1 (or ``host``) at a port the OS picks."""
    service = RecordingService(name, script, records_max=records_max, caller_of=caller_of)
    runner, url = await serve_on_loopback(service.app(), shutdown_timeout_s=CLOSE_TIMEOUT_S, host=host)
    return RunningService(service, url, runner)


EffectSource = RecordingService | RunningService | Iterable[Effect]


def _effects_of(source: EffectSource) -> Iterable[Effect]:
    if isinstance(source, RunningService):
        return source.service.effects
    if isinstance(source, RecordingService):
        return source.effects
    return source


def effects_by_key(services: Iterable[EffectSource]) -> dict[str, list[Effect]]:
    """Every effect of `services` (services, or fetched effect lists) by key,
    each list in time order."""
    grouped: dict[str, list[Effect]] = {}
    for source in services:
        for effect in _effects_of(source):
            grouped.setdefault(effect.idempotency_key, []).append(effect)
    for effects in grouped.values():
        effects.sort(key=lambda effect: effect.at_s)
    return grouped


def duplicate_effects(services: Iterable[EffectSource]) -> list[str]:
    """The keys with more than one effect, sorted."""
    return sorted(key for key, effects in effects_by_key(services).items() if len(effects) > 1)


async def fetch_effects(session: aiohttp.ClientSession, url: str) -> list[Effect]:
    """The effects of a recording service running elsewhere (`GET /_effects`)."""
    async with session.get(f"{url.rstrip('/')}/_effects") as response:
        response.raise_for_status()
        body = await response.json()
    return [Effect(**raw) for raw in body["effects"]]


async def put_script(session: aiohttp.ClientSession, url: str, script: Script) -> None:
    """Replace the script of a recording service running elsewhere."""
    async with session.put(f"{url.rstrip('/')}/_script", json=script.to_json()) as response:
        response.raise_for_status()
