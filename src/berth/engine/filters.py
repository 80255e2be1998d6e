"""Docker's ``filters`` query parameter: parsing, validation and the matchers handlers use.

The CLI sends ``filters={"dangling":{"true":true},"label":{"a=b":true}}`` (a map of value ->
true); clients before API 1.24 and some libraries send ``{"dangling":["true"]}``; both mean the
same. A filter name an endpoint does not know is ``InvalidArgument("invalid filter 'x'")`` and a
bad boolean ``invalid filter 'dangling=maybe'``, as dockerd answers. Values of one name are
OR-ed by the handlers, except ``label`` (every label filter must match: moby's MatchKVList).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping

from berth.errors import InvalidArgument

_TRUE = frozenset({"1", "true"})
_FALSE = frozenset({"0", "false"})
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


class Filters:
    """Filter name -> the values given for it (in the order first seen)."""

    def __init__(self, values: Mapping[str, Iterable[str]] | None = None) -> None:
        self._values: dict[str, list[str]] = {}
        for name, items in (values or {}).items():
            for item in items:
                self.add(name, item)

    def add(self, name: str, value: str) -> None:
        values = self._values.setdefault(name, [])
        if value not in values:
            values.append(value)

    @staticmethod
    def parse(text: str | None) -> Filters:
        """The ``filters`` query value (absent or empty means no filters)."""
        if text is None or not text.strip():
            return Filters()
        try:
            data = json.loads(text)
        except ValueError as e:
            raise InvalidArgument(f"invalid filters {text!r}: {e}") from None
        if not isinstance(data, dict):
            raise InvalidArgument(f"invalid filters {text!r}: expected a JSON object")
        out = Filters()
        for name, given in data.items():
            if isinstance(given, dict):
                for item, on in given.items():
                    if on is True:
                        out.add(str(name), str(item))
            elif isinstance(given, list):
                for item in given:
                    out.add(str(name), str(item))
            else:
                raise InvalidArgument(
                    f"invalid filters {text!r}: {name!r} must map to an object or a list"
                )
        return out

    def to_json(self) -> dict[str, dict[str, bool]]:
        return {name: dict.fromkeys(values, True) for name, values in self._values.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __bool__(self) -> bool:
        return bool(self._values)

    def names(self) -> list[str]:
        return list(self._values)

    def get(self, name: str) -> list[str]:
        return list(self._values.get(name, ()))

    def validate(self, accepted: Iterable[str]) -> None:
        """Refuse names this endpoint does not know, as dockerd does."""
        known = set(accepted)
        for name in self._values:
            if name not in known:
                raise InvalidArgument(f"invalid filter '{name}'")

    def bool_value(self, name: str, default: bool | None = None) -> bool | None:
        """A boolean filter (``dangling=true``); ``default`` when absent."""
        values = self._values.get(name)
        if not values:
            return default
        parsed = set()
        for text in values:
            low = text.lower()
            if low in _TRUE:
                parsed.add(True)
            elif low in _FALSE:
                parsed.add(False)
            else:
                raise InvalidArgument(f"invalid filter '{name}={text}'")
        if len(parsed) > 1:
            raise InvalidArgument(f"invalid filter '{name}': both true and false given")
        return parsed.pop()

    def match_labels(self, labels: Mapping[str, str], name: str = "label") -> bool:
        """Every ``key`` / ``key=value`` under ``name`` matches ``labels`` (True if none)."""
        return all(label_matches(f, labels) for f in self._values.get(name, ()))

    def excluded_by_labels(self, labels: Mapping[str, str], name: str = "label!") -> bool:
        """Some ``key`` / ``key=value`` under ``label!`` matches ``labels`` (prune's filter)."""
        return any(label_matches(f, labels) for f in self._values.get(name, ()))


def label_matches(filter_value: str, labels: Mapping[str, str]) -> bool:
    key, eq, wanted = filter_value.partition("=")
    if key not in labels:
        return False
    return not eq or labels[key] == wanted


def parse_bool(text: str | None, default: bool = False) -> bool:
    """A boolean query parameter as moby reads it: absent is ``default``; ``""``, ``0``,
    ``no``, ``false`` and ``none`` (any case) are false; anything else is true. docker-py
    sends ``True``/``False``, the CLI ``1``."""
    if text is None:
        return default
    return text.strip().lower() not in ("", "0", "no", "false", "none")


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` never match ``/``; ``[...]`` classes, ``\\``
    escapes. A malformed pattern matches nothing (``InvalidArgument`` is for the caller)."""
    return _compile_pattern(pattern).fullmatch(name) is not None


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("^", "]") else i + 1)
            if end < 0:
                raise InvalidArgument(f"invalid reference filter pattern {pattern!r}")
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "^" + body[1:].replace("\\", "\\\\")
            else:
                body = body.replace("\\", "\\\\")
            out.append(f"(?!/)[{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def reference_matches(pattern: str, familiar_ref: str) -> bool:
    """moby's ``reference.FamiliarMatch``: the pattern against ``busybox:latest``, else against
    the name alone (``busybox``)."""
    if path_match(pattern, familiar_ref):
        return True
    name = familiar_ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return path_match(pattern, name)


def parse_timestamp(text: str, now: float | None = None) -> float:
    """``until``/``since`` values: a Go duration before now (``10m``, ``1h30m``), unix seconds
    (``1700000000`` or ``1700000000.5``), or an RFC 3339 date or time."""
    now = time.time() if now is None else now
    value = text.strip()
    if not value:
        raise InvalidArgument("invalid timestamp: empty")
    if _DURATION.match(value):
        total, pos = 0.0, 0
        for m in _DURATION.finditer(value):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if pos == len(value):
            return now - total
    try:
        return float(value)
    except ValueError:
        pass
    import datetime

    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(f"invalid timestamp {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
