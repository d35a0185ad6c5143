"""A local cluster of real node processes on free loopback ports.

Used by the tests, ``coordinator demo``, chaos and benchmarks: it picks free
ports, writes its own cluster file and secret in a directory of its own,
starts the nodes through the same Supervisor as ``coordinator up``, and
stops (by PID) only what it started.

A chaos run with partitions places each node elsewhere: ``hosts`` gives a
node its own address (in its network namespace) and ``launch_prefixes`` the
words that start it there (``ip netns exec NAMESPACE``); see coordinator.chaos.netns.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from coordinator.client.tls import ClientTls
from coordinator.cluster.core.config import ClusterConfig, generate_secret, local_cluster, write_cluster_file
from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.core.files import private_dir
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.core.netpolicy import ServicePolicy
from coordinator.cluster.core.tls import NODE_ID_PLACEHOLDER, ParticipantTls, TlsSettings
from coordinator.cluster.launcher.certs import issue, local_tls
from coordinator.cluster.launcher.supervisor import Supervisor
from coordinator.consensus import RaftSettings

WAIT_S = 20.0


def _ports_free(ports: list[int]) -> bool:
    sockets = []
    try:
        for port in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()


# Below Linux's ephemeral range (32768-60999 by default): an outgoing
# connection's local port can never take a port a node is about to bind.
PORTS_LOW, PORTS_HIGH = 20000, 32700


def free_base_port(nodes: int) -> int:
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(PORTS_LOW, PORTS_HIGH - 2000 - nodes, 10)
        if _ports_free([base + offset + i for offset in (0, 1000, 2000) for i in range(1, nodes + 1)]):
            return base
    raise RuntimeError("no free port range on loopback")


def _placed(config: ClusterConfig, hosts: Mapping[str, str]) -> ClusterConfig:
    """The same ports, each node on its own host (node id -> address)."""
    unknown = set(hosts) - {n.id for n in config.nodes}
    if unknown:
        raise ValueError(f"hosts: no node {sorted(unknown)[0]!r} in the cluster")

    def move(address: str, host: str) -> str:
        return f"{host}:{address.rsplit(':', 1)[1]}"

    nodes = tuple(
        replace(n, raft=move(n.raft, hosts[n.id]), http=move(n.http, hosts[n.id]), grpc=move(n.grpc, hosts[n.id]))
        if n.id in hosts
        else n
        for n in config.nodes
    )
    return replace(config, nodes=nodes)


class Response:
    def __init__(self, status: int, headers: dict, text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    @property
    def json(self) -> Any:
        return json.loads(self.text) if self.text else None

    def __repr__(self) -> str:
        return f"<{self.status} {self.text[:200]}>"


class LocalCluster:
    def __init__(
        self,
        root: Path,
        *,
        nodes: int = 3,
        raft: RaftSettings | None = None,
        executor: ExecutorSettings | None = None,
        workers: WorkerSettings | None = None,
        token: bool = False,
        base_port: int | None = None,
        hosts: Mapping[str, str] | None = None,
        launch_prefixes: Mapping[str, Sequence[str]] | None = None,
        services: ServicePolicy | None = None,
        limits: Limits | None = None,
        tls: bool = False,
        client_certs: bool = False,
        peer_tls: bool = False,
        tokens_file: Path | None = None,
        participant_tls: ParticipantTls | None = None,
    ) -> None:
        """``token=True`` writes a single admin token (``self.token``, which
        ``request`` sends); ``tokens_file`` names a tokens file
        (cluster/core/tokens.py) the caller wrote and may rewrite (then
        SIGHUP the nodes)."""
        self.root = Path(root)
        private_dir(self.root)
        self.config: ClusterConfig = local_cluster(
            nodes=nodes,
            host="127.0.0.1",
            base_port=base_port if base_port is not None else free_base_port(nodes),
            data_dir=self.root,
            raft=raft,
            executor=executor,
            workers=workers,
        )
        if hosts:
            self.config = _placed(self.config, hosts)
        if services is not None:
            self.config = replace(self.config, services=services)
        if limits is not None:
            self.config = replace(self.config, limits=limits)
        # TLS (cluster/core/tls.py): a CA and node certificates of the run's
        # own; `client_certs` makes it mutual and issues DIR/tls/client.crt.
        self.tls_files: dict[str, str] = {}
        if tls or client_certs or peer_tls:
            self.config = self._with_tls(client_certs, peer_tls)
        if participant_tls is not None:  # [services] TLS: the CA participants are verified with, our client cert
            self.config = replace(self.config, participant_tls=participant_tls)
        self.token: str | None = None
        if token:
            self.config = replace(self.config, token_file=self.root / "api.token")
            generate_secret(self.config.token_file)
            self.token = self.config.token_file.read_text().strip()
        if tokens_file is not None:
            self.config = replace(self.config, tokens_file=Path(tokens_file).resolve())
        # Participant calls are signed; participants check them with `participant_keys`.
        self.config = replace(self.config, participant_key_file=self.root / "participant.key")
        generate_secret(self.config.participant_key_file)
        self.participant_keys = {
            self.config.participant_key_id: self.config.participant_key_file.read_text().strip().encode()
        }
        self.cluster_file = self.root / "cluster.toml"
        write_cluster_file(self.cluster_file, self.config)
        generate_secret(self.config.secret_file)
        # Nodes placed on their own addresses (chaos network namespaces) run
        # without a token unless one is asked for: private addresses the run made.
        insecure = bool(hosts) and not token and tokens_file is None
        self.supervisor = Supervisor(self.cluster_file, self.config, launch_prefixes=launch_prefixes, insecure=insecure)
        self._session: aiohttp.ClientSession | None = None

    def _with_tls(self, client_certs: bool, peer_tls: bool) -> ClusterConfig:
        tls_dir = self.root / "tls"
        ca = local_tls(tls_dir, [(n.id, n.http.rsplit(":", 1)[0]) for n in self.config.nodes])
        self.tls_files = {"ca_file": str(ca.cert_file)}
        if client_certs:
            issue(ca, tls_dir / "client.crt", tls_dir / "client.key", common_name="client", server=False)
            self.tls_files.update(cert_file=str(tls_dir / "client.crt"), key_file=str(tls_dir / "client.key"))
        settings = TlsSettings(
            cert_file=str(tls_dir / f"{NODE_ID_PLACEHOLDER}.crt"),
            key_file=str(tls_dir / f"{NODE_ID_PLACEHOLDER}.key"),
            client_ca_file=ca.cert_file if client_certs else None,
            peer=peer_tls,
            peer_ca_file=ca.cert_file,
        )
        return replace(self.config, tls=settings)

    def client_tls(self) -> ClientTls | None:
        """What a client of this cluster trusts and presents (None without TLS)."""
        return ClientTls(**self.tls_files) if self.tls_files else None

    @property
    def ids(self) -> list[str]:
        return [n.id for n in self.config.nodes]

    def url(self, node_id: str) -> str:
        return self.config.node(node_id).http_url

    def start(self) -> None:
        self.supervisor.start_all()

    async def close(self) -> None:
        self.supervisor.stop_all()
        if self._session is not None:
            await self._session.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            tls = self.client_tls()
            connector = aiohttp.TCPConnector(ssl=tls.ssl_context()) if tls is not None else None
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=10), headers=headers, connector=connector
            )
        return self._session

    async def request(
        self, method: str, node_id: str, path: str, body: Any = None, *, data: bytes | None = None, follow: bool = False
    ) -> Response:
        url = self.url(node_id) + path
        kwargs: dict[str, Any] = {"allow_redirects": False}
        if method in ("POST", "PUT", "DELETE", "PATCH"):  # the API refuses other writes (cluster/api/http_api.py)
            kwargs["headers"] = {"Content-Type": "application/json"}
        if data is not None:
            kwargs["data"] = data
        elif body is not None:
            kwargs["json"] = body
        for _ in range(4):
            async with self.session().request(method, url, **kwargs) as r:
                response = Response(r.status, dict(r.headers), await r.text())
            if follow and response.status == 307:
                url = response.headers["Location"]
                continue
            return response
        raise AssertionError(f"too many redirects for {method} {path}")

    async def cluster_view(self, node_id: str) -> dict | None:
        try:
            response = await self.request("GET", node_id, "/v1/cluster")
        except (TimeoutError, aiohttp.ClientError):
            return None
        return response.json if response.status == 200 else None

    async def wait_leader(
        self, among: list[str] | None = None, timeout_s: float = WAIT_S, exclude: str | None = None
    ) -> str:
        """Wait until the given nodes agree on one leader that says it leads."""
        among = among or [i for i in self.ids if self.supervisor.alive(i)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            views = [await self.cluster_view(i) for i in among]
            leaders = {v["leader"]["id"] if v and v["leader"] else None for v in views}
            if len(leaders) == 1 and None not in leaders:
                leader = leaders.pop()
                if leader != exclude and leader in among:
                    view = await self.cluster_view(leader)
                    if view and view["role"] == "leader":
                        return leader
            await asyncio.sleep(0.1)
        raise AssertionError(f"no agreed leader among {among} within {timeout_s} s")

    async def wait_applied(self, node_id: str, index: int, timeout_s: float = WAIT_S) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            view = await self.cluster_view(node_id)
            if view and view["applied_index"] >= index:
                return view
            await asyncio.sleep(0.1)
        raise AssertionError(f"{node_id} did not apply index {index} within {timeout_s} s")

    async def put_service(self, via: str, name: str, url: str) -> Response:
        return await self.request("PUT", via, f"/v1/services/{name}", {"url": url}, follow=True)


async def serve_on_loopback(
    app: web.Application, *, shutdown_timeout_s: float = 60.0, host: str = "127.0.0.1"
) -> tuple[web.AppRunner, str]:
    """Serve an aiohttp app on 127.0.0.1 (or ``host``, such as a chaos run's
    bridge address) at a port the OS picks: (runner, base URL).
    The caller cleans the runner up."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout_s, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, 0).start()
        host, port = runner.addresses[0][:2]
    except BaseException:
        await runner.cleanup()
        raise
    return runner, f"http://{host}:{port}"


def fast_raft(**overrides: Any) -> RaftSettings:
    return replace(RaftSettings(), **overrides)
