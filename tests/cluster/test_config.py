import dataclasses
import os

import pytest

from coordinator.client.participant.signing import KEY_ID_PATTERN
from coordinator.cluster.core.config import (
    PARTICIPANT_KEY_ID,
    ConfigError,
    generate_secret,
    load_cluster_file,
    local_cluster,
    read_secret,
    write_cluster_file,
)
from coordinator.cluster.core.netpolicy import ServicePolicy


def test_written_cluster_file_loads_back_equal(tmp_path):
    config = local_cluster(nodes=3, host="127.0.0.1", base_port=7100, data_dir=tmp_path)
    write_cluster_file(tmp_path / "cluster.toml", config)
    assert load_cluster_file(tmp_path / "cluster.toml") == config
    assert [(n.id, n.raft, n.http, n.grpc) for n in config.nodes][0] == (
        "n1",
        "127.0.0.1:7101",
        "127.0.0.1:8101",
        "127.0.0.1:9101",
    )
    with_token = dataclasses.replace(config, token_file=tmp_path / "api.token")
    write_cluster_file(tmp_path / "cluster.toml", with_token)
    assert load_cluster_file(tmp_path / "cluster.toml") == with_token


def test_the_services_policy_is_read_and_written_back(tmp_path):
    config = local_cluster(nodes=1, host="127.0.0.1", base_port=7100, data_dir=tmp_path)
    assert not config.services.configured  # the default: loopback and private networks
    policy = ServicePolicy.parse(["10.20.0.0/16", "fd00:20::/32", "169.254.169.254/32"], ["Payments.Internal"])
    with_policy = dataclasses.replace(config, services=policy)
    write_cluster_file(tmp_path / "cluster.toml", with_policy)
    loaded = load_cluster_file(tmp_path / "cluster.toml")
    assert loaded == with_policy and loaded.services.allowed_hosts == ("payments.internal",)
    assert loaded.services.refusal("10.20.1.1") is None and loaded.services.refusal("127.0.0.1") is not None


@pytest.mark.parametrize(
    "text, problem",
    [
        (
            "[cluster]\nsecret_file='s'\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\nextra=1\n",
            "nodes[0].extra",
        ),
        ("[cluster]\nsecret_file='s'\n[[nodes]]\nid='n1'\nraft='h'\nhttp='h:2'\ngrpc='h:3'\n", "nodes[0].raft"),
        ("[cluster]\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n", "cluster.secret_file"),
        (
            "[cluster]\nsecret_file='s'\n[raft]\nheartbeat_s=5\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "heartbeat_s",
        ),
        (
            "[cluster]\nsecret_file='s'\n[raft]\nnope=1\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "raft.nope",
        ),
        # PySyncObj asserts this at start (a traceback, not a config error, before).
        (
            "[cluster]\nsecret_file='s'\n[raft]\nelection_timeout_max_s=3\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "connection_timeout_s",
        ),
        (
            "[cluster]\nsecret_file='s'\n[raft]\nleader_loss_election_s=0.3\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "leader_loss_election_s",
        ),
        ("[cluster\n", "not valid TOML"),
        ("[cluster]\nsecret_file='s'\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:1'\ngrpc='h:3'\n", "distinct"),
        (
            "[cluster]\nsecret_file='s'\n[services]\nallowed_networks=['10.0.0.1/8']\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "services.allowed_networks[0]",
        ),
        (
            "[cluster]\nsecret_file='s'\n[services]\nallowed_networks='10.0.0.0/8'\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "services.allowed_networks: must be a list",
        ),
        (
            "[cluster]\nsecret_file='s'\n[services]\nallowed_hosts=['a b']\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "services.allowed_hosts[0]",
        ),
        (
            "[cluster]\nsecret_file='s'\n[services]\nallow=[]\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n",
            "services.allow",
        ),
    ],
)
def test_bad_cluster_files_name_the_problem(tmp_path, text, problem):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_cluster_file(tmp_path / "c.toml")
    assert problem in str(info.value)


