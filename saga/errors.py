"""Errors of the saga model: what its functions raise, and when.

    DefinitionError     a saga definition breaks the schema or a bound;
                        `.field` names where ("steps[1].action.path"),
                        `.message` says what is wrong; str() is
                        "field: message" (grammar/errors.py).
    SubstitutionError   a `${steps.NAME.output.PATH}` reference cannot be
                        resolved against the outputs at hand (the path is
                        not in the output, the step has no output).
    InputError          (a ValueError) an argument the model does not take:
                        `start()` with a definition without an id or an
                        `at_ms` that is not a non-negative int, a plain event
                        that does not decode, an outcome event built with a
                        bad `fence` or `duration_ms` (saga/events.py). A
                        bug of the caller.
    TypeError           `step()` was given an object that is not a saga
                        event (the same answer as twopc/machine.py's).
    InvariantError      (an AssertionError) a state breaks what holds of
                        every saga state (saga/invariants.py): a bug.
                        Raised explicitly, never by `assert`, so that
                        `python -O` keeps every check.

An event that does not apply to the state is not an error: late, duplicate,
out of phase, for another step, for a terminal saga, or with a count that is
not a non-negative int, `step()` returns the state unchanged (the same
object) and no effects. That is what makes redelivery harmless.

One difference with twopc stays: a saga event's fields are checked when it
is applied (a no-op), a transaction event's when it is built (twopc/model.py;
its store then rejects the entry) - but for `fence` and `duration_ms`,
checked when built in both machines: no entry before them has them. Each is how the log has always applied
such entries, and a replica must apply an old journal as it did
(tests/cluster/test_state_old_journal.py).
"""

from __future__ import annotations

from coordinator.grammar import FieldError


class DefinitionError(FieldError):
    """A saga definition is invalid; str() is "field: message"."""


class SubstitutionError(Exception):
    """A reference in a body does not resolve; str() is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(ValueError):
    """An argument the model does not take (a bug of the caller)."""


class InvariantError(AssertionError):
    """A saga state breaks an invariant: a bug, whatever the input."""


def invariant(holds: bool, *what: object) -> None:
    """Raise InvariantError(*what) unless `holds`: an `assert` that
    `python -O` keeps."""
    if not holds:
        raise InvariantError(*what)
