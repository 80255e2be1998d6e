"""Typed reads of a compose file's values, and the syntaxes of durations and sizes.

Rules: every read names the file (from the merge's origins), the key path and the problem in
its ``ComposeError``; a wrong type says what was expected and what was found. Durations are
Go's (``1m30s``, ``500ms``; a bare number is seconds), sizes binary (``64m``, ``1gb``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from typing import Any

from berth.cli.compose.loader import ComposeError, Merged, type_name, where

_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000,
}  # fmt: skip


class Fields:
    """Typed reads of one mapping, errors naming the file and the field's path."""

    def __init__(self, data: Mapping[str, Any], path: str, merged: Merged, section: str) -> None:
        self.data = data
        self.path = path
        self.merged = merged
        self.section = section

    def error(self, key: str, problem: str) -> ComposeError:
        top = re.split(r"[.\[]", key, maxsplit=1)[0]
        file = self.merged.origin_of(self.section, top)
        full = f"{self.path}.{key}" if key else self.path
        return ComposeError(f"{where(file, full)}: {problem}")

    def get(self, key: str, kinds: tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(key, f"must be {_kinds(kinds)}, not {type_name(value)}")
        if not isinstance(value, kinds):
            raise self.error(key, f"must be {_kinds(kinds)}, not {type_name(value)}")
        return value

    def string(self, key: str, default: str | None = None) -> str | None:
        value = self.get(key, (str, int, float))
        return default if value is None else str(value)

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.get(key, (bool,))
        return default if value is None else bool(value)

    def integer(self, key: str) -> int | None:
        value = self.get(key, (int, str))
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            raise self.error(key, f'invalid integer "{value}"') from None

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, (list, str))
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        for i, item in enumerate(items):
            if not isinstance(item, str | int | float) or isinstance(item, bool):
                raise self.error(f"{key}[{i}]", f"must be a string, not {type_name(item)}")
        return tuple(str(i) for i in items)

    def mapping(self, key: str) -> dict[str, str]:
        """A ``KEY: value`` mapping or a ``["KEY=value", "KEY"]`` list (a bare KEY maps to "",
        except in ``environment``, where the caller takes it from the shell)."""
        value = self.get(key, (dict, list))
        if value is None:
            return {}
        if isinstance(value, dict):
            return {str(k): "" if v is None else _scalar_text(v) for k, v in value.items()}
        result: dict[str, str] = {}
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{key}[{i}]", f"must be a string, not {type_name(item)}")
            name, _, text = item.partition("=")
            result[name] = text
        return result

    def command(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key, (str, list))
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as e:
                raise self.error(key, f'cannot split "{value}": {e}') from None
        return self.strings(key)

    def duration(self, key: str) -> int | None:
        value = self.get(key, (str, int, float))
        if value is None:
            return None
        try:
            return parse_duration(str(value))
        except ValueError:
            raise self.error(key, f'invalid duration "{value}"') from None

    def size(self, key: str) -> int | None:
        value = self.get(key, (str, int))
        if value is None:
            return None
        try:
            return parse_size(str(value))
        except ValueError:
            raise self.error(key, f'invalid size "{value}"') from None

    def cpus(self, key: str) -> int | None:
        value = self.get(key, (str, int, float))
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            raise self.error(key, f'invalid number of CPUs "{value}"') from None
        if number < 0:
            raise self.error(key, f'invalid number of CPUs "{value}": must be positive')
        return round(number * 1e9)


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping"}  # fmt: skip
    unique = list(dict.fromkeys(names[k] for k in kinds))
    return " or ".join(unique)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_duration(text: str) -> int:
    """Go durations (``1m30s``, ``500ms``; a bare number is seconds) in nanoseconds."""
    rest = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return int(float(rest) * 1e9)
    total = 0.0
    pattern = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
    position = 0
    while position < len(rest):
        match = pattern.match(rest, position)
        if match is None:
            raise ValueError(text)
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not rest:
        raise ValueError(text)
    return int(total)


def parse_size(text: str) -> int:
    """``64m``, ``64M``, ``64mb``, ``1g``, ``1024`` (bytes) → bytes (binary units)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bkmgt]?)b?", text.strip().lower())
    if match is None:
        raise ValueError(text)
    factor = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    return int(float(match.group(1)) * factor[match.group(2)])
