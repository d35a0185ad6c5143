"""The ``coordinator`` command (README.md, "A cluster in one minute" and
"Sagas and transactions from the CLI").

Exit codes: 0 ok, 1 the operation failed, 2 usage. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coordinator.chaos.nemesis import FAULTS, WORKER_FAULTS
from coordinator.chaos.run import ChaosSettings, run_chaos, seconds_range
from coordinator.chaos.sim.cli import add_simulate_parser
from coordinator.client import Coordinator, CoordinatorError
from coordinator.client.coordinator import endpoints_from_env
from coordinator.client.tls import ClientTls
from coordinator.cluster.bench import run as bench_run
from coordinator.cluster.bench.dashboards import DashboardsUnavailable
from coordinator.cluster.core.config import (
    ClusterConfig,
    ConfigError,
    NodeAddress,
    NodeConfig,
    generate_secret,
    load_cluster_file,
    load_tokens,
    local_cluster,
    read_secret,
    write_cluster_file,
)
from coordinator.cluster.core.executor_settings import WorkerSettings
from coordinator.cluster.core.files import owner_only_umask, private_dir
from coordinator.cluster.core.netpolicy import literal_address
from coordinator.cluster.core.tls import NODE_ID_PLACEHOLDER, TlsSettings
from coordinator.cluster.demo.run import run_demo
from coordinator.cluster.launcher.certs import issue, local_tls, make_ca
from coordinator.cluster.launcher.supervisor import Supervisor, die_with_parent

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_CHAOS_FAULTS = "kill,pause,restart-all,partition"
# What `coordinator up` signs participant calls with (DATA_DIR/participant.key).
PARTICIPANT_KEY_FILE = "participant.key"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def _endpoints(args: argparse.Namespace) -> list[str]:
    if args.endpoints:
        return [e.strip() for e in args.endpoints.split(",") if e.strip()]
    return endpoints_from_env(tls=_client_tls(args) is not None)


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """--ca-file, --cert-file, --key-file, else $COORDINATOR_CA_FILE and the others."""
    return ClientTls.resolve(
        getattr(args, "ca_file", None), getattr(args, "cert_file", None), getattr(args, "key_file", None)
    )


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


# -- node and up -----------------------------------------------------------------
def _loopback_host(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    parsed = literal_address(host)
    return host == "localhost" if parsed is None else parsed.is_loopback


def insecure_bind_warning(cluster: ClusterConfig, nodes: list[NodeAddress], insecure: bool) -> str | None:
    """None when every node of `nodes` binds loopback or a token is set;
    the warning to print when ``--insecure`` allows otherwise; UsageError
    without it (an API reachable from the network with no token)."""
    exposed = sorted(
        {n.http.rsplit(":", 1)[0] for n in nodes if not (_loopback_host(n.http) and _loopback_host(n.grpc))}
    )
    if not exposed or cluster.token_file is not None or cluster.tokens_file is not None:
        return None
    if not insecure:
        raise UsageError(
            f"the API would listen on {', '.join(exposed)} (not loopback) without a token: "
            "add --token (up) or token_file (cluster file), or --insecure to run without one"
        )
    return (
        f"WARNING: INSECURE: the HTTP and gRPC APIs listen on {', '.join(exposed)} with NO API token; "
        "anyone who reaches them can run sagas and register services (--insecure)"
    )


def cmd_node(args: argparse.Namespace) -> int:
    die_with_parent()
    owner_only_umask()
    cluster = load_cluster_file(args.config)
    warning = insecure_bind_warning(cluster, [cluster.node(args.id)], args.insecure)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    tokens = load_tokens(cluster.token_file, cluster.tokens_file)
    key_file = cluster.participant_key_file
    participant_key = read_secret(key_file, "the participant signing key").encode() if key_file else None
    cluster.participant_tls.check()  # [services] TLS files: a key others can read, a missing file refuse the start
    config = NodeConfig(
        cluster=cluster,
        node=cluster.node(args.id),
        secret=read_secret(cluster.secret_file),
        tokens=tokens,
        participant_key=participant_key,
    )
    if config.tls is not None:
        try:  # a key others can read, a missing or broken file: one line on stderr, exit 1 (main)
            config.tls.check()
        except ValueError as exc:
            raise ConfigError(f"[tls]: {exc}") from None
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s {config.node.id} %(levelname)s %(name)s: %(message)s",
    )
    from coordinator.cluster.launcher.event_loop import run
    from coordinator.cluster.launcher.process import serve

    try:
        run(serve(config))
    except OSError as exc:
        print(f"coordinator node {config.node.id}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _address(node: NodeAddress) -> tuple[str, str, str, str]:
    return (node.id, node.raft, node.http, node.grpc)


def _prepare_data_dir(args: argparse.Namespace) -> Path:
    workers = getattr(args, "workers", 0)
    data_dir = private_dir(Path(args.data_dir).resolve())
    cluster_file = data_dir / "cluster.toml"
    wanted = local_cluster(nodes=args.nodes, host=args.host, base_port=args.base_port, data_dir=data_dir)
    wanted = dataclasses.replace(wanted, participant_key_file=data_dir / PARTICIPANT_KEY_FILE)
    if args.token:
        wanted = dataclasses.replace(wanted, token_file=data_dir / "api.token")
    if workers:
        from coordinator.cluster.worker.process import release_of_this_package

        wanted = dataclasses.replace(
            wanted,
            executor=dataclasses.replace(wanted.executor, mode="remote"),
            workers=WorkerSettings(
                ids=tuple(f"w{i}" for i in range(1, workers + 1)), releases=(release_of_this_package(),)
            ),
        )
    tls_dir = data_dir / "tls"
    if args.tls or args.mtls:
        wanted = dataclasses.replace(
            wanted,
            tls=TlsSettings(
                cert_file=str(tls_dir / f"{NODE_ID_PLACEHOLDER}.crt"),
                key_file=str(tls_dir / f"{NODE_ID_PLACEHOLDER}.key"),
                client_ca_file=tls_dir / "ca.crt" if args.mtls else None,
                peer=True,
                peer_ca_file=tls_dir / "ca.crt",
            ),
        )
    if cluster_file.exists():
        existing = load_cluster_file(cluster_file)
        if args.token and existing.token_file is None:
            raise ConfigError(
                f"{cluster_file} was created without --token; use another --data-dir for a cluster with a token"
            )
        if wanted.tls is not None and existing.tls != wanted.tls:
            flag = "--mtls" if args.mtls else "--tls"
            raise ConfigError(
                f"{cluster_file} was created without {flag}; use another --data-dir for a cluster with it"
            )
        if workers and not set(wanted.workers.ids) <= set(existing.workers.ids):
            raise ConfigError(
                f"{cluster_file} admits workers {list(existing.workers.ids)}, not w1..w{workers}; "
                "use another --data-dir"
            )
        if not workers and existing.executor.mode == "remote":
            raise ConfigError(f"{cluster_file} runs in remote executor mode: start it with --workers N")
        if [_address(n) for n in existing.nodes] != [_address(n) for n in wanted.nodes]:
            raise ConfigError(
                f"{cluster_file} describes another cluster ({len(existing.nodes)} nodes, "
                f"first HTTP {existing.nodes[0].http}); start with the same flags or use another --data-dir"
            )
    else:
        write_cluster_file(cluster_file, wanted)
    if not wanted.secret_file.exists():
        generate_secret(wanted.secret_file)
    read_secret(wanted.secret_file)
    config = load_cluster_file(cluster_file)
    if config.tls is not None and Path(config.tls.cert_file).parent == tls_dir:
        local_tls(tls_dir, [(n.id, n.http.rsplit(":", 1)[0]) for n in config.nodes])
        if config.tls.client_ca_file is not None and not (tls_dir / "client.crt").exists():
            issue(make_ca(tls_dir), tls_dir / "client.crt", tls_dir / "client.key", common_name="client", server=False)
    if config.token_file is not None and not config.token_file.exists():
        generate_secret(config.token_file)
    if config.participant_key_file is not None and not config.participant_key_file.exists():
        generate_secret(config.participant_key_file)
    return cluster_file


def _wait_ready(endpoints: list[str], timeout_s: float, token: str | None = None, **tls: Any) -> str | None:
    async def probe() -> str | None:
        deadline = time.monotonic() + timeout_s
        async with Coordinator(endpoints, timeout_s=1.0, attempts=1, token=token, **tls) as client:
            while time.monotonic() < deadline:
                for endpoint in endpoints:
                    try:
                        info = await client.cluster(endpoint)
                    except CoordinatorError:
                        continue
                    if info.leader:
                        return info.leader["id"]
                await asyncio.sleep(0.2)
        return None

    return asyncio.run(probe())


def cmd_up(args: argparse.Namespace) -> int:
    owner_only_umask()
    cluster_file = _prepare_data_dir(args)
    config = load_cluster_file(cluster_file)
    warning = insecure_bind_warning(config, list(config.nodes), args.insecure)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    supervisor = Supervisor(cluster_file, config, insecure=args.insecure)
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start_all()
    workers = list(config.workers.ids[: args.workers]) if args.workers else []
    worker_args: list[str] = []
    if config.tls is not None and config.tls.client_ca_file is not None:  # --mtls: the client certificate up issued
        client = Path(config.tls.cert_file).parent / "client"
        worker_args = ["--cert-file", f"{client}.crt", "--key-file", f"{client}.key"]
    for worker_id in workers:
        supervisor.start_worker(worker_id, worker_args)
    try:
        print(f"cluster file: {cluster_file}")
        for node in config.nodes:
            print(
                f"  {node.id}  http {node.http_url}  grpc {node.grpc}  raft {node.raft}  log {supervisor.log_path(node.id)}"
            )
        if workers:
            print(f"executor mode {config.executor.mode}: participant calls are made by the workers")
        for worker_id in workers:
            print(f"  {worker_id}  worker  log {supervisor.log_path(worker_id)}")
        token = read_secret(config.token_file, "the API token") if config.token_file else None
        if token:
            print(f"API token: {config.token_file} (clients: COORDINATOR_TOKEN=$(cat {config.token_file}))")
        if config.participant_key_file is not None:
            print(
                f"participant calls are signed with {config.participant_key_file} (key id "
                f"{config.participant_key_id}): give participants keys={{{config.participant_key_id!r}: key}}"
            )
        tls: dict[str, Any] = {}
        if config.tls is not None:
            tls = _tls_hints(config)
        leader = _wait_ready([n.http_url for n in config.nodes], timeout_s=15.0, token=token, **tls)
        print(f"leader: {leader}" if leader else "no leader yet (see the node logs)", flush=True)
        print(
            f"dashboard: {config.nodes[0].http_url}/ui/ (every node serves it"
            + ("; it asks for the API token" if token else "")
            + ")",
            flush=True,
        )
        print("Ctrl-C stops every node.", flush=True)
        reported: set[str] = set()
        while not stopping:
            for node_id, code in supervisor.exited().items():
                if node_id not in reported:
                    reported.add(node_id)
                    print(f"{node_id} exited with {code}; see {supervisor.log_path(node_id)}", flush=True)
            if all(node.id in reported for node in config.nodes):
                print("every node has exited", file=sys.stderr)
                return EXIT_FAILED
            time.sleep(0.2)
    finally:
        supervisor.stop_all()
        print("stopped every node" + (" and worker" if workers else ""))
    return EXIT_OK


def _tls_hints(config: ClusterConfig) -> dict[str, Any]:
    """Print what clients of a TLS cluster set; answer the files `up` itself uses to reach it."""
    tls = config.tls
    assert tls is not None
    ca = tls.peer_ca_file or tls.client_ca_file
    endpoints = ",".join(n.http_url for n in config.nodes)
    print(f"TLS: clients: COORDINATOR_ENDPOINTS={endpoints} COORDINATOR_CA_FILE={ca}", end="")
    files: dict[str, Any] = {"ca_file": str(ca) if ca else None}
    if tls.client_ca_file is not None:
        client = Path(tls.cert_file).parent / "client"
        print(f" COORDINATOR_CERT_FILE={client}.crt COORDINATOR_KEY_FILE={client}.key", end="")
        files.update(cert_file=f"{client}.crt", key_file=f"{client}.key")
    print(flush=True)
    return files


def cmd_worker(args: argparse.Namespace) -> int:
    die_with_parent()
    owner_only_umask()
    from coordinator.cluster.executor.dispatch import WorkerHello
    from coordinator.cluster.launcher.event_loop import run
    from coordinator.cluster.worker.process import WorkerOptions, WorkerRejected, release_of_this_package, serve

    cluster = load_cluster_file(args.config)
    services = tuple(s.strip() for s in (args.services or "").split(",") if s.strip())
    hello = WorkerHello(args.id, args.release or release_of_this_package(), services, args.capacity)
    problem = hello.problem()
    if problem is not None:
        raise UsageError(f"coordinator worker: {problem}")
    if args.id not in cluster.workers.ids:
        print(f"coordinator worker: note: {args.id!r} is not in [workers] ids of {args.config}", file=sys.stderr)
    token = _token(args) or (read_secret(cluster.token_file, "the API token") if cluster.token_file else None)
    key_file = cluster.participant_key_file
    cluster.participant_tls.check()
    tls = _client_tls(args)
    if cluster.tls is not None and (tls is None or tls.ca_file is None) and cluster.tls.peer_ca_file is not None:
        ca_file = str(cluster.tls.peer_ca_file)  # the CA of the node certificates
        tls = dataclasses.replace(tls, ca_file=ca_file) if tls is not None else ClientTls(ca_file=ca_file)
    options = WorkerOptions(
        hello,
        token=token,
        tls=tls,
        participant_key=read_secret(key_file, "the participant signing key").encode() if key_file else None,
    )
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        run(serve(cluster, options))
    except WorkerRejected as exc:
        print(f"coordinator worker {args.id}: the cluster refused its token: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_workers(args: argparse.Namespace) -> int:
    view = _run_client(args, lambda c: c.workers())
    rows = [
        [
            w["id"],
            w["release"],
            ",".join(w["services"]),
            str(w["capacity"]),
            str(w["in_flight"]),
            w["last_heartbeat"] or "-",
            "yes" if w["admitted"] else f"no: {w.get('reason') or '-'}",
        ]
        for w in view["workers"]
    ]
    print(f"mode {view['mode']}, {view['queued']} call(s) queued")
    if rows:
        print(_table(rows, ["WORKER", "RELEASE", "SERVICES", "CAPACITY", "IN FLIGHT", "LAST HEARTBEAT", "ADMITTED"]))
    else:
        print("no worker is connected")
    return EXIT_OK


# -- talking to a cluster -----------------------------------------------------------------
def _token(args: argparse.Namespace) -> str | None:
    if getattr(args, "token_file", None):
        return read_secret(Path(args.token_file), "the API token")
    return os.environ.get("COORDINATOR_TOKEN") or None


def _run_client(args: argparse.Namespace, action: Callable[[Coordinator], Any]) -> Any:
    async def go() -> Any:
        tls = _client_tls(args)
        files = dataclasses.asdict(tls) if tls is not None else {}
        async with Coordinator(_endpoints(args), token=_token(args), **files) as client:
            return await action(client)

    return asyncio.run(go())


def cmd_status(args: argparse.Namespace) -> int:
    async def gather(client: Coordinator) -> list[list[str]]:
        async def one(endpoint: str) -> list[str]:
            try:
                info = await client.cluster(endpoint)
            except CoordinatorError:
                return [endpoint, "-", "-", "-", "-", "-", "no"]
            leader = info.leader["id"] if info.leader else "-"
            return [
                info.node,
                info.role,
                str(info.term),
                str(info.commit_index),
                str(info.applied_index),
                leader,
                "yes",
            ]

        return list(await asyncio.gather(*(one(e) for e in client.endpoints)))

    rows = _run_client(args, gather)
    print(_table(rows, ["NODE", "ROLE", "TERM", "COMMIT", "APPLIED", "LEADER", "REACHABLE"]))
    return EXIT_OK if any(r[-1] == "yes" for r in rows) else EXIT_FAILED


def cmd_services_add(args: argparse.Namespace) -> int:
    if (args.url is None) == (args.grpc is None):
        raise UsageError("coordinator services add: give a URL or --grpc TARGET, not both")
    if args.tls and args.grpc is None:
        raise UsageError("coordinator services add: --tls is for --grpc TARGET; for a URL, https:// says it")
    service = _run_client(
        args, lambda c: c.put_service(args.name, args.url, grpc=args.grpc, tls=args.tls, force=args.force)
    )
    print(f"{service.name} -> {service.url or ('grpcs://' if service.tls else 'grpc://') + str(service.grpc)}")
    return EXIT_OK


def cmd_services_list(args: argparse.Namespace) -> int:
    services = _run_client(args, lambda c: c.list_services())
    rows = [[s.name, s.url or "-", s.grpc or "-", _transport_tls(s), s.updated_at] for s in services]
    print(_table(rows, ["NAME", "URL", "GRPC", "TLS", "UPDATED"]))
    return EXIT_OK


def _transport_tls(service: Any) -> str:
    """Whether calls to it are TLS: an https:// url, or a gRPC target registered with tls."""
    return "yes" if service.tls or (service.url or "").lower().startswith("https://") else "no"


