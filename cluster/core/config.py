"""The cluster file and the one frozen config a node process runs with.

``cluster.toml`` (written by ``coordinator up``, or by hand for several hosts)::

    [cluster]
    secret_file = "cluster.secret"     # relative paths are relative to this file
    data_dir = "."                     # node n1 keeps its state in DATA_DIR/n1
    token_file = "api.token"           # optional: one API token, named "admin", role admin
    tokens_file = "tokens.toml"        # optional: named tokens with roles (cluster/core/tokens.py)
    http_body_bytes_max = 1048576
    participant_key_file = "participant.key"  # optional: sign every participant call with it
    participant_key_id = "k1"

    [raft]                             # optional; see consensus.RaftSettings
    election_timeout_min_s = 0.4

    [services]                         # optional: which participant addresses may be called
    allowed_networks = ["10.20.0.0/16"]    # CIDRs
    allowed_hosts = ["payments.internal"]  # host names, exact
    ca_file = "participants-ca.crt"        # optional: verify TLS participants against it
    client_cert_file = "leader.crt"        # optional, both or neither: the certificate
    client_key_file = "leader.key"         # shown to participants (mutual TLS)

    [api]                              # optional: who may talk to the HTTP API from a browser
    allowed_origins = ["https://ops.example.com"]  # Origin headers accepted (default: none)
    allowed_hosts = ["coordinator.internal"]       # Host names accepted besides the nodes' own

    [tls]                              # optional; see coordinator.cluster.core.tls
    cert_file = "tls/{id}.crt"
    key_file = "tls/{id}.key"

    [limits]                           # optional; see coordinator.cluster.core.limits.Limits
    state_bytes_max = 268435456

    [executor]                         # optional; see coordinator.cluster.core.executor_settings
    mode = "remote"                    # "local" (default) | "remote" | "auto": who calls participants

    [workers]                          # optional: the transition workers it admits
    ids = ["w1", "w2"]                 # the worker ids it knows (none by default)
    releases = ["0.1.0"]               # the releases it admits (empty: any)
    heartbeat_s = 1.0
    lease_s = 5.0

    [[nodes]]
    id = "n1"
    raft = "127.0.0.1:7101"
    http = "127.0.0.1:8101"
    grpc = "127.0.0.1:9101"

``participant_key_file`` (cluster/executor/http_caller.py, ``Signer``): when set, the
leader signs every participant call (``Coordinator-Signature``, HMAC-SHA256
under this key, named ``participant_key_id``) and participants built on the
kit verify it (``keys={"k1": key}``). To rotate: give the participants the
new key beside the old one, point the cluster file at the new file and id,
restart the nodes one at a time, then drop the old key from the participants.

``[api]`` (cluster/api/http_api.py): a request with an ``Origin`` header not
listed is refused 403; a ``Host`` that is not a node's configured host, a
loopback name (localhost, 127.0.0.0/8, ::1) or listed is refused 421 (DNS
rebinding); a node bound to 0.0.0.0 or :: also accepts any IP address as
Host (a rebinding page always sends a name).

``[services]`` (cluster/core/netpolicy.py): without either list, participants
may be on loopback and private networks only (127.0.0.0/8, ::1, 10/8,
172.16/12, 192.168/16, fc00::/7); with a list, only what it lists.
Link-local and cloud metadata addresses (169.254.0.0/16, fe80::/10, their
IPv4-mapped and NAT64 forms, fd00:ec2::254, ...) are refused in either case
unless a listed network lies inside them (e.g. "169.254.169.254/32"). The
check runs on what a name resolves to when it is called.

``[services]`` TLS (cluster/core/tls.py, ``ParticipantTls``): a participant
registered at an ``https://`` URL, or as ``{"grpc": "host:port", "tls":
true}``, is called over TLS, its certificate chain and host name verified
against ``ca_file`` (a PEM bundle; without it, the system's CAs). With
``client_cert_file`` and ``client_key_file`` the leader presents that
certificate to every TLS participant, for participants that require one; the
key must be the owner's alone (0600), else the node refuses to start. A
participant whose certificate does not verify is a failed connection: the
call's outcome is unknown, as with a refused one. ``http://`` and plain gRPC
participants are called as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import secrets
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.cluster.core.executor_settings import ExecutorSettings, WorkerSettings
from coordinator.cluster.core.files import PRIVATE_FILE_MODE, owner_only_problem
from coordinator.cluster.core.limits import Limits
from coordinator.cluster.core.netpolicy import ServicePolicy, literal_address
from coordinator.cluster.core.tls import NodeTls, ParticipantTls, TlsSettings
from coordinator.cluster.core.tokens import (
    SINGLE_TOKEN_NAME,
    TOKENS_FILE_BYTES_MAX,
    Token,
    TokenFileError,
    TokenTable,
    parse_tokens,
)
from coordinator.consensus import RaftSettings

__all__ = [
    "ApiSettings",
    "ConfigError",
    "NodeAddress",
    "ClusterConfig",
    "NodeConfig",
    "load_cluster_file",
    "write_cluster_file",
    "local_cluster",
    "generate_secret",
    "load_tokens",
    "read_private_file",
    "read_secret",
    "NODES_MAX",
    "HTTP_BODY_BYTES_DEFAULT",
]

NODES_MAX = 9
PARTICIPANT_KEY_ID_DEFAULT = "k1"
HTTP_BODY_BYTES_DEFAULT = 1024 * 1024
HTTP_BODY_BYTES_MAX = 16 * 1024 * 1024
SECRET_CHARS_MIN = 16
# A secret or token is one line; a bigger file is not one.
SECRET_FILE_BYTES_MAX = 4096
_NODE_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}\Z")
# A participant key id as the signing wire format allows it (KEY_ID_PATTERN of
# client/participant/signing.py; tests/cluster/test_config.py checks the two
# agree). The core imports nothing of the client, so it has its own copy.
PARTICIPANT_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ConfigError(ValueError):
    """A cluster file or flag that cannot be used; the message says which and why."""


def parse_address(value: object, where: str) -> str:
    if not isinstance(value, str) or value.count(":") != 1:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    host, port = value.split(":")
    if not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}: expected HOST:PORT with a port in 1-65535, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class NodeAddress:
    id: str
    raft: str
    http: str
    grpc: str
    tls: bool = False  # the cluster file has [tls]: the APIs speak TLS only

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.http}"


API_LIST_MAX = 64
_ORIGIN = re.compile(r"https?://[a-z0-9.-]{1,253}(:[0-9]{1,5})?\Z|https?://\[[0-9a-f:.]{2,45}\](:[0-9]{1,5})?\Z")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``[api]``: what the HTTP API accepts from browsers (cluster/api/http_api.py)."""

    allowed_origins: tuple[str, ...] = ()  # lower case "scheme://host[:port]"
    allowed_hosts: tuple[str, ...] = ()  # lower case host names or addresses, no port

    def __post_init__(self) -> None:
        if len(self.allowed_origins) > API_LIST_MAX or len(self.allowed_hosts) > API_LIST_MAX:
            raise ConfigError(f"api: at most {API_LIST_MAX} origins and {API_LIST_MAX} hosts")


