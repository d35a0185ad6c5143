"""[tls] of the cluster file: parsed, written back, checked before a node starts;
`coordinator up --tls` makes the CA and node certificates once."""

import argparse
import ssl

import pytest
from cryptography import x509

from coordinator.cluster.cli import _prepare_data_dir
from coordinator.cluster.core.config import ConfigError, load_cluster_file, write_cluster_file
from coordinator.cluster.core.tls import NodeTls, api_server_context, peer_client_context, peer_server_context
from coordinator.cluster.launcher.certs import local_tls

NODES = """
[[nodes]]
id = "n1"
raft = "127.0.0.1:7101"
http = "127.0.0.1:8101"
grpc = "127.0.0.1:9101"
"""


def _file(tmp_path, tls: str):
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nsecret_file = "s"\n{tls}\n{NODES}')
    return path


def test_tls_paths_are_relative_to_the_file_and_name_the_node(tmp_path):
    config = load_cluster_file(_file(tmp_path, '[tls]\ncert_file = "tls/{id}.crt"\nkey_file = "tls/{id}.key"'))
    tls = config.tls.for_node("n1")
    assert tls.cert_file == tmp_path / "tls" / "n1.crt"
    assert tls.key_file == tmp_path / "tls" / "n1.key"
    assert tls.client_ca_file is None and tls.peer is False
    assert config.nodes[0].http_url == "https://127.0.0.1:8101"
    write_cluster_file(tmp_path / "again.toml", config)
    assert load_cluster_file(tmp_path / "again.toml") == config


def test_without_tls_the_urls_say_http(tmp_path):
    config = load_cluster_file(_file(tmp_path, ""))
    assert config.tls is None and config.nodes[0].http_url == "http://127.0.0.1:8101"