def cmd_services_remove(args: argparse.Namespace) -> int:
    service = _run_client(args, lambda c: c.delete_service(args.name))
    print(f"removed {service.name}")
    return EXIT_OK


# -- sagas ----------------------------------------------------------------------------------
def _read_document(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise ValueError(f"{source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not valid JSON: {exc}") from None


def _print_saga(saga: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(saga.raw, indent=2))
        return
    print(f"saga {saga.id}: {saga.state}  (created {saga.created_at}, updated {saga.updated_at})")
    if saga.failure:
        print(f"failure: {saga.failure['reason']} at {saga.failure['step']}: {saga.failure['error']}")
    rows = [
        [s["name"], s["state"], str(s["attempts"]), json.dumps(s["output"])[:60], (s["error"] or "")[:60]]
        for s in saga.steps
    ]
    print(_table(rows, ["STEP", "STATE", "ATTEMPTS", "OUTPUT", "ERROR"]))
    _print_who(saga.history)


def _print_who(history: tuple[dict, ...]) -> None:
    """Who submitted, signalled and redrove (history records with ``by``):
    "submitted by ci at ...", "signal approve by ops-alice at ..."."""
    what = {"started": "submitted", "redrive": "redriven"}
    for record in history:
        if record.get("by"):
            action = f"signal {record.get('signal')}" if record["event"] == "signal" else what.get(record["event"])
            print(f"{action or record['event']} by {record['by']} at {record['at']}")


def cmd_saga_submit(args: argparse.Namespace) -> int:
    definition = _read_document(args.file)
    if not isinstance(definition, dict):
        raise ValueError(f"{args.file}: a saga definition is a JSON object")
    saga = _run_client(args, lambda c: c.submit_saga(definition))
    print(saga.id)
    return EXIT_OK


def cmd_saga_show(args: argparse.Namespace) -> int:
    _print_saga(_run_client(args, lambda c: c.get_saga(args.id)), args.json)
    return EXIT_OK


def _filters(args: argparse.Namespace) -> dict:
    """The list filters of the CLI flags that were given."""
    given = {
        "service": args.service,
        "q": args.match,
        "created_after": args.created_after,
        "created_before": args.created_before,
    }
    return {k: v for k, v in given.items() if v is not None}


def cmd_saga_list(args: argparse.Namespace) -> int:
    sagas = _run_client(args, lambda c: c.list_sagas(args.state, args.limit, order=args.order, **_filters(args)))
    rows = [[s.id, s.state, s.created_at, s.updated_at] for s in sagas]
    print(_table(rows, ["ID", "STATE", "CREATED", "UPDATED"]))
    return EXIT_OK


def cmd_saga_signal(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload) if args.payload is not None else None
    except ValueError as exc:
        raise UsageError(f"coordinator saga signal: JSON payload is not valid JSON: {exc}") from None
    answer = _run_client(args, lambda c: c.signal_saga(args.id, args.name, payload))
    print(f"signal {args.name} sent to {args.id} ({answer['state']})")
    return EXIT_OK


def cmd_saga_redrive(args: argparse.Namespace) -> int:
    filters = _filters(args)
    bulk = args.stuck or filters or args.limit is not None or args.dry_run or args.yes
    if (args.id is None) == (not bulk):
        raise UsageError("coordinator saga redrive: give a saga ID, or --stuck with filters, not both")
    if not bulk:
        answer = _run_client(args, lambda c: c.redrive_saga(args.id))
        print(f"{args.id}: {answer['state']}")
        return EXIT_OK
    if not args.stuck:
        raise UsageError("coordinator saga redrive: the bulk form redrives stuck sagas: add --stuck")
    preview = _run_client(args, lambda c: c.redrive_sagas(limit=args.limit, dry_run=True, **filters))
    shown = ", ".join(preview["ids"][:10]) + (", ..." if len(preview["ids"]) > 10 else "")
    print(f"{preview['matched']} stuck saga(s) match; this call would redrive {len(preview['ids'])}: {shown or '-'}")
    if args.dry_run or not preview["ids"]:
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("coordinator saga redrive: not a terminal to confirm on; add --yes")
        try:
            answer = input(f"redrive {len(preview['ids'])} saga(s)? [y/N] ")
        except EOFError:  # Ctrl-D answers no
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("\nnothing redriven" if not answer else "nothing redriven")
            return EXIT_OK
    answer = _run_client(args, lambda c: c.redrive_sagas(limit=len(preview["ids"]), **filters))
    print(f"redriven {answer['redriven']} of {answer['matched']} matching; {answer['remaining']} left for another call")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    endpoints = tuple(e.strip() for e in args.endpoints.split(",") if e.strip()) if args.endpoints else None
    try:
        options = bench_run.BenchOptions(
            args.workload,
            args.concurrency,
            args.duration,
            args.warmup,
            args.nodes,
            endpoints,
            args.baseline,
            args.runs,
            args.profile,
            args.tls,
            args.dashboards,
            args.workers,
        )
    except ValueError as exc:
        raise UsageError(f"coordinator bench: {exc}") from None
    try:
        result = asyncio.run(bench_run.run(options))
    except DashboardsUnavailable as exc:
        raise UsageError(f"coordinator bench: {exc}") from None
    print(bench_run.render(result))
    bench_run.dump(result, args.json)
    return EXIT_OK if result["completed"] else EXIT_FAILED


def cmd_chaos(args: argparse.Namespace) -> int:
    faults = tuple(f.strip() for f in (args.faults or DEFAULT_CHAOS_FAULTS).split(",") if f.strip())
    if not 0 <= args.workers <= 9:
        raise UsageError("coordinator chaos: --workers: 0 to 9")
    if args.workers and args.faults is None:
        faults += WORKER_FAULTS
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        raise UsageError(f"coordinator chaos: --faults: unknown fault {unknown[0]!r} (known: {', '.join(FAULTS)})")
    try:
        fault_interval_s, partition_s = seconds_range(args.fault_interval), seconds_range(args.partition_s)
    except ValueError as exc:
        raise UsageError(f"coordinator chaos: {exc}") from None
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    settings = ChaosSettings(
        nodes=args.nodes,
        duration_s=args.duration,
        faults=faults,
        seed=seed,
        rate_per_s=args.rate,
        base_port=args.base_port,
        report=args.report,
        aim=args.aim,
        fault_interval_s=fault_interval_s,
        partition_s=partition_s,
        tls=args.tls,
        workers=args.workers,
    )
    try:
        passed, _ = asyncio.run(run_chaos(settings))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM: nodes stopped, namespaces removed
        print("\nchaos: stopped before the end", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if passed else EXIT_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    return asyncio.run(run_demo(ui=args.ui))


# -- transactions -------------------------------------------------------------------------
def cmd_tx_submit(args: argparse.Namespace) -> int:
    definition = _read_document(args.file)
    if not isinstance(definition, dict):
        raise ValueError(f"{args.file}: a transaction definition is a JSON object")
    print(_run_client(args, lambda c: c.submit_transaction(definition)).id)
    return EXIT_OK


def cmd_tx_show(args: argparse.Namespace) -> int:
    tx = _run_client(args, lambda c: c.get_transaction(args.id))
    if args.json:
        print(json.dumps(tx.raw, indent=2))
        return EXIT_OK
    print(
        f"transaction {tx.id}: {tx.state}, decision {tx.decision or '-'}  (created {tx.created_at}, updated {tx.updated_at})"
    )
    print(_table([[p["service"], p["vote"] or "-", p["state"]] for p in tx.participants], ["SERVICE", "VOTE", "STATE"]))
    _print_who(tx.history)
    return EXIT_OK


def cmd_tx_list(args: argparse.Namespace) -> int:
    transactions = _run_client(args, lambda c: c.list_transactions(args.state, args.limit))
    print(
        _table(
            [[t.id, t.state, t.decision or "-", t.updated_at] for t in transactions],
            ["ID", "STATE", "DECISION", "UPDATED"],
        )
    )
    return EXIT_OK


# -- the parser -------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coordinator", description="A Raft-replicated saga and 2PC coordinator.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_filters(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--service", help="only workflows calling this service")
        p.add_argument("--match", metavar="TEXT", help="only ids containing TEXT")
        p.add_argument("--created-after", metavar="TIME", help="ISO-8601, e.g. 2026-12-04T14:00:00Z")
        p.add_argument("--created-before", metavar="TIME", help="ISO-8601, exclusive")
        return p

    def with_endpoints(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--endpoints", help="URL,URL,... (else $COORDINATOR_ENDPOINTS, else the local defaults)")
        p.add_argument("--token-file", help="the API token file (else $COORDINATOR_TOKEN)")
        p.add_argument("--ca-file", help="the CA of the nodes' TLS certificates (else $COORDINATOR_CA_FILE)")
        p.add_argument("--cert-file", help="a client certificate for mutual TLS (else $COORDINATOR_CERT_FILE)")
        p.add_argument("--key-file", help="its private key (else $COORDINATOR_KEY_FILE)")
        return p

    up = commands.add_parser("up", help="start a local cluster of N nodes")
    up.add_argument("--nodes", type=_positive_int, default=3)
    up.add_argument("--data-dir", default=".coordinator")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--base-port", type=_positive_int, default=7100)
    up.add_argument("--token", action="store_true", help="require an API token (generated in DATA_DIR/api.token)")
    up.add_argument(
        "--workers",
        type=_positive_int,
        default=0,
        metavar="N",
        help="also start N transition workers (w1..wN) and run the cluster in remote executor mode",
    )
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve the APIs (and Raft) over TLS: a local CA and node certificates in DATA_DIR/tls",
    )
    up.add_argument(
        "--mtls",
        action="store_true",
        help="--tls, and clients must present a certificate (one is issued: DATA_DIR/tls/client.crt and .key)",
    )
    up.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback --host without --token (prints a warning)"
    )
    up.set_defaults(run=cmd_up)

    node = commands.add_parser("node", help="run one node of a cluster file")
    node.add_argument("--config", required=True)
    node.add_argument("--id", required=True)
    node.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    node.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without an API token (prints a warning)"
    )
    node.set_defaults(run=cmd_node)

    worker = commands.add_parser("worker", help="run a transition worker: it makes the calls the leader leases it")
    worker.add_argument("--config", required=True)
    worker.add_argument("--id", required=True, help="one of [workers] ids in the cluster file")
    worker.add_argument("--release", help="the release it says it is (default: the installed package's version)")
    worker.add_argument("--services", metavar="NAME,NAME", help="the services it can reach (default: every one)")
    worker.add_argument("--capacity", type=_positive_int, default=16, help="calls it makes at once (1-1024)")
    worker.add_argument("--token-file", help="the API token file (else $COORDINATOR_TOKEN, else token_file)")
    worker.add_argument("--ca-file", help="the CA of the nodes' TLS certificates (else [tls] peer_ca_file)")
    worker.add_argument("--cert-file", help="a client certificate for mutual TLS (else $COORDINATOR_CERT_FILE)")
    worker.add_argument("--key-file", help="its private key (else $COORDINATOR_KEY_FILE)")
    worker.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    worker.set_defaults(run=cmd_worker)

    with_endpoints(commands.add_parser("workers", help="the leader's transition workers")).set_defaults(run=cmd_workers)

    with_endpoints(commands.add_parser("status", help="a table of every node")).set_defaults(run=cmd_status)

    services = commands.add_parser("services", help="the service registry")
    service_commands = services.add_subparsers(dest="services_command", required=True, parser_class=_Parser)
    add = with_endpoints(service_commands.add_parser("add", help="register or update a service"))
    add.add_argument("name")
    add.add_argument("url", nargs="?")
    add.add_argument("--grpc", metavar="TARGET")
    add.add_argument("--tls", action="store_true", help="the --grpc target speaks TLS (an https:// URL says it itself)")
    add.add_argument("--force", action="store_true", help="re-point a service that running workflows use (recorded)")
    add.set_defaults(run=cmd_services_add)
    with_endpoints(service_commands.add_parser("list", help="list services")).set_defaults(run=cmd_services_list)
    remove = with_endpoints(service_commands.add_parser("remove", help="remove a service"))
    remove.add_argument("name")
    remove.set_defaults(run=cmd_services_remove)

    demo = commands.add_parser("demo", help="run the demo scenarios on a local three-node cluster")
    demo.add_argument(
        "--ui",
        action="store_true",
        help="then keep the cluster up with a slow stream of demo workflows for the dashboard, until Ctrl-C",
    )
    demo.set_defaults(run=cmd_demo)

    chaos = commands.add_parser("chaos", help="run a cluster under faults and check what clients and participants saw")
    chaos.add_argument("--nodes", type=_positive_int, default=3)
    chaos.add_argument("--duration", type=float, default=60.0)
    chaos.add_argument(
        "--faults",
        help=f"comma-separated, of {','.join(FAULTS)} (default {DEFAULT_CHAOS_FAULTS}; with --workers, also the worker faults)",
    )
    chaos.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the cluster in remote executor mode with N transition workers, and kill and pause them too",
    )
    chaos.add_argument("--seed", type=int)
    chaos.add_argument("--rate", type=float, default=20.0, help="target client operations per second")
    chaos.add_argument("--base-port", type=_positive_int)
    chaos.add_argument("--report", metavar="FILE", help="write the JSON report here")
    chaos.add_argument(
        "--aim",
        choices=["mixed", "leader", "random"],
        default="mixed",
        help="aim faults at the leader, at a random node, or mixed (the leader 70%% of the time)",
    )
    chaos.add_argument(
        "--fault-interval", default="4,8", metavar="LOW,HIGH", help="seconds from one fault's start to the next"
    )
    chaos.add_argument("--partition-s", default="2,6", metavar="LOW,HIGH", help="how long a partition lasts")
    chaos.add_argument(
        "--tls", action="store_true", help="the cluster's APIs and Raft over TLS (a CA of the run's own)"
    )
    chaos.set_defaults(run=cmd_chaos)

    add_simulate_parser(commands)

    bench = commands.add_parser("bench", help="measure workflow throughput and latency")
    bench.add_argument("--nodes", type=_positive_int, default=3)
    bench.add_argument("--workload", choices=["saga2", "saga4", "twopc3", "registry", "failover"], default="saga2")
    bench.add_argument("--concurrency", type=_positive_int, default=16)
    bench.add_argument("--duration", type=float, default=10.0)
    bench.add_argument("--warmup", type=float, default=2.0)
    bench.add_argument("--json", metavar="FILE")
    bench.add_argument("--endpoints", help="use a running cluster instead of starting one")
    bench.add_argument(
        "--baseline",
        choices=["pysyncobj", "etcd"],
        help="also measure raw PySyncObj, or etcd (registry only), and print the ratio",
    )
    bench.add_argument("--runs", type=_positive_int, default=20, help="leader kills of --workload failover")
    bench.add_argument(
        "--profile",
        nargs="?",
        const="bench-profile.folded",
        metavar="FILE",
        help="py-spy the leader; folded stacks to FILE",
    )
    bench.add_argument(
        "--tls",
        action="store_true",
        help="the cluster it starts serves its APIs and Raft over TLS (with --endpoints: $COORDINATOR_CA_FILE...)",
    )
    bench.add_argument(
        "--dashboards",
        type=int,
        default=0,
        metavar="N",
        help="run the workload without, then with N dashboards open in headless Chromium (on the followers)",
    )
    bench.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="run the workload in local executor mode, then in remote mode with N workers, and compare "
        "(each worker's --capacity: the calls the clients can have in flight over N, at least 16; "
        "--profile then writes a file per mode: bench-profile-local.folded, bench-profile-remote.folded)",
    )
    bench.set_defaults(run=cmd_bench)

    sagas = commands.add_parser("saga", help="sagas")
    saga_commands = sagas.add_subparsers(dest="saga_command", required=True, parser_class=_Parser)
    submit = with_endpoints(saga_commands.add_parser("submit", help="submit a saga definition (JSON file or -)"))
    submit.add_argument("file")
    submit.set_defaults(run=cmd_saga_submit)
    show = with_endpoints(saga_commands.add_parser("show", help="show one saga"))
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="print the saga object as JSON")
    show.set_defaults(run=cmd_saga_show)
    listing = with_endpoints(saga_commands.add_parser("list", help="list sagas"))
    listing.add_argument(
        "--state",
        choices=["started", "running", "completed", "failed", "timed_out", "compensating", "compensated", "stuck"],
    )
    listing.add_argument("--limit", type=_positive_int, default=100)
    listing.add_argument("--order", choices=["asc", "desc"], default="asc", help="by creation time")
    with_filters(listing)
    listing.set_defaults(run=cmd_saga_list)
    signal_parser = with_endpoints(saga_commands.add_parser("signal", help="send a signal to an await step"))
    signal_parser.add_argument("id")
    signal_parser.add_argument("name")
    signal_parser.add_argument("payload", nargs="?", help="JSON payload")
    signal_parser.set_defaults(run=cmd_saga_signal)
    redrive = with_endpoints(
        saga_commands.add_parser(
            "redrive",
            help="resume compensating a stuck saga, or (--stuck) every stuck saga a filter selects",
            description="coordinator saga redrive ID, or coordinator saga redrive --stuck [filters] "
            "[--limit N] [--dry-run] [--yes]: a preview first, then a confirmation (or --yes).",
        )
    )
    redrive.add_argument("id", nargs="?")
    redrive.add_argument("--stuck", action="store_true", help="the bulk form: stuck sagas matching the filters")
    with_filters(redrive)
    redrive.add_argument("--limit", type=_positive_int, help="at most this many (the server bounds it too)")
    redrive.add_argument("--dry-run", action="store_true", help="only say which sagas would be redriven")
    redrive.add_argument("--yes", action="store_true", help="no confirmation")
    redrive.set_defaults(run=cmd_saga_redrive)

    transactions = commands.add_parser("tx", help="two-phase commit transactions")
    tx_commands = transactions.add_subparsers(dest="tx_command", required=True, parser_class=_Parser)
    tx_submit = with_endpoints(
        tx_commands.add_parser("submit", help="submit a transaction definition (JSON file or -)")
    )
    tx_submit.add_argument("file")
    tx_submit.set_defaults(run=cmd_tx_submit)
    tx_show = with_endpoints(tx_commands.add_parser("show", help="show one transaction"))
    tx_show.add_argument("id")
    tx_show.add_argument("--json", action="store_true", help="print the transaction object as JSON")
    tx_show.set_defaults(run=cmd_tx_show)
    tx_list = with_endpoints(tx_commands.add_parser("list", help="list transactions"))
    tx_list.add_argument("--state", choices=["preparing", "committing", "committed", "aborting", "aborted"])
    tx_list.add_argument("--limit", type=_positive_int, default=100)
    tx_list.set_defaults(run=cmd_tx_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, CoordinatorError, ValueError) as exc:
        print(f"coordinator: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_FAILED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