def _api(raw: dict) -> ApiSettings:
    unknown = set(raw) - {"allowed_origins", "allowed_hosts"}
    if unknown:
        raise ConfigError(f"api.{sorted(unknown)[0]}: unknown setting")
    origins, hosts = raw.get("allowed_origins", []), raw.get("allowed_hosts", [])
    for key, value in (("allowed_origins", origins), ("allowed_hosts", hosts)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"api.{key}: must be a list of strings")
    for i, origin in enumerate(origins):
        if not _ORIGIN.match(origin.lower()):
            raise ConfigError(
                f'api.allowed_origins[{i}]: {origin!r} is not an origin like "https://host:port" (no path)'
            )
    for i, host in enumerate(hosts):
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not (_HOST.match(bare) or literal_address(bare) is not None):
            raise ConfigError(f"api.allowed_hosts[{i}]: {host!r} is not a host name or address (no port)")
    return ApiSettings(
        allowed_origins=tuple(o.lower() for o in origins),
        allowed_hosts=tuple((h[1:-1] if h.startswith("[") else h).lower().rstrip(".") for h in hosts),
    )


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    nodes: tuple[NodeAddress, ...]
    secret_file: Path
    data_dir: Path
    raft: RaftSettings = field(default_factory=RaftSettings)
    http_body_bytes_max: int = HTTP_BODY_BYTES_DEFAULT
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)
    workers: WorkerSettings = field(default_factory=WorkerSettings)  # [workers]: the transition workers admitted
    token_file: Path | None = None  # when set, every API request needs "Authorization: Bearer TOKEN"
    tokens_file: Path | None = None  # named tokens with roles (cluster/core/tokens.py)
    participant_key_file: Path | None = None  # when set, every participant call is signed with it
    participant_key_id: str = PARTICIPANT_KEY_ID_DEFAULT
    services: ServicePolicy = field(default_factory=ServicePolicy)  # [services]: which participants may be called
    participant_tls: ParticipantTls = field(default_factory=ParticipantTls)  # [services]: TLS to participants
    api: ApiSettings = field(default_factory=ApiSettings)  # [api]: origins and Host names the HTTP API accepts
    limits: Limits = field(default_factory=Limits)
    tls: TlsSettings | None = None  # [tls]: the APIs (and with peer = true, Raft) over TLS

    def __post_init__(self) -> None:
        if any(n.tls != (self.tls is not None) for n in self.nodes):
            object.__setattr__(
                self, "nodes", tuple(dataclasses.replace(n, tls=self.tls is not None) for n in self.nodes)
            )
        if not 1 <= len(self.nodes) <= NODES_MAX:
            raise ConfigError(f"nodes: a cluster has 1 to {NODES_MAX} nodes, got {len(self.nodes)}")
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ConfigError("nodes: node ids must be unique")
        if set(ids) & set(self.workers.ids):
            raise ConfigError(f"workers.ids: {sorted(set(ids) & set(self.workers.ids))[0]!r} is a node's id")
        addresses = [a for n in self.nodes for a in (n.raft, n.http, n.grpc)]
        if len(set(addresses)) != len(addresses):
            raise ConfigError("nodes: every raft, http and grpc address must be distinct")
        if not 0 < self.http_body_bytes_max <= HTTP_BODY_BYTES_MAX:
            raise ConfigError(f"cluster.http_body_bytes_max: must be in 1..{HTTP_BODY_BYTES_MAX}")
        if not isinstance(self.participant_key_id, str) or not PARTICIPANT_KEY_ID.fullmatch(self.participant_key_id):
            raise ConfigError("cluster.participant_key_id: 1 to 64 of A-Z a-z 0-9 . _ -")

    def node(self, node_id: str) -> NodeAddress:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise ConfigError(
            f"--id: no node {node_id!r} in the cluster file (have: {', '.join(n.id for n in self.nodes)})"
        )

    def by_raft_address(self, raft: str | None) -> NodeAddress | None:
        return next((n for n in self.nodes if n.raft == raft), None)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    cluster: ClusterConfig
    node: NodeAddress
    secret: str = field(repr=False)
    # The API tokens (token_file and tokens_file); None: the API is open.
    tokens: TokenTable | None = field(default=None, repr=False)
    participant_key: bytes | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.cluster.data_dir / self.node.id

    @property
    def tls(self) -> NodeTls | None:
        """This node's TLS files, or None without ``[tls]``."""
        return self.cluster.tls.for_node(self.node.id) if self.cluster.tls is not None else None

    @property
    def peers(self) -> tuple[NodeAddress, ...]:
        return tuple(n for n in self.cluster.nodes if n.id != self.node.id)


