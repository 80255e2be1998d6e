"""Typed messages between the runtime and a container's init, over a pair of pipes.

Rules: one JSON object per line, ``{"type": ..., ...}``; an error raised on one side is sent as
``{"type": "error", "error": BerthError.to_json()}`` and re-raised on the other with its class;
a closed pipe where a message was expected means the peer died, and says so.
"""

from __future__ import annotations

import os

from berth.errors import BerthError
from berth.spec import jsonio

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Channel:
    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._buffer = b""

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        """(parent end, child end); each end closes the other's fds after fork."""
        down_r, down_w = os.pipe2(os.O_CLOEXEC)
        up_r, up_w = os.pipe2(os.O_CLOEXEC)
        return Channel(up_r, down_w), Channel(down_r, up_w)

    def send(self, msg_type: str, **fields: Any) -> None:
        data = jsonio.dumps({"type": msg_type, **fields}).encode() + b"\n"
        while data:
            data = data[os.write(self.write_fd, data) :]

    def send_error(self, error: BaseException) -> None:
        if not isinstance(error, BerthError):
            error = BerthError(f"{type(error).__name__}: {error}")
        self.send("error", error=error.to_json())

    def receive(self, expected: str, peer: str = "container init") -> dict[str, Any]:
        """The next message, which must be of type ``expected``; an ``error`` is raised."""
        while b"\n" not in self._buffer:
            chunk = os.read(self.read_fd, 65536)
            if not chunk:
                raise BerthError(f"{peer} exited before sending {expected!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        msg: dict[str, Any] = jsonio.loads(line)
        if msg.get("type") == "error":
            raise BerthError.from_json(msg["error"])
        if msg.get("type") != expected:
            raise BerthError(f"{peer} sent {msg.get('type')!r} where {expected!r} was expected")
        return msg

    def wait_closed(self) -> None:
        """Block until the peer has closed its end (exited, or exec'd: it is close-on-exec)."""
        while os.read(self.read_fd, 65536):
            pass

    def close_reading(self) -> None:
        os.close(self.read_fd)
        self.read_fd = -1

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
