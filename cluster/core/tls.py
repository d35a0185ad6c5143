"""TLS of a node: ``[tls]`` of the cluster file, checked, and the SSL contexts made from it.

``cluster.toml``::

    [tls]
    cert_file = "tls/{id}.crt"        # this node's certificate chain (PEM); {id} is the node's id
    key_file = "tls/{id}.key"         # its private key (PEM, unencrypted, mode 0600)
    client_ca_file = "tls/ca.crt"     # optional: API clients must present a certificate it signed
    peer = true                       # optional: Raft between the nodes over mutual TLS as well
    peer_ca_file = "tls/ca.crt"       # the CA of the node certificates (needed with peer = true)

With ``[tls]`` the HTTP API and the gRPC API are served over TLS only and
every URL a node gives out (``/v1/cluster``, a 307 to the leader) says
``https``. With ``client_ca_file`` set too, a client must present a
certificate signed by that CA (mutual TLS), on both APIs.

With ``peer = true`` every Raft connection is mutual TLS as well, inside
which the cluster secret still authenticates every message: a node presents
its certificate and accepts a peer only if the peer's certificate, signed by
``peer_ca_file``, names (as a DNS subject alternative name) the id of the
node whose Raft address it dials or claims. Someone who learned the secret
but holds no node certificate cannot join or read the log.

A node refuses to start when a key file is readable by anyone but its owner
(as with the cluster secret), or when a file is missing or not PEM. The
same certificate and key serve the APIs and the Raft port: ``coordinator up
--tls`` issues one per node, with the node's id, ``localhost`` and its
address as names, usable as server and as client (cluster/launcher/certs.py).

Participants are called over TLS when their registration says so (an
``https://`` URL, a gRPC target registered with ``"tls": true``); how the
leader checks them, and the certificate it shows them, is ``[services]``
(``ParticipantTls``)::

    [services]
    ca_file = "participants-ca.crt"           # optional: verify participants against it (default: the system CAs)
    client_cert_file = "tls/leader.crt"       # optional, with client_key_file: for participants that
    client_key_file = "tls/leader.key"        # require a client certificate (mutual TLS); the key 0600
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from coordinator.cluster.core.files import owner_only_problem

__all__ = [
    "NODE_ID_PLACEHOLDER",
    "NodeTls",
    "ParticipantTls",
    "TlsSettings",
    "api_server_context",
    "check_key_file",
    "peer_client_context",
    "peer_server_context",
]

NODE_ID_PLACEHOLDER = "{id}"
TLS_MINIMUM = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """``[tls]``, its paths resolved; ``cert_file`` and ``key_file`` may hold ``{id}``."""

    cert_file: str
    key_file: str
    client_ca_file: Path | None = None
    peer: bool = False
    peer_ca_file: Path | None = None

    def for_node(self, node_id: str) -> NodeTls:
        return NodeTls(
            cert_file=Path(self.cert_file.replace(NODE_ID_PLACEHOLDER, node_id)),
            key_file=Path(self.key_file.replace(NODE_ID_PLACEHOLDER, node_id)),
            client_ca_file=self.client_ca_file,
            peer=self.peer,
            peer_ca_file=self.peer_ca_file,
        )


@dataclass(frozen=True, slots=True)
class NodeTls:
    """The TLS files of one node."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    peer: bool = False
    peer_ca_file: Path | None = None

    def check(self) -> None:
        """Raise ValueError (the message names the file) unless every file
        exists, the key is the owner's alone and the pair loads."""
        check_key_file(self.key_file)
        for path in (self.cert_file, self.client_ca_file, self.peer_ca_file):
            if path is not None and not path.is_file():
                raise ValueError(f"{path}: no such certificate file")
        api_server_context(self)
        if self.peer:
            peer_server_context(self)

    def read_cert(self) -> bytes:
        return self.cert_file.read_bytes()

    def read_key(self) -> bytes:
        check_key_file(self.key_file)
        return self.key_file.read_bytes()

    def read_client_ca(self) -> bytes | None:
        return self.client_ca_file.read_bytes() if self.client_ca_file is not None else None


