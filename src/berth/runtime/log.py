"""The runtime's log: runc's ``--log FILE --log-format text|json`` and ``--debug``.

Rules: one line per entry; JSON entries are ``{"level", "msg", "time"}`` (conmon and podman read
the last ``error`` entry of this file to report a failure); without ``--log`` entries go to
stderr. Deliberately not the ``logging`` package: it costs milliseconds of import on every
container start.
"""

from __future__ import annotations

import os
import sys
import time

from berth.spec import jsonio

_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class _Config:
    path: str | None = None
    fd = -1  # opened once: the container's init keeps writing here after pivot_root
    json_format = False
    debug = False


CONFIG = _Config()


def configure(path: str | None, log_format: str, debug: bool) -> None:
    CONFIG.path = path or None
    if CONFIG.path:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        CONFIG.fd = os.open(CONFIG.path, flags, 0o644)
    CONFIG.json_format = log_format == "json"
    CONFIG.debug = debug


def _timestamp() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"


def entry(level: str, msg: str) -> None:
    if level == "debug" and not CONFIG.debug:
        return
    if CONFIG.json_format:
        line = jsonio.dumps({"level": level, "msg": msg, "time": _timestamp()})
    else:
        line = f'time="{_timestamp()}" level={level} msg={jsonio.dumps(msg)}'
    if CONFIG.fd < 0:
        if level != "error":  # errors reach stderr through the CLI's one-line message
            sys.stderr.write(line + "\n")
        return
    os.write(CONFIG.fd, line.encode() + b"\n")


def debug(msg: str) -> None:
    entry("debug", msg)


def warning(msg: str) -> None:
    entry("warning", msg)


def error(msg: str) -> None:
    entry("error", msg)
