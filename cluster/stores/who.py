"""Who asked for a write: the name of the API token a command was proposed
with (never the token itself), as the log records it.

Every write the API proposes (``service.put``, ``service.delete``,
``saga.submit``, ``saga.signal``, ``saga.redrive``, ``tx.submit``) carries
``"by": NAME`` - the token's name - or ``"by": null`` on a node without
tokens. The state machine checks it here; an entry written before tokens had
names has no ``by`` and reads as null.
"""

from __future__ import annotations

import re
from typing import Any

from coordinator.consensus import Rejection

__all__ = ["TOKEN_NAME_PATTERN", "command_by", "valid_token_name"]

# A token's name in the tokens file (cluster/core/tokens.py) and in the log.
TOKEN_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def valid_token_name(name: object) -> bool:
    return isinstance(name, str) and TOKEN_NAME_PATTERN.fullmatch(name) is not None


def command_by(body: Any) -> str | None:
    """The ``by`` of a command body: a token name or None; Rejection otherwise."""
    by = body.get("by") if isinstance(body, dict) else None
    if by is not None and not valid_token_name(by):
        raise Rejection("invalid", "by: a token name ([a-z0-9][a-z0-9._-]{0,63}) or null")
    return by
