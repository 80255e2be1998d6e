"""Several containers' logs on one stdout, each line prefixed by its container, as Compose does.

Rules:
- The prefix is the container's name without ``<project>-`` (``web-1``), padded to the longest
  one, then `` | ``; coloured (one colour per container, Compose's cycle) only when stdout is
  a terminal and colours are not turned off. ``no_prefix`` prints the bare lines.
- One thread (and one ``Client``) per container reads its stream (framed or raw by its
  ``Config.Tty``, reusing ``streams``); lines are written whole under one lock, so two
  containers never interleave within a line; a last line without a newline is written when
  its stream ends.
- ``follow`` returns when every stream has ended (the containers stopped), with
  ``on_end(name)`` called as each one ends; Ctrl-C in the caller's thread interrupts the wait
  (the reader threads are daemons and die with the command).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, BinaryIO, cast

from berth.cli.client import ApiError, Client
from berth.cli.streams import copy_raw, demux

COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92", "95", "94")


class PrefixedLines:
    """A binary sink that writes complete lines with a prefix to a shared output."""

    def __init__(self, prefix: bytes, out: BinaryIO, lock: threading.Lock) -> None:
        self.prefix = prefix
        self.out = out
        self.lock = lock
        self.partial = b""

    def write(self, data: bytes) -> int:
        self.partial += data
        *lines, self.partial = self.partial.split(b"\n")
        if lines:
            text = b"".join(self.prefix + line + b"\n" for line in lines)
            with self.lock:
                self.out.write(text)
                self.out.flush()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.partial:
            self.write(b"\n")


def prefixes(names: list[str], project: str, colour: bool, no_prefix: bool) -> dict[str, bytes]:
    if no_prefix:
        return dict.fromkeys(names, b"")
    short = {n: n.removeprefix(f"{project}-") for n in names}
    width = max((len(s) for s in short.values()), default=0)
    result = {}
    for i, name in enumerate(names):
        text = f"{short[name]:<{width}} | "
        if colour:
            text = f"\033[{COLOURS[i % len(COLOURS)]}m{text}\033[0m"
        result[name] = text.encode()
    return result


class LogFollower:
    """Stream the logs of containers ``{name: id}`` through prefixed sinks."""

    def __init__(
        self,
        client: Client,
        containers: dict[str, str],
        project: str,
        query: dict[str, Any],
        colour: bool,
        no_prefix: bool = False,
        out: BinaryIO | None = None,
    ) -> None:
        self.client = client
        self.containers = containers
        self.query = query
        self.out = out or sys.stdout.buffer
        self.lock = threading.Lock()
        self.prefix = prefixes(list(containers), project, colour, no_prefix)
        self.threads: list[threading.Thread] = []

    def sink(self, name: str) -> PrefixedLines:
        return PrefixedLines(self.prefix[name], self.out, self.lock)

    def _copy(self, name: str, ident: str, on_end: Callable[[str], None] | None) -> None:
        sink = self.sink(name)
        client = Client(self.client.url)  # a Client is not shared between threads
        try:
            doc = client.get(f"/containers/{ident}/json")
            tty = bool((doc.get("Config") or {}).get("Tty"))
            response = client.stream("GET", f"/containers/{ident}/logs", self.query)
            target = cast(BinaryIO, sink)
            if tty:
                copy_raw(response.read_some, target)
            else:
                demux(response.read_some, target, target)
        except (ApiError, OSError) as e:
            sink.write(f"error reading the logs: {e}\n".encode())
        finally:
            client.close()
            sink.close()
            if on_end is not None:
                on_end(name)

    def start(self, on_end: Callable[[str], None] | None = None) -> None:
        for name, ident in self.containers.items():
            thread = threading.Thread(
                target=self._copy, args=(name, ident, on_end), name=f"logs-{name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def wait(self) -> None:
        for thread in self.threads:
            while thread.is_alive():
                thread.join(0.2)

    def say(self, name: str, text: str) -> None:
        """A line of our own (``web-1 exited with code 0``) between the containers' lines."""
        with self.lock:
            self.out.write(f"{text}\n".encode())
            self.out.flush()
