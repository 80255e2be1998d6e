"""JSON for the container start path, without importing ``json``.

``import json`` pulls in ``re`` and ``enum`` (~15 ms here, on every runtime invocation). The C
scanner and encoder behind it (``_json``) need neither, so compact reading and writing go
straight to them; indented output (for people) takes the ordinary ``json`` module. Rules:
``loads`` accepts what ``json.loads`` accepts (strict, NaN/Infinity allowed) and raises
``ValueError`` naming the position (bytes must be UTF-8, as in runc); ``dumps`` writes compact
ASCII and names the type of any value JSON cannot hold.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_WHITESPACE = " \t\n\r"


class _ScannerContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__
    memo: dict[str, str] = {}


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]


def _unsupported(obj: object) -> object:
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_encode = _json.make_encoder(
    None,  # markers: no cycle check (we only write trees we built)
    _unsupported,
    _json.encode_basestring_ascii,
    None,  # indent
    ":",
    ",",
    False,  # sort_keys
    False,  # skipkeys
    True,  # allow_nan
)


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        text = text.decode()
    start = 0
    while start < len(text) and text[start] in _WHITESPACE:
        start += 1
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"invalid JSON at character {exc.value}") from None
    while end < len(text) and text[end] in _WHITESPACE:
        end += 1
    if end != len(text):
        raise ValueError(f"invalid JSON: extra data at character {end}")
    return obj


def dumps(obj: Any) -> str:
    return "".join(_encode(obj, 0))


def dumps_pretty(obj: Any, indent: int | str = 2) -> str:
    import json

    return json.dumps(obj, indent=indent)
