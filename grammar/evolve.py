"""``evolve``: ``dataclasses.replace`` for the machine's frozen state, faster.

Every applied saga event builds several new frozen states; ``replace``
introspects the class's fields and goes through ``__init__`` each time and
took about a fifth of the apply time under cProfile. The saga dataclasses have no ``__post_init__``
and no ``init=False`` fields, so copying the fields (names cached per
class) gives the same object.
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
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    for name in changes:
        if name not in names:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
    new = object.__new__(cls)
    for name in names:
        _setattr(new, name, changes[name] if name in changes else getattr(obj, name))
    return new
