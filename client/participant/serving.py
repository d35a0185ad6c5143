"""Serving a participant, over TLS when given a certificate: HTTP and gRPC.

    tls = ServerTls("orders.crt", "orders.key", client_ca_file="coordinator-ca.crt")
    runner, url = await serve_http(app, "0.0.0.0", 8443, tls=tls)     # url: "https://0.0.0.0:8443"
    server, port = await serve_participant(Orders(store), "0.0.0.0", 9443, tls=tls)

Register them as ``https://orders.internal:8443`` and as ``{"grpc":
"orders.internal:9443", "tls": true}``: the coordinator verifies the
certificate against its ``[services]`` ``ca_file`` (or the system CAs) for
the registered host name, so the certificate must name it.

``ServerTls``: the participant's certificate chain and key (PEM; keep the
key readable by its owner only), and optionally ``client_ca_file``: then
a caller must present a certificate that CA signed (mutual TLS), such as
the one the coordinator presents from ``[services]`` ``client_cert_file``;
one without is refused during the handshake, before any handler runs.
TLS 1.2 or later. Without ``tls`` both serve in plain text, as before.

``serve_http(app, host, port, *, tls=None)`` serves an aiohttp app (with
``saga_participant``, ``add_twopc_routes``, ...) and answers ``(runner,
base_url)``; clean up with ``await runner.cleanup()``. ``tls`` may also be
an ``ssl.SSLContext`` of your own. Serving the app yourself, pass
``ssl_context=tls.ssl_context()`` to ``web.TCPSite``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
from aiohttp import web

__all__ = ["TLS_MINIMUM", "ServerTls", "serve_http"]

TLS_MINIMUM = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A participant's certificate and key, and the CA its callers'
    certificates must be signed by (None: no client certificate asked)."""

    cert_file: str | Path
    key_file: str | Path
    client_ca_file: str | Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """The server context of an HTTPS participant: TLS 1.2 or later;
        with ``client_ca_file`` a client certificate of that CA is required."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = TLS_MINIMUM
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file is not None:
            context.load_verify_locations(cafile=self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """The same for ``grpc.aio.Server.add_secure_port``."""
        client_ca = Path(self.client_ca_file).read_bytes() if self.client_ca_file is not None else None
        return grpc.ssl_server_credentials(
            [(Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


async def serve_http(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tls: ServerTls | ssl.SSLContext | None = None,
    shutdown_timeout_s: float = 60.0,
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on host:port (0: a free port the OS picks), over TLS
    with ``tls``: ``(runner, base_url)``, the URL ``https://`` with TLS.
    The caller cleans the runner up (``await runner.cleanup()``)."""
    context = tls.ssl_context() if isinstance(tls, ServerTls) else tls
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout_s, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=context).start()
        bound_host, bound_port = runner.addresses[0][:2]
    except BaseException:
        await runner.cleanup()
        raise
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"{'https' if context is not None else 'http'}://{shown}:{bound_port}"
