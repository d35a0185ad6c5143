"""The client's side of TLS: which CA to trust, which certificate to present.

A cluster whose file has ``[tls]`` serves its HTTP and gRPC APIs over TLS
only. Its clients then name:

- ``ca_file``: the CA bundle (PEM) that signed the nodes' certificates
  (``coordinator up --tls`` writes ``DATA_DIR/tls/ca.crt``); without it the
  system's CAs are trusted;
- ``cert_file`` and ``key_file``: a client certificate, when the cluster asks
  for one (``client_ca_file``: mutual TLS).

``Coordinator(..., ca_file=..., cert_file=..., key_file=...)`` takes them,
else the environment variables ``COORDINATOR_CA_FILE``,
``COORDINATOR_CERT_FILE`` and ``COORDINATOR_KEY_FILE`` (the CLI's
``--ca-file``, ``--cert-file``, ``--key-file``). Over HTTP an ``https://``
endpoint speaks TLS; over gRPC TLS is on when any of them is given or
``tls=True`` (a cluster with a publicly trusted certificate).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = ["ClientTls", "TLS_ENVIRONMENT"]

TLS_ENVIRONMENT = {
    "ca_file": "COORDINATOR_CA_FILE",
    "cert_file": "COORDINATOR_CERT_FILE",
    "key_file": "COORDINATOR_KEY_FILE",
}


@dataclass(frozen=True, slots=True)
class ClientTls:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: no such file: {path}")

    @classmethod
    def resolve(
        cls, ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
    ) -> ClientTls | None:
        """The given files, else the environment's; None when neither names one."""
        given = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
        files = {k: (str(v) if v else None) or os.environ.get(TLS_ENVIRONMENT[k]) or None for k, v in given.items()}
        if not any(files.values()):
            return None
        return cls(**files)

    def ssl_context(self) -> ssl.SSLContext:
        """For HTTPS: verify the node against ``ca_file`` (else the system's
        CAs) and its name; present the client certificate when there is one."""
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )
