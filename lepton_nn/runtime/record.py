"""Plain records for the runtime's small value types (a manifest row, a layer's shape, a
quantized weight, a parsed network): the fields named once in ``_fields``, an explicit
``__init__``, and the equality and repr a dataclass would give.

Why not :mod:`dataclasses`: it writes each class's methods as source text and compiles them
when the module is imported; for the runtime's ten record classes that was about a fifth of
``import lepton_nn.runtime``, paid by every process that serves a model (cold start).
"""

from __future__ import annotations

from typing import Any


class Record:
    """Equality (same class, equal fields) and repr over ``_fields``; not hashable, as a
    dataclass with ``eq`` is not."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _values(self) -> tuple:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__qualname__}({inner})"


class FrozenRecord(Record):
    """A :class:`Record` whose fields are set once, by ``__init__`` through :meth:`_set`;
    hashable over its fields; :meth:`replace` makes a changed copy."""

    __slots__ = ()

    def _set(self, **values: Any) -> None:
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a {type(self).__name__}")

    def __hash__(self) -> int:
        return hash(self._values())

    def replace(self, **changes: Any):
        return type(self)(**{**{f: getattr(self, f) for f in self._fields}, **changes})