def _table(doc: dict, key: str) -> dict:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table")
    return value


def _node(raw: object, i: int) -> NodeAddress:
    where = f"nodes[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(raw) - {"id", "raft", "http", "grpc"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown field")
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
        raise ConfigError(f"{where}.id: must match [a-z0-9][a-z0-9-]{{0,31}}")
    return NodeAddress(
        id=node_id,
        raft=parse_address(raw.get("raft"), f"{where}.raft"),
        http=parse_address(raw.get("http"), f"{where}.http"),
        grpc=parse_address(raw.get("grpc"), f"{where}.grpc"),
    )


def _settings(cls: type, raw: dict, section: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown setting")
        expected = known[key].type
        if expected == "bool" and not isinstance(value, bool):
            raise ConfigError(f"{section}.{key}: must be true or false")
        if expected in ("float", "int") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{section}.{key}: must be a number")
        values[key] = int(value) if expected == "int" else value
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{section}: {exc}") from None


def load_cluster_file(path: str | os.PathLike) -> ClusterConfig:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such cluster file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"cluster", "raft", "executor", "workers", "services", "api", "limits", "tls", "nodes"}
    if unknown:
        raise ConfigError(f"{path}: unknown section [{sorted(unknown)[0]}]")
    cluster = _table(doc, "cluster")
    unknown = set(cluster) - {
        "secret_file",
        "data_dir",
        "http_body_bytes_max",
        "token_file",
        "tokens_file",
        "participant_key_file",
        "participant_key_id",
    }
    if unknown:
        raise ConfigError(f"cluster.{sorted(unknown)[0]}: unknown field")
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        raise ConfigError(f"{path}: needs [[nodes]] entries")
    base = path.parent
    secret_file = cluster.get("secret_file")
    if not isinstance(secret_file, str) or not secret_file:
        raise ConfigError("cluster.secret_file: required (the Raft port always runs with the cluster secret)")
    token_file = cluster.get("token_file")
    if token_file is not None and (not isinstance(token_file, str) or not token_file):
        raise ConfigError("cluster.token_file: must be a file name")
    tokens_file = cluster.get("tokens_file")
    if tokens_file is not None and (not isinstance(tokens_file, str) or not tokens_file):
        raise ConfigError("cluster.tokens_file: must be a file name")
    key_file = cluster.get("participant_key_file")
    if key_file is not None and (not isinstance(key_file, str) or not key_file):
        raise ConfigError("cluster.participant_key_file: must be a file name")
    key_id = cluster.get("participant_key_id", PARTICIPANT_KEY_ID_DEFAULT)
    body_max = cluster.get("http_body_bytes_max", HTTP_BODY_BYTES_DEFAULT)
    if isinstance(body_max, bool) or not isinstance(body_max, int):
        raise ConfigError("cluster.http_body_bytes_max: must be an integer")
    return ClusterConfig(
        nodes=tuple(_node(raw, i) for i, raw in enumerate(nodes)),
        secret_file=(base / secret_file).resolve(),
        data_dir=(base / str(cluster.get("data_dir", "."))).resolve(),
        raft=_settings(RaftSettings, _table(doc, "raft"), "raft"),
        executor=_settings(ExecutorSettings, _table(doc, "executor"), "executor"),
        workers=_workers(_table(doc, "workers")),
        limits=_settings(Limits, _table(doc, "limits"), "limits"),
        http_body_bytes_max=body_max,
        token_file=(base / token_file).resolve() if token_file else None,
        tokens_file=(base / tokens_file).resolve() if tokens_file else None,
        participant_key_file=(base / key_file).resolve() if key_file else None,
        participant_key_id=key_id,
        services=_services(_table(doc, "services")),
        participant_tls=_participant_tls(_table(doc, "services"), base),
        api=_api(_table(doc, "api")),
        tls=_tls(doc["tls"], base) if "tls" in doc else None,
    )


