"""Reading a container's json-file log: entries, selection (streams, since/until, tail) and
Docker's multiplexed stream framing.

The supervisor writes one ``{"log","stream","time"}`` JSON object per line (a partial line is
flushed at exit). Readers here only read: ``LogReader`` keeps an offset so a follower picks up
what was appended since, and never returns half a line. Sans-IO apart from reading the file.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass

from berth.engine.containers_state import parse_rfc3339

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR = 0, 1, 2
_STREAMS = {"stdout": STDOUT, "stderr": STDERR}
MULTIPLEXED = "application/vnd.docker.multiplexed-stream"
RAW = "application/vnd.docker.raw-stream"


def frame(stream: int, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed stream: ``[stream, 0, 0, 0, len BE32] + payload``."""
    return struct.pack(">BxxxI", stream, len(payload)) + payload


@dataclass(frozen=True)
class Entry:
    stream: int  # STDOUT or STDERR
    data: bytes
    time: str  # RFC 3339 with nanoseconds

    @property
    def seconds(self) -> float:
        return parse_rfc3339(self.time)


@dataclass(frozen=True)
class Selection:
    stdout: bool = True
    stderr: bool = True
    since: float = 0.0  # unix seconds; 0 = all
    until: float = 0.0  # unix seconds; 0 = no bound
    timestamps: bool = False
    tail: int = -1  # -1 = all

    def keeps(self, entry: Entry) -> bool:
        if entry.stream == STDOUT and not self.stdout:
            return False
        if entry.stream == STDERR and not self.stderr:
            return False
        if self.since and entry.seconds < self.since:
            return False
        return not (self.until and entry.seconds > self.until)

    def render(self, entry: Entry, tty: bool) -> bytes:
        data = entry.data
        if self.timestamps:
            data = entry.time.encode() + b" " + data
        return data if tty else frame(entry.stream, data)


def parse_line(line: bytes) -> Entry | None:
    try:
        doc = json.loads(line)
        stream = _STREAMS[doc["stream"]]
        return Entry(stream, str(doc["log"]).encode("utf-8", "surrogateescape"), doc["time"])
    except (ValueError, KeyError, TypeError):
        log.warning("json-file log: skipping a bad line %r", line[:80])
        return None


class LogReader:
    """Whole entries of a json-file log from ``offset`` on; ``read`` returns what is new."""

    def __init__(self, path: str, offset: int = 0) -> None:
        self.path = path
        self.offset = offset

    @staticmethod
    def end_of(path: str) -> int:
        try:
            return os.path.getsize(path)
        except FileNotFoundError:
            return 0

    def grown(self) -> bool:
        """Whether the file has bytes past the offset (a cheap check before ``read``)."""
        return self.end_of(self.path) > self.offset

    def read(self) -> list[Entry]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[: end + 1].splitlines():
            if line.strip():
                entry = parse_line(line)
                if entry is not None:
                    out.append(entry)
        return out


def select(entries: list[Entry], selection: Selection) -> list[Entry]:
    kept = [e for e in entries if selection.keeps(e)]
    if selection.tail >= 0:
        kept = kept[len(kept) - selection.tail :] if selection.tail else []
    return kept
