"""The error both definition parsers raise, each under its own name."""

from __future__ import annotations


class FieldError(Exception):
    """A field of a definition is invalid; str() is "field: message".

    saga/errors.py and twopc/errors.py derive their DefinitionError from it:
    `.field` names where ("steps[1].action.path"), `.message` what is wrong.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"