def check_key_file(path: Path) -> None:
    """A private key must be a regular file of this user's, with no group or
    other permission bits (0600 or stricter)."""
    try:
        info = os.stat(path)  # a symbolic link is followed: mounted secrets are often links
    except FileNotFoundError:
        raise ValueError(f"{path}: no such key file") from None
    problem = owner_only_problem(info, path, "the key")
    if problem is not None:
        raise ValueError(problem)


def _load_chain(context: ssl.SSLContext, tls: NodeTls) -> None:
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{tls.cert_file} / {tls.key_file}: not a certificate and its key in PEM ({exc})") from None


def _load_ca(context: ssl.SSLContext, path: Path) -> None:
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"{path}: not a CA certificate in PEM ({exc})") from None


def api_server_context(tls: NodeTls) -> ssl.SSLContext:
    """The HTTP API's server context: TLS 1.2 or later; mutual with ``client_ca_file``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_MINIMUM
    _load_chain(context, tls)
    if tls.client_ca_file is not None:
        _load_ca(context, tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_server_context(tls: NodeTls) -> ssl.SSLContext:
    """The Raft port's server side: a peer must present a certificate of ``peer_ca_file``."""
    if tls.peer_ca_file is None:
        raise ValueError("tls.peer_ca_file: required with peer = true")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    _load_chain(context, tls)
    _load_ca(context, tls.peer_ca_file)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_client_context(tls: NodeTls) -> ssl.SSLContext:
    """The Raft connections this node opens: it presents its certificate and
    checks the peer's against ``peer_ca_file`` and the node id it dials
    (the connection's ``server_hostname``)."""
    if tls.peer_ca_file is None:
        raise ValueError("tls.peer_ca_file: required with peer = true")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    _load_chain(context, tls)
    _load_ca(context, tls.peer_ca_file)
    return context


@dataclass(frozen=True, slots=True)
class ParticipantTls:
    """``[services]`` TLS: the CA bundle participants' certificates are
    verified against (None: the system's) and the client certificate the
    leader presents to them (both or neither). Plain ``http://`` and
    non-TLS gRPC participants are called as before whatever is set here."""

    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("services.client_cert_file and services.client_key_file: give both or neither")

    @property
    def configured(self) -> bool:
        return any(path is not None for path in (self.ca_file, self.client_cert_file, self.client_key_file))

    def check(self) -> None:
        """Raise ValueError (one line, naming the file) unless the files are
        usable: the key the owner's alone, every file PEM, the pair matching."""
        self.client_context()

    def client_context(self) -> ssl.SSLContext:
        """The context ``https://`` participants are called with: their
        certificate chain and host name verified, TLS 1.2 or later, the
        client certificate presented when one is set."""
        if self.client_key_file is not None:
            check_key_file(self.client_key_file)
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"{self.ca_file}: no such certificate file")
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"{self.ca_file}: not a CA certificate in PEM ({exc})") from None
        context.minimum_version = TLS_MINIMUM
        if self.client_cert_file is not None:
            try:
                context.load_cert_chain(self.client_cert_file, self.client_key_file)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(
                    f"{self.client_cert_file} / {self.client_key_file}: not a certificate and its key in PEM ({exc})"
                ) from None
        return context

    def grpc_files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root certificates, private key, certificate chain) as
        ``grpc.ssl_channel_credentials`` takes them, None where unset.
        Without ``ca_file`` the roots are the system's bundle, the file
        OpenSSL (so the ``https://`` calls) trusts by default; where there is
        none, None: gRPC's own default roots."""
        if self.ca_file is not None:
            roots: bytes | None = self.ca_file.read_bytes()
        else:
            system = ssl.get_default_verify_paths().cafile
            roots = Path(system).read_bytes() if system and Path(system).is_file() else None
        if self.client_cert_file is None or self.client_key_file is None:
            return roots, None, None
        check_key_file(self.client_key_file)
        return roots, self.client_key_file.read_bytes(), self.client_cert_file.read_bytes()