def _workers(raw: dict) -> WorkerSettings:
    unknown = set(raw) - {"ids", "releases", "heartbeat_s", "lease_s"}
    if unknown:
        raise ConfigError(f"workers.{sorted(unknown)[0]}: unknown setting")
    values: dict = {}
    for key in ("ids", "releases"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"workers.{key}: must be a list of strings")
        values[key] = tuple(value)
    for key in ("heartbeat_s", "lease_s"):
        if key in raw:
            if isinstance(raw[key], bool) or not isinstance(raw[key], (int, float)):
                raise ConfigError(f"workers.{key}: must be a number")
            values[key] = float(raw[key])
    try:
        return WorkerSettings(**values)
    except ValueError as exc:
        raise ConfigError(f"workers.{exc}") from None


def _tls(raw: object, base: Path) -> TlsSettings:
    if not isinstance(raw, dict):
        raise ConfigError("[tls] must be a table")
    unknown = set(raw) - {"cert_file", "key_file", "client_ca_file", "peer", "peer_ca_file"}
    if unknown:
        raise ConfigError(f"tls.{sorted(unknown)[0]}: unknown setting")
    files: dict[str, Path | None] = {}
    for key in ("cert_file", "key_file", "client_ca_file", "peer_ca_file"):
        value = raw.get(key)
        if value is None and key in ("cert_file", "key_file"):
            raise ConfigError(f"tls.{key}: required in [tls]")
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"tls.{key}: must be a file name")
        files[key] = (base / value).absolute() if value else None
    peer = raw.get("peer", False)
    if not isinstance(peer, bool):
        raise ConfigError("tls.peer: must be true or false")
    if peer and files["peer_ca_file"] is None:
        raise ConfigError("tls.peer_ca_file: required with peer = true (the CA of the node certificates)")
    return TlsSettings(
        cert_file=str(files["cert_file"]),
        key_file=str(files["key_file"]),
        client_ca_file=files["client_ca_file"],
        peer=peer,
        peer_ca_file=files["peer_ca_file"],
    )


