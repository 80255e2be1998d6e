"""Typed reading of JSON documents, with errors that name the field.

Rules: every reader takes the dotted path of the value it reads (``process.user.uid``) and
raises ``InvalidArgument`` naming that path, the expected type and the value it found. Missing
optional fields give the default; nothing here coerces one JSON type into another.
"""

from __future__ import annotations

from berth.errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")
    Obj = dict[str, Any]


def fail(path: str, expected: str, value: Any) -> InvalidArgument:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return InvalidArgument(f"{path}: expected {expected}, got {shown}")


def obj(value: Any, path: str) -> Obj:
    if not isinstance(value, dict):
        raise fail(path, "an object", value)
    return value


def opt_obj(parent: Obj, key: str, path: str) -> Obj | None:
    value = parent.get(key)
    return None if value is None else obj(value, f"{path}.{key}" if path else key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def string(parent: Obj, key: str, path: str, default: str | None = None) -> str:
    value = parent.get(key, default)
    if not isinstance(value, str):
        if value is None:
            raise InvalidArgument(f"{_join(path, key)}: required field is missing")
        raise fail(_join(path, key), "a string", value)
    return value


def opt_string(parent: Obj, key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise fail(_join(path, key), "a string", value)
    return value


def boolean(parent: Obj, key: str, path: str, default: bool = False) -> bool:
    value = parent.get(key, default)
    if not isinstance(value, bool):
        raise fail(_join(path, key), "true or false", value)
    return value


def opt_int(
    parent: Obj, key: str, path: str, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(_join(path, key), "an integer", value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise fail(_join(path, key), f"an integer in [{minimum}, {maximum}]", value)
    return value


def integer(
    parent: Obj,
    key: str,
    path: str,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = opt_int(parent, key, path, minimum, maximum)
    if value is None:
        if default is None:
            raise InvalidArgument(f"{_join(path, key)}: required field is missing")
        return default
    return value


def strings(parent: Obj, key: str, path: str) -> tuple[str, ...]:
    value = parent.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(_join(path, key), "a list of strings", value)
    return tuple(value)


def ints(
    parent: Obj, key: str, path: str, minimum: int | None = None, maximum: int | None = None
) -> tuple[int, ...]:
    value = parent.get(key)
    if value is None:
        return ()
    where = _join(path, key)
    if not isinstance(value, list):
        raise fail(where, "a list of integers", value)
    for i, v in enumerate(value):
        if not isinstance(v, int) or isinstance(v, bool):
            raise fail(f"{where}[{i}]", "an integer", v)
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            raise fail(f"{where}[{i}]", f"an integer in [{minimum}, {maximum}]", v)
    return tuple(value)


def string_map(parent: Obj, key: str, path: str) -> dict[str, str]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise fail(_join(path, key), "an object of strings", value)
    return dict(value)


def items(parent: Obj, key: str, path: str, read: Callable[[Obj, str], T]) -> tuple[T, ...]:
    """Read a list of objects, each with ``read(object, "path[i]")``."""
    value = parent.get(key)
    if value is None:
        return ()
    where = _join(path, key)
    if not isinstance(value, list):
        raise fail(where, "a list", value)
    return tuple(read(obj(v, f"{where}[{i}]"), f"{where}[{i}]") for i, v in enumerate(value))
