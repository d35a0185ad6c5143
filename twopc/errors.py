"""Errors of the two-phase commit model.

    DefinitionError     a transaction definition breaks the schema or a bound;
                        `.field` names where ("participants[1].prepare.path"),
                        `.message` says what is wrong.

Everything else that can go wrong inside `twopc` is a bug and fails an
`assert`: late, duplicate and out-of-phase events are not errors, they are
no-ops of `step()`.
"""

from __future__ import annotations


class DefinitionError(Exception):
    """A transaction definition is invalid; str() is "field: message"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"
