"""A local certificate authority and one certificate per node (``coordinator up --tls``).

``local_tls(directory, nodes)`` writes, once, into ``directory``:

- ``ca.crt`` / ``ca.key``: a CA made for this cluster alone (EC P-256, ten
  years). Clients trust ``ca.crt`` (``--ca-file``); ``ca.key`` signs the
  certificates below and can issue client certificates (``issue``).
- ``{id}.crt`` / ``{id}.key`` per node: a certificate naming the node's id,
  ``localhost``, ``127.0.0.1``, ``::1`` and the node's host, usable as
  server (the APIs, the Raft port) and as client (Raft connections it opens,
  mutual TLS), valid two years.

Every file is written owner-only (0600, as everything the coordinator
creates; a certificate is public, copy it where it must go), by O_EXCL on
a fresh name. Files
already there are kept: run again, it issues only what is missing (a node
added), so a cluster started again keeps its certificates. Made with
``cryptography`` (already a dependency for sealing Raft frames): openssl's
command line is not always on the machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from coordinator.cluster.core.files import PRIVATE_FILE_MODE, private_dir

__all__ = ["CA_DAYS", "LEAF_DAYS", "CertificateAuthority", "issue", "local_tls", "make_ca"]

CA_DAYS = 3650
LEAF_DAYS = 730


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    cert_file: Path
    key_file: Path

    def load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        return cert, key  # type: ignore[return-value]


def _write(path: Path, data: bytes, mode: int) -> None:
    """A new file (never one or a link already there), then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # a little clock skew


def make_ca(directory: Path, *, name: str = "coordinator local CA") -> CertificateAuthority:
    """``ca.crt`` and ``ca.key`` in ``directory`` (kept when there)."""
    directory = private_dir(Path(directory))
    ca = CertificateAuthority(directory / "ca.crt", directory / "ca.key")
    if ca.cert_file.exists() and ca.key_file.exists():
        return ca
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(ca.key_file, _key_pem(key), PRIVATE_FILE_MODE)
    _write(ca.cert_file, cert.public_bytes(serialization.Encoding.PEM), PRIVATE_FILE_MODE)
    return ca


def _san(names: Iterable[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):  # in order, once
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def issue(
    ca: CertificateAuthority,
    cert_file: Path,
    key_file: Path,
    *,
    common_name: str,
    names: Iterable[str] = (),
    server: bool = True,
    client: bool = True,
    days: int = LEAF_DAYS,
) -> None:
    """A certificate for ``names`` (DNS names or IP addresses) signed by ``ca``,
    written to ``cert_file`` and its key (0600) to ``key_file``."""
    ca_cert, ca_key = ca.load()
    key = ec.generate_private_key(ec.SECP256R1())
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    start = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    names = list(names)
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(key_file, _key_pem(key), PRIVATE_FILE_MODE)
    _write(cert_file, cert.public_bytes(serialization.Encoding.PEM), PRIVATE_FILE_MODE)


def local_tls(directory: Path, nodes: Iterable[tuple[str, str]]) -> CertificateAuthority:
    """The CA and a certificate per ``(node_id, host)`` in ``directory`` (see
    the module docstring); what is already there is kept."""
    ca = make_ca(directory)
    for node_id, host in nodes:
        cert_file, key_file = Path(directory) / f"{node_id}.crt", Path(directory) / f"{node_id}.key"
        if cert_file.exists() and key_file.exists():
            continue
        issue(ca, cert_file, key_file, common_name=node_id, names=[node_id, "localhost", "127.0.0.1", "::1", host])
    return ca
