"""What the saga and the two-phase commit definitions share: their grammar.

Both machines read a user's JSON definition with the same rules for the
parts they have in common, and both write times the same way. Those rules
live here once, so that a fix (a path that could leave a service's base
path, a body a participant could not parse) reaches both machines:

    FieldError            the base of saga's and twopc's DefinitionError:
                          `.field`, `.message`, str() "field: message"
    limits                the bounds both share: request paths, bodies,
                          workflow ids, service names
    field(), type_name()  how a field is named in an error, and a value's type
    pattern_problem()     a name or id against its pattern
    path_problem(), dot_segment_problem()
                          a request path on a registered service
    json_value_problem(), size_problem()
                          a JSON body: types, depth, 64-bit integers, size
    unknown_field_problem()
                          a field an object may not have
    format_ms()           a time (ms since the epoch) as the API writes it
    release_problem()     the release a definition may name: it runs only
                          on workers of that release (limits.RELEASE_PATTERN)
    fence_problem(), duration_problem()
                          what the executor reports of a participant call
                          in an outcome event: the fence it sent, how long
                          the call took (both machines record them)

The checks return what is wrong (None when nothing is) and raise nothing:
each machine raises its own DefinitionError with it. Pure, like the
machines: no IO, clocks or randomness, and no import of any other package
of the project (pyproject.toml, [tool.importlinter]) - saga/ and twopc/ may
not import each other, so what they share can only live below both.
"""

from . import limits
from .checks import (
    dot_segment_problem,
    duration_problem,
    fence_problem,
    field,
    json_value_problem,
    path_problem,
    pattern_problem,
    release_problem,
    size_problem,
    type_name,
    unknown_field_problem,
)
from .errors import FieldError
from .times import format_ms

__all__ = [
    "FieldError",
    "dot_segment_problem",
    "duration_problem",
    "fence_problem",
    "field",
    "format_ms",
    "json_value_problem",
    "limits",
    "path_problem",
    "pattern_problem",
    "release_problem",
    "size_problem",
    "type_name",
    "unknown_field_problem",
]
