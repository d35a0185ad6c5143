"""``evolve``: ``dataclasses.replace`` for the machines' frozen states, faster.

Every applied saga or transaction event builds several new frozen states;
``replace`` introspects the class's fields and goes through ``__init__``
each time and took about a fifth of the apply time under cProfile. Only
for dataclasses with no ``__post_init__`` and no ``init=False`` fields (the
saga's states, the transaction's state and participants): copying the
fields (names cached per class) then gives the same object. A class with a
``__post_init__`` is refused, since copying would skip it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

_COPIERS: dict[type, tuple[frozenset[str], Callable[[Any, dict], Any]]] = {}


def evolve(obj: T, **changes: Any) -> T:
    cls = type(obj)
    known = _COPIERS.get(cls)
    if known is None:
        known = _COPIERS[cls] = _copier(cls)
    names, copy = known
    if not names.issuperset(changes):
        unknown = next(name for name in changes if name not in names)
        raise TypeError(f"{cls.__name__} has no field {unknown!r}")
    return copy(obj, changes)


def _copier(cls: type) -> tuple[frozenset[str], Callable[[Any, dict], Any]]:
    """(the field names, a function that copies an instance with changes):
    one line per field, generated once per class as dataclasses generates
    ``__init__`` - a loop over the names with getattr cost twice as much."""
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: use dataclasses.replace")
    names = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    lines = ["def copy(obj, changes):", "    new = _new(cls)"]
    for name in names:
        if not name.isidentifier():  # a dataclass field always is; never build code from anything else
            raise TypeError(f"{cls.__name__}: field {name!r}")
        lines.append(f"    _set(new, {name!r}, changes[{name!r}] if {name!r} in changes else obj.{name})")
    lines.append("    return new")
    namespace: dict[str, Any] = {"_new": object.__new__, "_set": object.__setattr__, "cls": cls}
    exec("\n".join(lines), namespace)  # noqa: S102 - field names of our own dataclasses, checked above
    return frozenset(names), namespace["copy"]
