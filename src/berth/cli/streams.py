"""The byte streams of logs, attach and exec: demultiplexing and copying.

Rules:
- A non-TTY container's stream is framed: ``[stream, 0, 0, 0, len_be32] + payload``, stream 1
  stdout, 2 stderr (0, stdin echo, goes to stdout). A TTY container's is raw bytes. The
  client decides from ``Config.Tty`` (the docker CLI's rule), never from headers.
- Output is written to the binary stdout/stderr and flushed per piece, so ``logs -f`` and
  ``run`` show lines as they come.
- ``read_source`` is any callable returning the next bytes (b"" at the end); the HTTP body
  reader and a hijacked socket both fit.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import BinaryIO

Reader = Callable[[], bytes]


class _Buffered:
    def __init__(self, read_source: Reader) -> None:
        self.read_source = read_source
        self.buffer = b""
        self.ended = False

    def take(self, n: int) -> bytes | None:
        """Exactly n bytes, or None at the end (a short tail is dropped)."""
        while len(self.buffer) < n and not self.ended:
            piece = self.read_source()
            if not piece:
                self.ended = True
                break
            self.buffer += piece
        if len(self.buffer) < n:
            return None
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data


def demux(read_source: Reader, out: BinaryIO | None = None, err: BinaryIO | None = None) -> None:
    """Copy a framed stream to stdout/stderr until it ends."""
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    source = _Buffered(read_source)
    while (header := source.take(8)) is not None:
        stream, length = header[0], struct.unpack(">I", header[4:8])[0]
        payload = source.take(length) if length else b""
        if payload is None:
            return
        target = err if stream == 2 else out
        target.write(payload)
        target.flush()


def copy_raw(read_source: Reader, out: BinaryIO | None = None) -> None:
    """Copy an unframed (TTY) stream to stdout until it ends."""
    out = out or sys.stdout.buffer
    while piece := read_source():
        out.write(piece)
        out.flush()


def copy_output(read_source: Reader, tty: bool) -> None:
    if tty:
        copy_raw(read_source)
    else:
        demux(read_source)
