"""The few ctypes pieces the runtime uses, built on ``_ctypes`` directly.

Why: ``import ctypes`` runs ~2 ms of Python (dozens of type classes, endian structures,
function-prototype caches) on every runtime invocation, most of it for things the runtime
never uses. This module defines only the C types, the structure base and the libc handle that
``syscalls`` needs, on the same C module that ``ctypes`` itself wraps. Rules: ``syscalls`` is
its only user; anything beyond calling a libc function with integer, pointer and string
arguments (and a char buffer for it to fill) belongs in ``ctypes`` proper (``seccomp`` uses
it, and is loaded only on demand).
"""

from __future__ import annotations

import _ctypes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Structure = _ctypes.Structure
byref = _ctypes.byref
sizeof = _ctypes.sizeof
get_errno = _ctypes.get_errno


class c_int(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801 - C's names
    _type_ = "i"


class c_uint(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "I"


class c_long(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "l"


class c_ulong(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "L"


class c_uint32(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "I"


class c_uint64(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "Q"


class c_size_t(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "L"


class c_char(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "c"


def create_string_buffer(size: int) -> Any:
    """A zeroed ``char[size]`` a function may write into; its bytes are ``.raw``."""
    array = type("c_char_Array", (_ctypes.Array,), {"_type_": c_char, "_length_": size})
    return array()


class c_char_p(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "z"


class c_void_p(_ctypes._SimpleCData):  # type: ignore[type-arg]  # noqa: N801
    _type_ = "P"


class _Function(_ctypes.CFuncPtr):
    """A cdecl libc function that saves errno for ``get_errno`` (ctypes' use_errno=True)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class Library:
    """The C library of this process (``dlopen(NULL)``): functions by attribute, as CDLL."""

    def __init__(self) -> None:
        self._handle = _ctypes.dlopen(None, 0)  # type: ignore[arg-type]  # NULL: ourselves

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        function = _Function((name, self))  # type: ignore[arg-type]  # reads ._handle
        setattr(self, name, function)
        return function