_SERVICES_TLS = ("ca_file", "client_cert_file", "client_key_file")


def _services(raw: dict) -> ServicePolicy:
    unknown = set(raw) - {"allowed_networks", "allowed_hosts", *_SERVICES_TLS}
    if unknown:
        raise ConfigError(f"services.{sorted(unknown)[0]}: unknown setting")
    lists = {}
    for key in ("allowed_networks", "allowed_hosts"):
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise ConfigError(f"services.{key}: must be a list of strings")
        lists[key] = value
    try:
        return ServicePolicy.parse(lists["allowed_networks"], lists["allowed_hosts"])
    except ValueError as exc:
        raise ConfigError(f"services.{exc}") from None


def _participant_tls(raw: dict, base: Path) -> ParticipantTls:
    """The TLS settings of ``[services]``; the files are checked when a node starts."""
    files: dict[str, Path | None] = {}
    for key in _SERVICES_TLS:
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"services.{key}: must be a file name")
        files[key] = (base / value).absolute() if value else None
    try:
        return ParticipantTls(**files)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if any(c in text for c in '"\\\n'):
        raise ConfigError(f"cannot write {text!r} to the cluster file")
    return f'"{text}"'


def write_cluster_file(path: str | os.PathLike, config: ClusterConfig) -> None:
    path = Path(path)
    base = path.parent.resolve()

    def rel(p: Path) -> str:
        return os.path.relpath(p, base)

    lines = [
        "# Written by `coordinator up`. One [[nodes]] entry per node.",
        "[cluster]",
        f"secret_file = {_toml_value(rel(config.secret_file))}",
        f"data_dir = {_toml_value(rel(config.data_dir))}",
        f"http_body_bytes_max = {config.http_body_bytes_max}",
    ]
    if config.token_file is not None:
        lines.append(f"token_file = {_toml_value(rel(config.token_file))}")
    if config.tokens_file is not None:
        lines.append(f"tokens_file = {_toml_value(rel(config.tokens_file))}")
    if config.participant_key_file is not None:
        lines.append(f"participant_key_file = {_toml_value(rel(config.participant_key_file))}")
        lines.append(f"participant_key_id = {_toml_value(config.participant_key_id)}")
    lines += ["", "[raft]"]
    for f in dataclasses.fields(RaftSettings):
        lines.append(f"{f.name} = {_toml_value(getattr(config.raft, f.name))}")
    lines += ["", "[executor]"]
    for f in dataclasses.fields(ExecutorSettings):
        lines.append(f"{f.name} = {_toml_value(getattr(config.executor, f.name))}")
    workers = config.workers
    if workers != WorkerSettings():
        lines += [
            "",
            "[workers]",
            "ids = [" + ", ".join(_toml_value(i) for i in workers.ids) + "]",
            "releases = [" + ", ".join(_toml_value(r) for r in workers.releases) + "]",
            f"heartbeat_s = {_toml_value(workers.heartbeat_s)}",
            f"lease_s = {_toml_value(workers.lease_s)}",
        ]
    policy, participant_tls = config.services, config.participant_tls
    if policy.configured or participant_tls.configured:
        lines += ["", "[services]"]
    if policy.configured:
        lines += [
            "allowed_networks = [" + ", ".join(_toml_value(str(n)) for n in policy.allowed_networks) + "]",
            "allowed_hosts = [" + ", ".join(_toml_value(h) for h in policy.allowed_hosts) + "]",
        ]
    for key in _SERVICES_TLS:
        if getattr(participant_tls, key) is not None:
            lines.append(f"{key} = {_toml_value(rel(getattr(participant_tls, key)))}")
    if config.api.allowed_origins or config.api.allowed_hosts:
        lines += [
            "",
            "[api]",
            "allowed_origins = [" + ", ".join(_toml_value(o) for o in config.api.allowed_origins) + "]",
            "allowed_hosts = [" + ", ".join(_toml_value(h) for h in config.api.allowed_hosts) + "]",
        ]
    if config.tls is not None:
        tls = config.tls
        lines += ["", "[tls]"]
        lines.append(f"cert_file = {_toml_value(rel(Path(tls.cert_file)))}")
        lines.append(f"key_file = {_toml_value(rel(Path(tls.key_file)))}")
        for key in ("client_ca_file", "peer_ca_file"):
            if getattr(tls, key) is not None:
                lines.append(f"{key} = {_toml_value(rel(getattr(tls, key)))}")
        lines.append(f"peer = {_toml_value(tls.peer)}")
    lines += ["", "[limits]"]
    for f in dataclasses.fields(Limits):
        lines.append(f"{f.name} = {_toml_value(getattr(config.limits, f.name))}")
    for node in config.nodes:
        lines += ["", "[[nodes]]"] + [f"{k} = {_toml_value(getattr(node, k))}" for k in ("id", "raft", "http", "grpc")]
    # A fresh name made with O_EXCL (never a file or link already there),
    # owner-only, renamed over the cluster file when complete.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def local_cluster(
    *,
    nodes: int,
    host: str,
    base_port: int,
    data_dir: Path,
    raft: RaftSettings | None = None,
    executor: ExecutorSettings | None = None,
    workers: WorkerSettings | None = None,
) -> ClusterConfig:
    """The local layout (README.md, "A cluster in one minute"): node i is n{i}, Raft base+i, HTTP base+1000+i, gRPC base+2000+i."""
    if not 1 <= nodes <= NODES_MAX:
        raise ConfigError(f"--nodes: must be 1 to {NODES_MAX}")
    if not (1 <= base_port and base_port + 2000 + nodes < 65536):
        raise ConfigError("--base-port: base+2000+nodes must stay below 65536")
    if not _HOST.match(host):
        raise ConfigError(f"--host: {host!r} is not a host name or IPv4 address")
    data_dir = Path(data_dir).resolve()
    return ClusterConfig(
        nodes=tuple(
            NodeAddress(
                id=f"n{i}",
                raft=f"{host}:{base_port + i}",
                http=f"{host}:{base_port + 1000 + i}",
                grpc=f"{host}:{base_port + 2000 + i}",
            )
            for i in range(1, nodes + 1)
        ),
        secret_file=data_dir / "cluster.secret",
        data_dir=data_dir,
        raft=raft or RaftSettings(),
        executor=executor or ExecutorSettings(),
        workers=workers or WorkerSettings(),
    )


