"""Errors of the saga model.

    DefinitionError     a saga definition breaks the schema or a bound;
                        `.field` names where ("steps[1].action.path"),
                        `.message` says what is wrong; str() is
                        "field: message".
    SubstitutionError   a `${steps.NAME.output.PATH}` reference cannot be
                        resolved against the outputs at hand (the path is
                        not in the output, the step has no output).

Everything else that can go wrong inside `saga` is a bug and fails an
`assert`: late, duplicate and out-of-phase events are not errors, they are
no-ops of `step()`.
"""

from __future__ import annotations


class DefinitionError(Exception):
    """A saga definition is invalid; str() is "field: message"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.field = field
        self.message = message

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class SubstitutionError(Exception):
    """A reference in a body does not resolve; str() is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
