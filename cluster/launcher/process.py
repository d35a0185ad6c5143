"""A node process: the production wiring of a Node, and its servers.

``build_node(config)`` is the one place a real node is put together:

- the log: :class:`coordinator.consensus.PySyncObjLog` on TCP, with the
  cluster secret, the node's data directory and ``[raft]``, and with
  ``[tls] peer = true`` mutual TLS between the nodes (:func:`peer_tls`);
- the state machine it applies: :class:`coordinator.cluster.core.state.ClusterState`;
- the executor (cluster/executor/executor.py) with the participant
  callers - HTTP through a session whose resolver checks ``[services]``,
  gRPC, both verifying TLS participants with ``[services]``' CA and
  client certificate, both signing calls when the cluster file names a
  participant key -
  and the circuit breakers they share with its admission;
- the wall clock (``time.time``) and one random source (a fresh
  ``random.Random``) for the breakers' and the backoffs' jitter.

:class:`NodeProcess` starts that node, then the HTTP API and the gRPC API
on the node's addresses (over TLS only when the cluster file has ``[tls]``),
and stops them; ``serve(config)`` runs one until SIGTERM or SIGINT (the
``coordinator node`` command), and reads the API tokens again on SIGHUP
(``NodeProcess.reload_tokens``). The deterministic
simulation builds its nodes from the same classes with its own edges
(chaos/sim/node.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import signal
import time
from collections.abc import Callable

from aiohttp import web

from coordinator.cluster.api.grpc_api import GrpcApi
from coordinator.cluster.api.http_api import build_app
from coordinator.cluster.core.config import ConfigError, NodeConfig, load_tokens
from coordinator.cluster.core.files import private_dir
from coordinator.cluster.core.node import Node
from coordinator.cluster.core.state import ClusterState
from coordinator.cluster.core.tls import api_server_context, peer_client_context, peer_server_context
from coordinator.cluster.executor.breaker import Breakers
from coordinator.cluster.executor.callers import participant_callers
from coordinator.cluster.executor.executor import Executor
from coordinator.consensus import PYSYNCOBJ_LOGGER, PeerTls, PySyncObjLog, TruncationCounter

__all__ = ["NodeProcess", "build_node", "peer_tls", "serve"]

log = logging.getLogger(__name__)


def peer_tls(config: NodeConfig) -> PeerTls | None:
    """The Raft port's mutual TLS with ``[tls] peer = true``, else None: this
    node's certificate, the peer CA, and every node's Raft address to its id
    (the name a peer's certificate must carry). ValueError (naming the file)
    when a file is bad."""
    tls = config.tls
    if tls is None or not tls.peer:
        return None
    names = {node.raft: node.id for node in config.cluster.nodes}
    return PeerTls(peer_server_context(tls), peer_client_context(tls), names)


def build_node(
    config: NodeConfig,
    *,
    clock: Callable[[], float] = time.time,
    rng: random.Random | None = None,
    truncations: TruncationCounter | None = None,
) -> Node:
    """The node of a node process (see the module docstring). Call it on
    the event loop: the participant session belongs to it."""
    rng = rng if rng is not None else random.Random()
    state = ClusterState()
    raft_log = PySyncObjLog(
        self_address=config.node.raft,
        partner_addresses=[peer.raft for peer in config.peers],
        secret=config.secret,
        data_dir=str(config.data_dir),
        state_machine=state,
        settings=config.cluster.raft,
        peer_tls=peer_tls(config),
    )
    settings = config.cluster.executor
    breakers = Breakers(settings.breaker_failures_to_open, settings.breaker_slow_interval_s, rng=rng)
    executor = Executor(
        raft_log,
        state,
        settings,
        callers=participant_callers(config.cluster, config.participant_key, breakers, rng),
        breakers=breakers,
        clock=clock,
        rng=rng,
        workers=config.cluster.workers,
        node_id=config.node.id,
    )
    return Node(config, log=raft_log, state=state, executor=executor, clock=clock, truncations=truncations)


class NodeProcess:
    """One node with its HTTP and gRPC servers: ``start()``, then ``stop()``."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.node: Node | None = None
        # PySyncObj's resends, counted for /metrics (coordinator.consensus.truncations).
        self.truncations = TruncationCounter()
        self._runner: web.AppRunner | None = None
        self._grpc: GrpcApi | None = None
        self._sampler: asyncio.Task | None = None

    async def start(self) -> None:
        config = self.config
        private_dir(config.data_dir)
        logging.getLogger(PYSYNCOBJ_LOGGER).addFilter(self.truncations)
        node = self.node = build_node(config, truncations=self.truncations)
        await node.start()
        self._sampler = asyncio.ensure_future(node.sample_recent_forever())
        self._runner = web.AppRunner(
            build_app(node),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=config.cluster.limits.idle_connection_s,
        )
        await self._runner.setup()
        host, port = config.node.http.rsplit(":", 1)
        # [tls]: the API speaks TLS only (mutual with client_ca_file): cluster/core/tls.py
        context = api_server_context(config.tls) if config.tls is not None else None
        await web.TCPSite(self._runner, host, int(port), reuse_address=True, ssl_context=context).start()
        self._grpc = GrpcApi(node)
        await self._grpc.start()
        me = config.node
        log.info("%s: raft %s, http %s, grpc %s", me.id, me.raft, me.http_url, me.grpc)

    def reload_tokens(self) -> bool:
        """Read ``token_file`` and ``tokens_file`` again and swap the node's
        table whole (on the event loop: every request reads one table or the
        other, never a mix). A file that cannot be used keeps the tokens in
        force and logs one error line. Whether the tokens changed."""
        cluster = self.config.cluster
        if cluster.token_file is None and cluster.tokens_file is None:
            log.warning("SIGHUP: no token_file or tokens_file in the cluster file; nothing to read")
            return False
        try:
            tokens = load_tokens(cluster.token_file, cluster.tokens_file)
        except ConfigError as exc:
            log.error("SIGHUP: tokens not reloaded, the old ones stay in force: %s", exc)
            return False
        self.config = dataclasses.replace(self.config, tokens=tokens)
        if self.node is not None:
            self.node.tokens = tokens
        log.info("SIGHUP: tokens reloaded: %s", ", ".join(f"{t.name} ({t.role})" for t in tokens.tokens))
        return True

    async def stop(self) -> None:
        node = self.node
        if self._sampler is not None:
            self._sampler.cancel()
        if node is not None:
            await node.executor.close()  # no participant call starts while the servers drain
            node.events.close()  # event streams end now: the HTTP server does not wait for them
        if self._grpc is not None:
            await self._grpc.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if node is not None:
            await node.stop()
        logging.getLogger(PYSYNCOBJ_LOGGER).removeFilter(self.truncations)


async def serve(config: NodeConfig) -> None:
    """Run one node process until SIGTERM or SIGINT; SIGHUP reads the tokens again."""
    process = NodeProcess(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, process.reload_tokens)
    await process.start()
    try:
        await stop.wait()
    finally:
        log.info("%s stopping", config.node.id)
        await process.stop()
