"""``@value``: frozen value classes that cost nothing to import.

Why not ``dataclasses``: importing it (with ``inspect``) and decorating the ~30 classes of the
OCI types costs ~25 ms per runtime invocation, as much as runc takes to run a whole container.
``@value`` gives the same contract for the way Berth uses them — keyword or positional
construction from annotated fields with defaults, immutability, ``==``, ``hash``, ``repr`` and
``replace`` — with no code generation. Type checkers see a frozen dataclass
(``dataclass_transform``). Rules: fields are the class's own annotations in order (ClassVar-free
classes only); a mutable default must be given as ``field(default_factory=...)``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar, dataclass_transform

    T = TypeVar("T")


else:

    def dataclass_transform(**_kwargs: object) -> object:
        return lambda decorated: decorated


_MISSING = object()


class _Field:
    __slots__ = ("default", "default_factory")

    def __init__(self, default: object, default_factory: Callable[[], object] | None) -> None:
        self.default = default
        self.default_factory = default_factory


def field(*, default: Any = _MISSING, default_factory: Callable[[], Any] | None = None) -> Any:
    return _Field(default, default_factory)


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    names: tuple[str, ...] = cls.__value_fields__
    if len(args) > len(names):
        raise TypeError(f"{cls.__name__}() takes {len(names)} arguments, got {len(args)}")
    setter = object.__setattr__
    for name, arg in zip(names, args, strict=False):
        setter(self, name, arg)
    for name in names[len(args) :]:
        if name in kwargs:
            setter(self, name, kwargs.pop(name))
            continue
        default = cls.__value_defaults__.get(name, _MISSING)
        if default is _MISSING:
            raise TypeError(f"{cls.__name__}() missing argument {name!r}")
        if isinstance(default, _Field):
            if default.default_factory is not None:
                setter(self, name, default.default_factory())
            elif default.default is _MISSING:
                raise TypeError(f"{cls.__name__}() missing argument {name!r}")
            else:
                setter(self, name, default.default)
        else:
            setter(self, name, default)
    if kwargs:
        raise TypeError(f"{cls.__name__}() got unexpected arguments {sorted(kwargs)}")


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in self.__value_fields__)


def _eq(self: Any, other: object) -> Any:
    if type(other) is not type(self):
        return NotImplemented
    equal: bool = _values(self) == _values(other)
    return equal


def _hash(self: Any) -> int:
    # computed once: a frozen value never changes, and a deep one (a seccomp profile of ~360
    # rules) is a cache key on the container start path
    cached: int | None = self.__dict__.get("_value_hash")
    if cached is None:
        cached = hash(_values(self))
        object.__setattr__(self, "_value_hash", cached)
    return cached


def _repr(self: Any) -> str:
    inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__value_fields__)
    return f"{type(self).__name__}({inner})"


def _frozen(self: Any, name: str, _value: object = None) -> None:
    raise AttributeError(f"{type(self).__name__} is immutable: cannot change {name!r}")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[T] | None = None, /, *, frozen: bool = True) -> Any:
    """Decorate a class as a value type; ``@value(frozen=False)`` for a mutable record."""

    def decorate(klass: type[T]) -> type[T]:
        annotations = klass.__dict__.get("__annotations__", {})  # noqa: RUF063 - no inspect import
        names = tuple(annotations)
        defaults = {n: klass.__dict__[n] for n in names if n in klass.__dict__}
        for name in defaults:
            delattr(klass, name)  # the instance attribute set in __init__ is the only one
        attrs: dict[str, Any] = {
            "__value_fields__": names,
            "__value_defaults__": defaults,
            "__init__": _init,
            "__eq__": _eq,
            "__repr__": _repr,
        }
        if frozen:
            attrs.update(__hash__=_hash, __setattr__=_frozen, __delattr__=_frozen)
        else:
            attrs["__hash__"] = None
        for key, attr in attrs.items():
            setattr(klass, key, attr)
        return klass

    return decorate if cls is None else decorate(cls)


def replace(obj: T, **changes: Any) -> T:
    """A copy of ``obj`` with some fields changed (``dataclasses.replace``)."""
    current = {name: getattr(obj, name) for name in type(obj).__value_fields__}  # type: ignore[attr-defined]
    current.update(changes)
    return type(obj)(**current)


def fields(cls: type) -> tuple[str, ...]:
    return cls.__value_fields__  # type: ignore[attr-defined, no-any-return]
