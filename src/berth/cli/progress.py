"""Showing the daemon's streamed JSON messages: pulls, pushes, builds and loads.

Rules:
- A message with ``errorDetail``/``error`` ends the display and raises ``CliError`` with the
  daemon's text (exit 1), as the docker CLI does once a stream has started.
- On a terminal, layer messages (an ``id`` of 12 hex digits) become one rich progress bar per
  layer, with ``progressDetail`` current/total when the daemon sends them; a build's
  ``Step N/M`` lines drive one step bar; ``stream`` text and other statuses are printed above
  the bars. ``rich`` is imported only here, only then.
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


def step_of(text: str) -> tuple[int, int] | None:
    """(N, M) of a build's ``Step N/M : …`` line."""
    if not text.startswith("Step "):
        return None
    head = text[5:].split(" ", 1)[0]
    done, _, total = head.partition("/")
    return (int(done), int(total)) if done.isdigit() and total.isdigit() else None


class _RichDisplay:
    """One bar per layer (pull, push, load) and one for a build's steps, text above them."""

    def __init__(self, progress: Any) -> None:
        self.progress = progress
        self.layers: dict[str, Any] = {}
        self.totals: dict[str, float | None] = {}
        self.build: Any = None
        self.steps = 0

    def text(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)

    def stream(self, text: str) -> None:
        self.text(text.rstrip("\n"))
        step = step_of(text)
        if step is None:
            return
        self.steps = step[1]
        if self.build is None:
            self.build = self.progress.add_task("", name="build", size="", total=step[1])
        self.progress.update(self.build, description=text.split(" : ", 1)[-1].strip()[:40],
                             completed=step[0] - 1, size=f"step {step[0]}/{step[1]}")  # fmt: skip

    def status(self, layer: str, status: str, detail: dict[str, Any]) -> None:
        from berth.cli.render import human_size

        if layer not in self.layers:
            self.layers[layer] = self.progress.add_task(
                status, name=f"{layer}:", size="", total=None
            )
        task = self.layers[layer]
        current = detail.get("current")
        if current is not None:
            self.totals[layer] = detail.get("total") or self.totals.get(layer)
            total = self.totals[layer]
            size = human_size(current) + (f"/{human_size(total)}" if total else "")
            self.progress.update(task, description=status, completed=current, total=total,
                                 size=size)  # fmt: skip
        elif _finished(status):
            whole = self.totals.get(layer) or 1
            self.progress.update(task, description=status, total=whole, completed=whole)
        else:
            self.progress.update(task, description=status)

    def finish(self) -> None:
        if self.build is not None:
            self.progress.update(self.build, completed=self.steps, description="done")


def show_rich(messages: Iterable[dict[str, Any]], out: TextIO) -> list[dict[str, Any]]:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    columns = (
        SpinnerColumn(finished_text=" "),
        TextColumn("{task.fields[name]}"),
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TextColumn("{task.fields[size]}"),
    )
    aux = []
    console = Console(file=out, highlight=False)
    with Progress(*columns, console=console, transient=False) as progress:
        display = _RichDisplay(progress)
        for message in messages:
            if (error := _error_of(message)) is not None:
                raise CliError(error, 1)
            if "aux" in message:
                aux.append(message["aux"])
            if "stream" in message:
                display.stream(str(message["stream"]))
            elif (status := message.get("status")) is not None:
                layer = str(message.get("id") or "")
                if _is_layer(layer):
                    display.status(layer, str(status), message.get("progressDetail") or {})
                else:
                    display.text(f"{layer}: {status}" if layer else str(status))
        display.finish()
    return aux


def show(messages: Iterable[dict[str, Any]], out: TextIO) -> list[dict[str, Any]]:
    """Display a message stream; the ``aux`` payloads it carried."""
    if is_terminal(out):
        return show_rich(messages, out)
    return show_plain(messages, out)


def _finished(status: str) -> bool:
    """A layer's last status in a pull, push or load stream, as dockerd words them."""
    return (
        status.endswith("complete")
        or status in ("Already exists", "Pushed", "Loaded", "Layer already exists")
        or status.startswith("Mounted from ")
    )