def generate_secret(path: Path) -> None:
    """Write a new random secret (the cluster secret, an API token), readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


def read_secret(path: Path, what: str = "the cluster secret") -> str:
    """The secret in ``path``: one line of at least SECRET_CHARS_MIN
    characters, in a file :func:`read_private_file` accepts."""
    text = read_private_file(path, what).strip()
    if len(text) < SECRET_CHARS_MIN:
        raise ConfigError(f"{path}: {what} must have at least {SECRET_CHARS_MIN} characters")
    return text


def read_private_file(path: Path, what: str, bytes_max: int = SECRET_FILE_BYTES_MAX) -> str:
    """The text of ``path``: a regular file owned by this user and by no
    one else readable, not a symbolic link, at most ``bytes_max`` bytes of
    UTF-8. Every check is made on the opened file (no race between checking
    and reading)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ConfigError(f"{path}: {what} is a symbolic link; name the file itself") from None
        raise ConfigError(f"{path}: cannot open {what}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        problem = owner_only_problem(info, path, what)
        if problem is not None:
            raise ConfigError(problem)
        if info.st_size > bytes_max:
            raise ConfigError(f"{path}: {what} file is over {bytes_max} bytes")
        data = os.read(fd, bytes_max + 1)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: {what} is not UTF-8 text") from None


def load_tokens(token_file: Path | None, tokens_file: Path | None) -> TokenTable | None:
    """The tokens of ``token_file`` (single-token mode) and ``tokens_file``,
    both checked like the cluster secret; None when neither is set (the API
    is open). ConfigError, one line, when either cannot be used."""
    if token_file is None and tokens_file is None:
        return None
    tokens: list[Token] = []
    if token_file is not None:
        tokens.extend(TokenTable.single(read_secret(token_file, "the API token")).tokens)
    if tokens_file is not None:
        text = read_private_file(tokens_file, "the tokens file", TOKENS_FILE_BYTES_MAX)
        try:
            entries = parse_tokens(text, str(tokens_file))
        except TokenFileError as exc:
            raise ConfigError(str(exc)) from None
        for i, token in enumerate(entries):
            if token_file is not None and token.name == SINGLE_TOKEN_NAME:
                raise ConfigError(f"{tokens_file}: tokens[{i}].name: {SINGLE_TOKEN_NAME!r} is token_file's token")
            if token_file is not None and token.digest == tokens[0].digest:
                raise ConfigError(f"{tokens_file}: tokens[{i}]: the same token as token_file")
            tokens.append(token)
    return TokenTable(tokens)
