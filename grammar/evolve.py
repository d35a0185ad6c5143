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

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}
_setattr = object.__setattr__


def evolve(obj: T, **changes: Any) -> T:
    cls = type(obj)
    names = _FIELD_NAMES.get(cls)
    if names is None:
        if hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__} has a __post_init__: use dataclasses.replace")
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    for name in changes:
        if name not in names:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
    new = object.__new__(cls)
    for name in names:
        _setattr(new, name, changes[name] if name in changes else getattr(obj, name))
    return new
