"""The tokens file (cluster/core/tokens.py) and the roles check (cluster/api/roles.py)."""

import hashlib
import os
from types import SimpleNamespace

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from coordinator.cluster.api import roles
from coordinator.cluster.api.http_api import build_app
from coordinator.cluster.core.config import ApiSettings, ConfigError, load_cluster_file, load_tokens
from coordinator.cluster.core.errors import Forbidden, Unauthorized
from coordinator.cluster.core.tokens import Role, TokenFileError, TokenTable, parse_tokens

GOOD = "x" * 16


def write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def entry(name="ci", role="submit", secret=f'token = "{GOOD}"'):
    return f'[[tokens]]\nname = "{name}"\nrole = "{role}"\n{secret}\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (entry(role="writer"), "tokens[0].role: must be one of read, submit, operate, admin"),
        (entry() + entry(secret='token = "yyyyyyyyyyyyyyyy"'), "tokens[1].name: 'ci' is also the name of tokens[0]"),
        (entry(secret='token = "short-token"'), "tokens[0].token: must have 16 to 4096 characters"),
        (entry(secret=f'token = "{GOOD}"\nsha256 = "{"0" * 64}"'), "tokens[0]: give exactly one of token or sha256"),
        (entry(secret=""), "tokens[0]: give exactly one of token or sha256"),
        (entry(secret='sha256 = "abc"'), "tokens[0].sha256: must be the 64 hex digits"),
        (entry(name="Alice"), "tokens[0].name: must match"),
        (entry() + entry(name="other"), "tokens[1]: the same token as tokens[0]"),
        (entry(secret=f'token = "{GOOD}"\ncolour = "red"'), "tokens[0].colour: unknown field"),
        (entry(secret='token = "with a space in it"'), "tokens[0].token: printable ASCII only"),
        ("", "needs [[tokens]] entries"),
        ("tokens = 5", "needs [[tokens]] entries"),
        ("[[tokens]\n", "not valid TOML"),
    ],
)
def test_a_bad_tokens_file_is_one_line_naming_the_entry(text, message):
    with pytest.raises(TokenFileError) as error:
        parse_tokens(text, "tokens.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("tokens.toml: ") and "\n" not in str(error.value)


def test_a_token_or_its_sha256_authenticates_its_entry_and_nothing_else():
    other = "z" * 20
    text = entry("dash", "read") + entry("ops", "operate", f'sha256 = "{hashlib.sha256(other.encode()).hexdigest()}"')
    table = TokenTable(parse_tokens(text, "t"))
    assert [(t.name, t.role) for t in table.tokens] == [("dash", Role.READ), ("ops", Role.OPERATE)]
    assert table.bearer(f"Bearer {GOOD}").name == "dash"
    assert table.bearer(f"Bearer {other}").name == "ops"
    for wrong in (None, "", GOOD, f"bearer {GOOD}", f"Bearer {GOOD}x", f"Bearer {GOOD[:-1]}", "Bearer " + "0" * 64):
        assert table.bearer(wrong) is None, wrong
    assert GOOD not in repr(table) and other not in repr(table)


def test_the_file_is_checked_like_the_secret_and_token_file_is_admin(tmp_path):
    tokens = write(tmp_path / "tokens.toml", entry("dash", "read"))
    single = write(tmp_path / "api.token", "a" * 32 + "\n")
    table = load_tokens(single, tokens)
    assert [(t.name, t.role) for t in table.tokens] == [("admin", Role.ADMIN), ("dash", Role.READ)]
    assert load_tokens(None, None) is None
    os.chmod(tokens, 0o640)
    with pytest.raises(ConfigError, match="readable by others; run chmod 600"):
        load_tokens(None, tokens)
    os.chmod(tokens, 0o600)
    write(tokens, entry(role="writer"))
    with pytest.raises(ConfigError, match=r"tokens.toml: tokens\[0\].role"):
        load_tokens(None, tokens)
    write(tokens, entry("dash", "read"))
    (tmp_path / "link.toml").symlink_to(tokens)
    with pytest.raises(ConfigError, match="symbolic link"):
        load_tokens(None, tmp_path / "link.toml")
    write(tokens, entry("admin", "read"))
    with pytest.raises(ConfigError, match="'admin' is token_file's token"):
        load_tokens(single, tokens)
    write(tokens, entry("dash", "read", f'token = "{"a" * 32}"'))
    with pytest.raises(ConfigError, match="the same token as token_file"):
        load_tokens(single, tokens)


def test_the_cluster_file_names_the_tokens_file(tmp_path):
    (tmp_path / "cluster.toml").write_text(
        '[cluster]\nsecret_file = "s"\ntokens_file = "tokens.toml"\n'
        '[[nodes]]\nid = "n1"\nraft = "127.0.0.1:1"\nhttp = "127.0.0.1:2"\ngrpc = "127.0.0.1:3"\n'
    )
    assert load_cluster_file(tmp_path / "cluster.toml").tokens_file == (tmp_path / "tokens.toml").resolve()


def test_roles_are_cumulative_and_the_refusal_names_both_roles():
    table = TokenTable(parse_tokens(entry("ci", "submit"), "t"))
    credential = f"Bearer {GOOD}"
    assert roles.authorize(table, credential, Role.READ, "GET /v1/sagas").name == "ci"
    assert roles.authorize(table, credential, Role.SUBMIT, "POST /v1/sagas").name == "ci"
    with pytest.raises(Forbidden) as refused:
        roles.authorize(table, credential, Role.OPERATE, "POST /v1/sagas/{id}/redrive")
    assert refused.value.message == "POST /v1/sagas/{id}/redrive needs role operate; token ci has role submit"
    with pytest.raises(Unauthorized):
        roles.authorize(table, "Bearer " + "q" * 16, Role.READ, "GET /v1/sagas")
    assert roles.authorize(table, None, roles.OPEN, "GET /healthz") is None
    assert roles.authorize(None, None, Role.ADMIN, "PUT /v1/services/{name}") is None  # no tokens: open


async def test_a_route_missing_from_the_table_is_refused_even_to_admin():
    node = SimpleNamespace(
        config=SimpleNamespace(
            cluster=SimpleNamespace(http_body_bytes_max=1 << 20, nodes=(), api=ApiSettings()),
            node=SimpleNamespace(id="n1", http="127.0.0.1:8101", tls=False),
        ),
        tokens=TokenTable.single("a" * 32),
        http_responses={},
    )
    app = build_app(node)

    async def new_route(request):
        return web.json_response({"reached": True})

    app.router.add_get("/v1/new", new_route)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        admin = {"Authorization": "Bearer " + "a" * 32}
        response = await client.get("/v1/new", headers=admin)
        assert response.status == 403
        assert "has no role in the roles table" in (await response.json())["error"]["message"]
        assert (await client.get("/v1/new")).status == 401
        assert (await client.get("/v1/openapi.json", headers=admin)).status == 200
        assert (await client.get("/v1/nowhere", headers=admin)).status == 404
        assert (await client.get("/v1/nowhere")).status == 401
    finally:
        await client.close()
    assert roles.grpc_role("NewRpc") is None
    with pytest.raises(Forbidden):
        roles.authorize(node.tokens, "Bearer " + "a" * 32, roles.grpc_role("NewRpc"), "NewRpc")