@pytest.mark.parametrize(
    "tls, problem",
    [
        ('[tls]\nkey_file = "k"', "tls.cert_file: required"),
        ('[tls]\ncert_file = "c"', "tls.key_file: required"),
        ('[tls]\ncert_file = "c"\nkey_file = "k"\npeer = true', "tls.peer_ca_file: required with peer = true"),
        ('[tls]\ncert_file = "c"\nkey_file = "k"\npeer = "yes"', "tls.peer: must be true or false"),
        ('[tls]\ncert_file = "c"\nkey_file = 5', "tls.key_file: must be a file name"),
        ('[tls]\ncert_file = "c"\nkey_file = "k"\nciphers = "x"', "tls.ciphers: unknown setting"),
        ("tls = 1", "[tls] must be a table"),
    ],
)
def test_bad_tls_settings_name_the_problem(tmp_path, tls, problem):
    text = _file(tmp_path, tls).read_text()
    if tls == "tls = 1":  # a key of [cluster] would be another error: put it at the top
        (tmp_path / "cluster.toml").write_text(f'tls = 1\n[cluster]\nsecret_file = "s"\n{NODES}')
    else:
        (tmp_path / "cluster.toml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_cluster_file(tmp_path / "cluster.toml")
    assert problem in str(caught.value)


def test_a_key_others_can_read_or_a_broken_pair_is_refused(tmp_path):
    ca = local_tls(tmp_path, [("n1", "127.0.0.1"), ("n2", "127.0.0.1")])
    good = NodeTls(tmp_path / "n1.crt", tmp_path / "n1.key", peer=True, peer_ca_file=ca.cert_file)
    good.check()
    (tmp_path / "n1.key").chmod(0o644)
    with pytest.raises(ValueError, match="readable by others; run chmod 600"):
        good.check()
    (tmp_path / "n1.key").chmod(0o600)
    with pytest.raises(ValueError, match="not a certificate and its key"):
        NodeTls(tmp_path / "n1.crt", tmp_path / "n2.key").check()  # n2's key does not match n1's certificate
    with pytest.raises(ValueError, match="no such certificate file"):
        NodeTls(tmp_path / "n1.crt", tmp_path / "n1.key", client_ca_file=tmp_path / "none.crt").check()
    with pytest.raises(ValueError, match="no such key file"):
        NodeTls(tmp_path / "n1.crt", tmp_path / "missing.key").check()


def test_contexts_refuse_old_tls_and_require_certificates_where_mutual(tmp_path):
    ca = local_tls(tmp_path, [("n1", "127.0.0.1")])
    tls = NodeTls(tmp_path / "n1.crt", tmp_path / "n1.key", client_ca_file=ca.cert_file, peer_ca_file=ca.cert_file)
    api = api_server_context(tls)
    assert api.minimum_version == ssl.TLSVersion.TLSv1_2 and api.verify_mode == ssl.CERT_REQUIRED
    assert api_server_context(NodeTls(tls.cert_file, tls.key_file)).verify_mode == ssl.CERT_NONE
    peer = peer_client_context(tls)
    assert peer.check_hostname and peer.verify_mode == ssl.CERT_REQUIRED


def _up_args(data_dir, **flags):
    return argparse.Namespace(
        data_dir=str(data_dir), nodes=2, host="127.0.0.1", base_port=7100, token=False, tls=False, mtls=False, **flags
    )


def test_up_tls_makes_a_ca_and_a_certificate_per_node_once(tmp_path):
    args = _up_args(tmp_path / "d")
    args.tls = True
    cluster_file = _prepare_data_dir(args)
    config = load_cluster_file(cluster_file)
    tls_dir = tmp_path / "d" / "tls"
    assert config.tls.peer and config.tls.peer_ca_file == tls_dir / "ca.crt" and config.tls.client_ca_file is None
    for node in ("n1", "n2"):
        cert = x509.load_pem_x509_certificate((tls_dir / f"{node}.crt").read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert node in names.get_values_for_type(x509.DNSName)
        assert (tls_dir / f"{node}.key").stat().st_mode & 0o077 == 0
        config.tls.for_node(node).check()
    first = (tls_dir / "n1.crt").read_bytes()
    _prepare_data_dir(args)  # started again: the same certificates
    assert (tls_dir / "n1.crt").read_bytes() == first
    plain = _up_args(tmp_path / "plain")
    _prepare_data_dir(plain)
    plain.tls = True
    with pytest.raises(ConfigError, match="was created without --tls"):
        _prepare_data_dir(plain)


def test_up_mtls_also_issues_a_client_certificate(tmp_path):
    args = _up_args(tmp_path / "d")
    args.mtls = True
    config = load_cluster_file(_prepare_data_dir(args))
    tls_dir = tmp_path / "d" / "tls"
    assert config.tls.client_ca_file == tls_dir / "ca.crt"
    cert = x509.load_pem_x509_certificate((tls_dir / "client.crt").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str) -> str:
    """A TLS handshake over a socket pair; the version agreed, or the error."""
    import socket
    import threading

    left, right = socket.socketpair()
    errors: list[Exception] = []

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname=server_hostname) as c:
            c.sendall(b"x")
            version = c.version()
    finally:
        thread.join(5)
    if errors:
        raise errors[0]
    return version


def test_a_bundle_of_two_cas_admits_node_certificates_of_either(tmp_path):
    """The CA rotation README describes: both CAs in one PEM file as peer_ca_file."""
    old = local_tls(tmp_path / "old", [("n1", "127.0.0.1")])
    new = local_tls(tmp_path / "new", [("n2", "127.0.0.1")])
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(old.cert_file.read_bytes() + new.cert_file.read_bytes())
    n1 = NodeTls(tmp_path / "old" / "n1.crt", tmp_path / "old" / "n1.key", peer=True, peer_ca_file=bundle)
    n2 = NodeTls(tmp_path / "new" / "n2.crt", tmp_path / "new" / "n2.key", peer=True, peer_ca_file=bundle)
    assert _handshake(peer_server_context(n1), peer_client_context(n2), "n1") == "TLSv1.3"
    assert _handshake(peer_server_context(n2), peer_client_context(n1), "n2") == "TLSv1.3"
    only_old = NodeTls(n1.cert_file, n1.key_file, peer=True, peer_ca_file=old.cert_file)
    with pytest.raises(ssl.SSLError):
        _handshake(peer_server_context(n2), peer_client_context(only_old), "n2")
