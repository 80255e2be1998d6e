"""Showing the daemon's streamed JSON messages: pulls, pushes, builds and loads.

Rules:
- A message with ``errorDetail``/``error`` ends the display and raises ``CliError`` with the
  daemon's text (exit 1), as the docker CLI does once a stream has started.
- On a terminal, layer messages (those with an ``id``) become one rich progress bar per layer,
  with ``progressDetail`` current/total when the daemon sends them, and ``stream`` text is
  printed above the bars; ``rich`` is imported only here, only then.
- Elsewhere (a pipe, a file) each message is one plain line, ``ID: status`` or the stream text,
  and progress-only updates (a ``progressDetail`` with a ``current``) are left out, as the
  docker CLI does when its output is not a terminal.
- ``aux`` messages are returned to the caller (the built image's ID, a push's digest).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TextIO

from berth.cli.common import CliError, is_terminal


def _error_of(message: dict[str, Any]) -> str | None:
    detail = message.get("errorDetail") or {}
    text = detail.get("message") or message.get("error")
    return str(text) if text else None


def _is_layer(ident: str | None) -> bool:
    """A layer's short id (12 hex digits), not a tag like ``latest`` in "latest: Pulling"."""
    return (
        bool(ident) and len(ident or "") == 12 and all(c in "0123456789abcdef" for c in ident or "")
    )


def plain_line(message: dict[str, Any]) -> str | None:
    """The line a non-terminal shows for a message, or None for progress-only updates."""
    if "stream" in message:
        return str(message["stream"])
    status = message.get("status")
    if status is None:
        return None
    detail = message.get("progressDetail") or {}
    if detail.get("current") is not None:
        return None
    prefix = f"{message['id']}: " if message.get("id") else ""
    return f"{prefix}{status}\n"


def show_plain(messages: Iterable[dict[str, Any]], out: TextIO) -> list[dict[str, Any]]:
    aux = []
    for message in messages:
        if (error := _error_of(message)) is not None:
            out.flush()
            raise CliError(error, 1)
        if "aux" in message:
            aux.append(message["aux"])
        line = plain_line(message)
        if line:
            out.write(line)
            out.flush()
    return aux


def show_rich(messages: Iterable[dict[str, Any]], out: TextIO) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
    )

    console = Console(file=out, highlight=False)
    aux = []
    tasks: dict[str, TaskID] = {}
    totals: dict[str, float | None] = {}
    columns = (
        TextColumn("{task.fields[layer]}"),
        TextColumn("{task.description:<18}"),
        BarColumn(),
        DownloadColumn(binary_units=False),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        for message in messages:
            if (error := _error_of(message)) is not None:
                raise CliError(error, 1)
            if "aux" in message:
                aux.append(message["aux"])
            if "stream" in message:
                progress.console.print(str(message["stream"]).rstrip("\n"), markup=False)
                continue
            status = message.get("status")
            layer = str(message.get("id") or "")
            if status is None:
                continue
            if not _is_layer(layer):
                progress.console.print(f"{layer}: {status}" if layer else status, markup=False)
                continue
            detail = message.get("progressDetail") or {}
            if layer not in tasks:
                tasks[layer] = progress.add_task(status, layer=f"{layer}:", total=None)
            current = detail.get("current")
            if current is not None:
                totals[layer] = detail.get("total") or totals.get(layer)
                progress.update(
                    tasks[layer], description=status, completed=current, total=totals[layer]
                )
            elif status.endswith("complete") or status in ("Already exists", "Pushed"):
                whole = totals.get(layer) or 1
                progress.update(tasks[layer], description=status, total=whole, completed=whole)
            else:
                progress.update(tasks[layer], description=status)
    return aux


def show(messages: Iterable[dict[str, Any]], out: TextIO) -> list[dict[str, Any]]:
    """Display a message stream; the ``aux`` payloads it carried."""
    if is_terminal(out):
        return show_rich(messages, out)
    return show_plain(messages, out)
