"""Errors of the two-phase commit model: what its functions raise, and when.

    DefinitionError     a transaction definition breaks the schema or a bound;
                        `.field` names where ("participants[1].prepare.path"),
                        `.message` says what is wrong; str() is
                        "field: message" (grammar/errors.py).
    InputError          (a ValueError) an argument the model does not take:
                        `start()` with a definition without an id or an
                        `at_ms` that is not a non-negative int, an event
                        built with such an `at_ms` (a vote or phase that is
                        not one is the enum's ValueError), a plain state that
                        does not decode, `tally()` of no participants. A bug
                        of the caller, or a malformed log entry.
    TypeError           `step()` was given an object that is not a
                        two-phase commit event (the same answer as
                        saga/machine.py's).
    InvariantError      (an AssertionError) a state breaks what holds of
                        every transaction state (`check_invariants` in
                        twopc/model.py), also when `state_from_dict` decodes
                        it: a bug, or a corrupt snapshot. Raised explicitly,
                        never by `assert`, so that `python -O` keeps every
                        check.

An event that does not apply to the state is not an error: late, duplicate,
out of phase, from a service that is not a participant, after the decision,
`step()` returns the state unchanged (the same object) and no effects. That
is what makes redelivery harmless.

One difference with the saga stays: a transaction event's fields are
checked when it is built (its store then rejects the entry), a saga event's
when it is applied (a no-op, saga/machine.py). Each is how the log has
always applied such entries, and a replica must apply an old journal as it
did (tests/cluster/test_state_old_journal.py).
"""

from __future__ import annotations

from coordinator.grammar import FieldError


class DefinitionError(FieldError):
    """A transaction definition is invalid; str() is "field: message"."""


class InputError(ValueError):
    """An argument the model does not take (a bug of the caller)."""


class InvariantError(AssertionError):
    """A transaction state breaks an invariant: a bug, or a corrupt snapshot."""


def invariant(holds: bool, *what: object) -> None:
    """Raise InvariantError(*what) unless `holds`: an `assert` that
    `python -O` keeps."""
    if not holds:
        raise InvariantError(*what)