def test_secret_is_owner_only_and_others_readable_is_refused(tmp_path):
    path = tmp_path / "secret"
    generate_secret(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(read_secret(path)) >= 16
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret(path)


def test_a_symlinked_secret_is_refused(tmp_path):
    real = tmp_path / "real"
    generate_secret(real)
    link = tmp_path / "secret"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symbolic link"):
        read_secret(link)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_secret_owned_by_another_user_is_refused(tmp_path):
    path = tmp_path / "secret"
    generate_secret(path)
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        read_secret(path)


def test_a_group_readable_secret_is_refused(tmp_path):
    path = tmp_path / "secret"
    generate_secret(path)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret(path)


def test_a_secret_that_is_not_a_regular_file_is_refused(tmp_path):
    path = tmp_path / "secret"
    os.mkfifo(path, 0o600)  # opening it for reading would block: it is never opened blocking
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret(path)


def test_a_symlink_planted_at_the_cluster_files_temporary_path_is_not_followed(tmp_path):
    config = local_cluster(nodes=3, host="127.0.0.1", base_port=24000, data_dir=tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "cluster.toml"
    path.with_suffix(".tmp").symlink_to(victim)
    write_cluster_file(path, config)
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and load_cluster_file(path).nodes == config.nodes
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_the_participant_key_id_pattern_is_the_signing_formats():
    assert PARTICIPANT_KEY_ID.pattern == KEY_ID_PATTERN.pattern


def _participant_certs(tmp_path):
    """A CA and a client certificate of it, as an operator would have them."""
    from coordinator.cluster.launcher.certs import issue, make_ca

    ca = make_ca(tmp_path / "pki")
    issue(ca, tmp_path / "leader.crt", tmp_path / "leader.key", common_name="leader", server=False)
    return ca.cert_file, tmp_path / "leader.crt", tmp_path / "leader.key"


def test_services_tls_is_read_and_written_back_and_leaves_the_policy_unset(tmp_path):
    from coordinator.cluster.core.tls import ParticipantTls

    config = local_cluster(nodes=1, host="127.0.0.1", base_port=7100, data_dir=tmp_path)
    assert not config.participant_tls.configured  # the default: system CAs, no client certificate
    ca, cert, key = _participant_certs(tmp_path)
    with_tls = dataclasses.replace(config, participant_tls=ParticipantTls(ca, cert, key))
    write_cluster_file(tmp_path / "cluster.toml", with_tls)
    text = (tmp_path / "cluster.toml").read_text()
    assert 'ca_file = "pki/ca.crt"' in text and "allowed_networks" not in text
    loaded = load_cluster_file(tmp_path / "cluster.toml")
    assert loaded == with_tls and not loaded.services.configured  # the address policy stays the default
    context = loaded.participant_tls.client_context()
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname
    assert context.minimum_version.name == "TLSv1_2"


@pytest.mark.parametrize(
    "services, problem",
    [
        ("client_cert_file='c.crt'", "give both or neither"),
        ("client_key_file='c.key'", "give both or neither"),
        ("ca_file=''", "services.ca_file: must be a file name"),
        ("ca_file=3", "services.ca_file: must be a file name"),
    ],
)
def test_bad_services_tls_is_refused(tmp_path, services, problem):
    path = tmp_path / "cluster.toml"
    path.write_text(
        f"[cluster]\nsecret_file='s'\n[services]\n{services}\n[[nodes]]\nid='n1'\nraft='h:1'\nhttp='h:2'\ngrpc='h:3'\n"
    )
    with pytest.raises(ConfigError, match=problem):
        load_cluster_file(path)


def test_a_node_with_a_client_key_others_can_read_refuses_to_start_in_one_line(tmp_path):
    import subprocess
    import sys

    from coordinator.cluster.core.tls import ParticipantTls

    ca, cert, key = _participant_certs(tmp_path)
    config = local_cluster(nodes=1, host="127.0.0.1", base_port=7100, data_dir=tmp_path)
    config = dataclasses.replace(config, participant_tls=ParticipantTls(ca, cert, key))
    write_cluster_file(tmp_path / "cluster.toml", config)
    generate_secret(config.secret_file)
    os.chmod(key, 0o644)
    node = [sys.executable, "-m", "coordinator", "node", "--config", str(tmp_path / "cluster.toml"), "--id", "n1"]
    result = subprocess.run(node, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "readable by others" in result.stderr
    assert str(key) in result.stderr
    os.chmod(key, 0o600)
    (tmp_path / "pki" / "ca.crt").write_text("not a certificate\n")
    result = subprocess.run(node, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.strip().count("\n") == 0
    assert "not a CA certificate in PEM" in result.stderr
