"""Builds frozen model values at the cost of a plain class; parses nothing, decides nothing.

Why: a frozen dataclass's generated `__init__` stores each field through `object.__setattr__`
(its own `__setattr__` refuses), one C call per field: for `Event`'s 21 fields that is several
microseconds on CPython 3.11, more than parsing the trace line it came from. `fast_builder(cls)`
returns an unfrozen twin dataclass with the same fields, defaults and `__slots__`, whose
`__init__` stores plain slots and then sets `__class__ = cls`, which CPython allows between
classes with the same slot layout (Python data model, "__class__ assignment"). What it builds is
an ordinary `cls` instance: equal to, hashed like and as frozen as one built by `cls(...)`. Use
the builder only to construct values (it is not `cls`: never use it in isinstance()).

When `cls` is not a plain frozen slots dataclass (a `__post_init__`, a default factory, an
`init=False` field, another layout), the builder is `cls` itself: never wrong, only slower.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def _plain_frozen_slots(cls: type[Any]) -> bool:
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return False
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or cls.__bases__ != (object,):
        return False
    fields = dataclasses.fields(cls)
    names = tuple(f.name for f in fields)
    return getattr(cls, "__slots__", None) == names and all(
        f.init and f.default_factory is dataclasses.MISSING for f in fields
    )


def fast_builder(cls: type[T]) -> Callable[..., T]:
    """A callable taking the same arguments as `cls(...)` (positional or keyword, same defaults)
    and returning an equal `cls` instance, built without the frozen-dataclass `__init__`."""
    if not _plain_frozen_slots(cls):
        return cls

    # The twin: the same fields and defaults, not frozen, so its generated __init__ stores plain
    # slots; its __post_init__ (the last thing that __init__ does) turns the value into a `cls`.
    def become_cls(self: Any) -> None:
        self.__class__ = cls

    plain: Any = cls  # checked above to be a dataclass
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(plain)
    ]
    twin: type[Any] = dataclasses.make_dataclass(
        f"_{cls.__name__}Twin",
        fields,
        namespace={"__post_init__": become_cls},
        slots=True,
        eq=False,
        repr=False,
    )
    probe = object.__new__(twin)
    try:
        probe.__class__ = cls
    except TypeError:  # layouts differ after all: keep the real constructor
        return cls
    return cast("Callable[..., T]", twin)
