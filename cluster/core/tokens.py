"""API tokens: who may call the API, under which name, with which role.

``[cluster] tokens_file = "tokens.toml"`` names a file of named tokens,
owner-only like the cluster secret::

    [[tokens]]
    name = "dashboard"      # [a-z0-9][a-z0-9._-]{0,63}, unique
    role = "read"           # read | submit | operate | admin
    token = "..."           # at least 16 characters (printable ASCII, no spaces)

    [[tokens]]
    name = "ci"
    role = "submit"
    sha256 = "9f86d0..."    # instead of token: the hex SHA-256 of the token

Roles are cumulative: ``read`` < ``submit`` < ``operate`` < ``admin``; a
token may do what its role and every role below it may
(cluster/api/roles.py says which role each route and RPC needs).
``[cluster] token_file`` (one token, the single-token mode) is one more
token, named ``admin``, with role ``admin``; both files may be set
(``load_tokens`` in cluster/core/config.py reads them).

A presented token is hashed (SHA-256) and its digest compared with every
entry's in constant time (``hmac.compare_digest``, no early exit), so
neither the answer's time nor the table's order tells which entry matched
or how much of a token was right. The log records a token's name, never the
token (cluster/stores/who.py).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, field

from coordinator.cluster.stores.who import TOKEN_NAME_PATTERN

__all__ = [
    "ROLES",
    "SINGLE_TOKEN_NAME",
    "TOKENS_FILE_BYTES_MAX",
    "Role",
    "Token",
    "TokenFileError",
    "TokenTable",
    "parse_tokens",
]

SINGLE_TOKEN_NAME = "admin"  # the token of token_file
TOKENS_FILE_BYTES_MAX = 1024 * 1024
TOKENS_MAX = 1000
TOKEN_CHARS_MIN = 16
TOKEN_CHARS_MAX = 4096
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what fits in "Authorization: Bearer TOKEN"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class TokenFileError(ValueError):
    """A tokens file that cannot be used; one line naming the file and the entry
    (the cluster file's loader answers it as a ConfigError: ``load_tokens`` in
    cluster/core/config.py)."""


class Role(enum.IntEnum):
    """A token's role; a higher role may do what every lower one may."""

    READ = 1
    SUBMIT = 2
    OPERATE = 3
    ADMIN = 4

    def __str__(self) -> str:
        return self.name.lower()


ROLES = {str(role): role for role in Role}


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    role: Role
    digest: bytes = field(repr=False)  # SHA-256 of the token


class TokenTable:
    """The tokens a node accepts; read it whole, replace it whole (SIGHUP)."""

    def __init__(self, tokens: tuple[Token, ...] | list[Token]) -> None:
        self.tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return f"TokenTable({', '.join(f'{t.name}:{t.role}' for t in self.tokens)})"

    @classmethod
    def single(cls, token: str) -> TokenTable:
        """The single-token mode: ``token``, named admin, role admin."""
        return cls((Token(SINGLE_TOKEN_NAME, Role.ADMIN, _digest(token)),))

    def authenticate(self, presented: str | bytes | None) -> Token | None:
        """The entry whose token is ``presented``, or None; every entry is compared."""
        if presented is None:
            return None
        digest = _digest(presented)
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.digest) and found is None:
                found = token
        return found

    def bearer(self, header: str | bytes | None) -> Token | None:
        """The entry of an ``Authorization`` value ``Bearer TOKEN``, or None."""
        if isinstance(header, bytes):
            header = header.decode("latin-1")
        if not isinstance(header, str) or not header.startswith("Bearer "):
            return None
        return self.authenticate(header[len("Bearer ") :])


def _digest(token: str | bytes) -> bytes:
    data = token.encode("utf-8", "surrogatepass") if isinstance(token, str) else token
    return hashlib.sha256(data).digest()


def parse_tokens(text: str, where: str) -> tuple[Token, ...]:
    """The entries of a tokens file's text; TokenFileError (one line, naming
    ``where`` and the entry) for anything wrong."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TokenFileError(f"{where}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"tokens"}
    if unknown:
        raise TokenFileError(f"{where}: unknown key {sorted(unknown)[0]!r} (a tokens file has [[tokens]] entries)")
    entries = doc.get("tokens")
    if not isinstance(entries, list) or not entries:
        raise TokenFileError(f"{where}: needs [[tokens]] entries")
    if len(entries) > TOKENS_MAX:
        raise TokenFileError(f"{where}: at most {TOKENS_MAX} tokens")
    tokens: list[Token] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for i, entry in enumerate(entries):
        at = f"{where}: tokens[{i}]"
        if not isinstance(entry, dict):
            raise TokenFileError(f"{at}: must be a table")
        unknown = set(entry) - {"name", "role", "token", "sha256"}
        if unknown:
            raise TokenFileError(f"{at}.{sorted(unknown)[0]}: unknown field")
        name = entry.get("name")
        if not isinstance(name, str) or not TOKEN_NAME_PATTERN.fullmatch(name):
            raise TokenFileError(f"{at}.name: must match [a-z0-9][a-z0-9._-]{{0,63}}")
        if name in names:
            raise TokenFileError(f"{at}.name: {name!r} is also the name of tokens[{names[name]}]")
        role = ROLES.get(entry.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise TokenFileError(f"{at}.role: must be one of {', '.join(ROLES)}, not {entry.get('role')!r}")
        if ("token" in entry) == ("sha256" in entry):
            raise TokenFileError(f"{at}: give exactly one of token or sha256")
        if "token" in entry:
            token = entry["token"]
            if not isinstance(token, str) or not TOKEN_CHARS_MIN <= len(token) <= TOKEN_CHARS_MAX:
                raise TokenFileError(f"{at}.token: must have {TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} characters")
            if not _TOKEN.fullmatch(token):
                raise TokenFileError(f"{at}.token: printable ASCII only, no spaces")
            digest = _digest(token)
        else:
            hexdigest = entry["sha256"]
            if not isinstance(hexdigest, str) or not _SHA256.fullmatch(hexdigest):
                raise TokenFileError(f"{at}.sha256: must be the 64 hex digits of the token's SHA-256")
            digest = bytes.fromhex(hexdigest)
        if digest in digests:
            raise TokenFileError(f"{at}: the same token as tokens[{digests[digest]}]; every token names one holder")
        names[name], digests[digest] = i, i
        tokens.append(Token(name, role, digest))
    return tuple(tokens)
