"""Output as the docker CLI prints it: --format handling, aligned tables, human units.

Rules:
- ``print_rows(rows, fmt, default, headers)``: ``fmt`` empty means ``default``; ``json`` means
  one JSON object per line; ``table …`` prints a header line (each field replaced by its
  column name) then the rows, aligned like Go's tabwriter as the docker CLI sets it up
  (minimum cell width 10, padding 3, cells separated by ``\\t``). Otherwise one rendered line
  per row. ``\\t`` and ``\\n`` typed literally in a format become a tab and a newline.
- Sizes are decimal with 3 significant digits (``4.26MB``, go-units' HumanSizeWithPrecision
  as the CLI calls it), memory in binary units (``1.5MiB``); durations as go-units'
  HumanDuration (``2 minutes``, ``About an hour``).
- Lists the docker CLI sorts by name (networks, volumes, ``port``) use ``natural_sorted``,
  fvbommel/sortorder's NaturalLess (digit runs compare as numbers, digits before the rest).
- Plain stdlib, cheap to import: ``berth ps`` prints through this module.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO, TypeVar

from berth.cli.template import Record, Template
from berth.humanize import human_duration

T = TypeVar("T")
MIN_WIDTH = 10
PADDING = 3


def unescape(fmt: str) -> str:
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def align(lines: Iterable[str], min_width: int = MIN_WIDTH) -> str:
    """Tab-separated cells aligned in columns (Go's tabwriter: min width 10, padding 3)."""
    rows = [line.split("\t") for line in lines]
    widths: list[int] = []
    for cells in rows:
        for i, cell in enumerate(cells[:-1]):  # a line's last cell does not set a width
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    out = []
    for cells in rows:
        padded = [
            cell.ljust(max(widths[i] + PADDING, min_width)) for i, cell in enumerate(cells[:-1])
        ]
        out.append("".join(padded) + cells[-1])
    return "".join(line + "\n" for line in out)


def format_rows(
    rows: Iterable[Mapping[str, Any]], fmt: str, default: str, headers: Mapping[str, Any]
) -> str:
    fmt = unescape(fmt or default)
    table = fmt.startswith("table")
    if table:
        fmt = fmt[len("table") :].lstrip(" ")
        if not fmt.strip():
            fmt = unescape(default)[len("table") :].lstrip(" ")
    template = Template(fmt)
    rendered = [template.render(row) for row in rows]
    if not table:
        return "".join(line + "\n" for line in rendered)
    header = Template(fmt).render(Record({k: v for k, v in headers.items()}))
    text = "\n".join([header, *rendered])
    return align(text.split("\n"))


def print_rows(
    rows: Iterable[Mapping[str, Any]],
    fmt: str,
    default: str,
    headers: Mapping[str, Any],
    out: TextIO | None = None,
) -> None:
    (out or sys.stdout).write(format_rows(rows, fmt, default, headers))


# ------------------------------------------------------------------ units

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def _go_g(value: float, precision: int) -> str:
    text = f"{value:.{precision}g}"
    return text


def _scaled(size: float, base: float, units: tuple[str, ...], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return _go_g(size, precision) + units[i]


def human_size(size: float, precision: int = 3) -> str:
    """``4.26MB``: decimal units, ``precision`` significant digits."""
    return _scaled(float(size), 1000.0, _DECIMAL, precision)


def binary_size(size: float) -> str:
    """``1.5MiB``: binary units, 4 significant digits (what ``stats`` prints)."""
    return _scaled(float(size), 1024.0, _BINARY, 4)


def ago(unix_seconds: float, now: float | None = None) -> str:
    return human_duration((now if now is not None else time.time()) - unix_seconds) + " ago"


def ellipsis(text: str, width: int) -> str:
    """At most ``width`` characters, the last one ``…`` when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def short_id(full: str) -> str:
    return full.removeprefix("sha256:")[:12]


def unix_time_text(unix_seconds: float) -> str:
    """Go's time.Time String() for a local time: ``2026-11-26 18:51:00 +0000 UTC``."""
    t = time.localtime(unix_seconds)
    return time.strftime("%Y-%m-%d %H:%M:%S %z %Z", t)


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 time (nanoseconds allowed); 0 for Go's zero time."""
    if not text or text.startswith("0001-"):
        return 0.0
    import calendar

    main, _, rest = text.partition(".")
    fraction = 0.0
    zone = ""
    if rest:
        digits = ""
        for i, c in enumerate(rest):
            if not c.isdigit():
                zone = rest[i:]
                break
            digits += c
        fraction = float("0." + digits) if digits else 0.0
    else:
        for marker in ("Z", "+", "-"):
            at = main.rfind(marker)
            if at > 10:
                main, zone = main[:at], main[at:]
                break
    base = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    offset = 0
    if zone and zone != "Z":
        sign = -1 if zone[0] == "+" else 1
        hours, _, minutes = zone[1:].partition(":")
        offset = sign * (int(hours) * 3600 + int(minutes or 0) * 60)
    return base + fraction + offset


def go_time_text(rfc3339: str) -> str:
    """Go's time.Time String() of an RFC 3339 time as JSON carries it:
    ``2026-11-26T21:50:00.1234Z`` → ``2026-11-26 21:50:00.1234 +0000 UTC``."""
    if not rfc3339 or len(rfc3339) < 19:
        return "0001-01-01 00:00:00 +0000 UTC"
    date, clock = rfc3339[:10], rfc3339[11:19]
    rest = rfc3339[19:]
    fraction = ""
    if rest.startswith("."):
        end = 1
        while end < len(rest) and rest[end].isdigit():
            end += 1
        fraction, rest = rest[1:end].rstrip("0"), rest[end:]
    zone = "+0000 UTC" if rest in ("Z", "") else f"{rest[:3]}{rest[4:6]} {rest[:3]}{rest[4:6]}"
    return f"{date} {clock}{'.' + fraction if fraction else ''} {zone}"


def _natural_less(a: str, b: str) -> bool:
    i = j = 0
    while i < len(a) and j < len(b):
        da, db = a[i].isdigit(), b[j].isdigit()
        if da != db:
            return da
        if not da:
            if a[i] != b[j]:
                return a[i] < b[j]
            i += 1
            j += 1
            continue
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        start_a, start_b = i, j
        while i < len(a) and a[i].isdigit():
            i += 1
        while j < len(b) and b[j].isdigit():
            j += 1
        number_a, number_b = a[start_a:i], b[start_b:j]
        if len(number_a) != len(number_b):
            return len(number_a) < len(number_b)
        if number_a != number_b:
            return number_a < number_b
        if start_a != start_b:
            return start_a < start_b
    return len(a) < len(b)


def natural_sorted(items: Iterable[T], key: Callable[[T], str] = str) -> list[T]:
    """``items`` in sortorder.NaturalLess order of ``key`` (``net2`` before ``net10``)."""
    import functools

    def compare(x: T, y: T) -> int:
        kx, ky = key(x), key(y)
        return -1 if _natural_less(kx, ky) else (1 if _natural_less(ky, kx) else 0)

    return sorted(items, key=functools.cmp_to_key(compare))
