"""The supervisor's wire protocol: JSON lines over a unix socket, versioned, as typed values.

A request is one line ``{"v": 1, "op": "<op>", "seq": N, ...fields}``; the supervisor answers
each with one line ``{"v": 1, "seq": N, "ok": true, "result": {...}}`` or
``{"v": 1, "seq": N, "ok": false, "error": {"kind": ..., "message": ...}}`` (the kinds of
``berth.errors``, so the client re-raises the same class). ``seq`` is the client's own number,
echoed, because answers to ``wait`` come when the container exits, after later requests' answers.
After ``subscribe`` is answered, the connection also receives ``{"v": 1, "event": "exit",
"exit": {...}}`` lines, one per container exit, until it closes. The connection that sent an
``exec`` with ``attach`` receives that exec's output as ``{"v": 1, "event": "exec_output",
"exec_id", "stream", "data" (base64)}`` lines and then one ``{"v": 1, "event": "exec_exit",
"exec_id", "exit_code"}`` line (output that arrives while the connection is gone is dropped;
``exec_state`` still tells the exit code).

Ops and their fields (the request classes below): create, start, kill, delete, state, list,
wait, subscribe, write_stdin, resize, exec, exec_state, shutdown, restart. Rules: unknown
fields are ignored (a newer client), an unknown op or a different major version is an
``invalid_argument`` error; sans-IO: this module only turns values into lines and lines into
values.
"""

from __future__ import annotations

import base64

from berth.errors import BerthError, InvalidArgument
from berth.spec import jsonio
from berth.spec.value import fields, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
# docker's json-file driver splits lines longer than this into several entries
LOG_LINE_MAX = 16 * 1024
# containerd's answer for an exit status nobody could read (the init was reaped elsewhere)
UNKNOWN_EXIT_CODE = 255


# --------------------------------------------------------------------------- requests


@value
class Create:
    id: str
    bundle: str
    log_path: str
    terminal: bool = False
    start: bool = True  # start at once (no exec fifo), or wait for ``start``
    stdin: bool = False  # a pipe written through ``write_stdin``; else /dev/null


@value
class Start:
    id: str


@value
class Kill:
    id: str
    signal: int = 15
    all: bool = False
    exec_id: str = ""  # signal this exec's process instead (while it has not been reaped)


@value
class Delete:
    id: str
    force: bool = False


@value
class StateOf:
    id: str


@value
class List:
    pass


@value
class Wait:
    id: str


@value
class Subscribe:
    pass


@value
class WriteStdin:
    id: str
    data: str = ""  # base64
    eof: bool = False
    exec_id: str = ""  # an exec's stdin instead of the container's

    @staticmethod
    def of(container_id: str, data: bytes, eof: bool = False, exec_id: str = "") -> WriteStdin:
        return WriteStdin(container_id, base64.b64encode(data).decode("ascii"), eof, exec_id)

    def payload(self) -> bytes:
        return base64.b64decode(self.data)


@value
class Resize:
    """Set the terminal size of a container (or of one of its execs) that has a terminal."""

    id: str
    height: int
    width: int
    exec_id: str = ""


@value
class Exec:
    """Start ``process`` (an OCI process object) in the running container ``id``; answered
    with ``{"pid"}`` once it runs. With ``attach`` its output comes to this connection."""

    id: str
    exec_id: str
    process: dict[str, Any]
    stdin: bool = False  # a pipe (or the terminal) written through write_stdin
    attach: bool = False


@value
class ExecState:
    """``{"running", "pid", "exit_code"}`` of an exec (exit_code null while it runs)."""

    id: str
    exec_id: str


@value
class Shutdown:
    """Stop the supervisor; its containers keep running (a new supervisor adopts them)."""


@value
class Restart:
    """Exec the supervisor again in place (an upgrade): containers stay its children, their
    pipes and the socket are handed over; connections are closed after this answer."""


Request = (
    Restart
    | Create
    | Start
    | Kill
    | Delete
    | StateOf
    | List
    | Wait
    | Subscribe
    | WriteStdin
    | Resize
    | Exec
    | ExecState
    | Shutdown
)

OPS: dict[str, type[Request]] = {
    "create": Create,
    "start": Start,
    "kill": Kill,
    "delete": Delete,
    "state": StateOf,
    "list": List,
    "wait": Wait,
    "subscribe": Subscribe,
    "write_stdin": WriteStdin,
    "resize": Resize,
    "exec": Exec,
    "exec_state": ExecState,
    "shutdown": Shutdown,
    "restart": Restart,
}
_OP_OF: dict[type, str] = {cls: op for op, cls in OPS.items()}

_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,),
    "bundle": (str,),
    "log_path": (str,),
    "data": (str,),
    "terminal": (bool,),
    "start": (bool,),
    "stdin": (bool,),
    "all": (bool,),
    "force": (bool,),
    "eof": (bool,),
    "signal": (int,),
    "exec_id": (str,),
    "height": (int,),
    "width": (int,),
    "process": (dict,),
    "attach": (bool,),
}


# --------------------------------------------------------------------------- results


@value
class Exit:
    """How a container ended, as recorded in ``<root>/<id>/exit.json`` before anyone is told."""

    id: str
    pid: int
    exit_code: int
    oom_killed: bool
    finished_at: str  # RFC 3339 with nanoseconds, as Docker prints FinishedAt
    known: bool = True  # False: the init was reaped by someone else; exit_code is 255

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pid": self.pid,
            "exit_code": self.exit_code,
            "oom_killed": self.oom_killed,
            "finished_at": self.finished_at,
            "known": self.known,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Exit:
        return Exit(
            id=str(d["id"]),
            pid=int(d["pid"]),
            exit_code=int(d["exit_code"]),
            oom_killed=bool(d["oom_killed"]),
            finished_at=str(d["finished_at"]),
            known=bool(d.get("known", True)),
        )


@value
class Info:
    """One container as the supervisor sees it: the runtime's status and its own records."""

    id: str
    status: str  # the runtime's: creating, created, running, paused, stopped
    pid: int
    bundle: str
    log_path: str
    created: str
    started_at: str = ""
    stdin: bool = False
    adopted: bool = False  # not our child: made by an earlier supervisor, watched by pidfd
    exit: Exit | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "pid": self.pid,
            "bundle": self.bundle,
            "log_path": self.log_path,
            "created": self.created,
            "started_at": self.started_at,
            "stdin": self.stdin,
            "adopted": self.adopted,
            "exit": self.exit.to_json() if self.exit is not None else None,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Info:
        exit_ = d.get("exit")
        return Info(
            id=str(d["id"]),
            status=str(d["status"]),
            pid=int(d["pid"]),
            bundle=str(d["bundle"]),
            log_path=str(d["log_path"]),
            created=str(d["created"]),
            started_at=str(d.get("started_at", "")),
            stdin=bool(d.get("stdin", False)),
            adopted=bool(d.get("adopted", False)),
            exit=Exit.from_json(exit_) if exit_ is not None else None,
        )


# --------------------------------------------------------------------------- encoding


def encode_request(req: Request, seq: int) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "op": _OP_OF[type(req)], "seq": seq}
    for name in fields(type(req)):
        body[name] = getattr(req, name)
    return jsonio.dumps(body).encode() + b"\n"


def decode_request(line: bytes) -> tuple[int, Request]:
    """``(seq, request)``; raises InvalidArgument naming what is wrong (seq is -1 if unknown)."""
    try:
        body = jsonio.loads(line)
    except ValueError as exc:
        raise InvalidArgument(f"supervisor request: not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("supervisor request: not a JSON object")
    version = body.get("v")
    if version != VERSION:
        raise InvalidArgument(f"supervisor request: version {version!r}, this supervisor: 1")
    op = body.get("op")
    cls = OPS.get(op) if isinstance(op, str) else None
    if cls is None:
        raise InvalidArgument(f"supervisor request: unknown op {op!r}")
    seq = body.get("seq", -1)
    args: dict[str, Any] = {}
    for name in fields(cls):
        if name not in body:
            continue
        arg = body[name]
        expected = _TYPES[name]
        if not isinstance(arg, expected) or (expected == (int,) and isinstance(arg, bool)):
            raise InvalidArgument(f"supervisor request {op}: {name}: {arg!r} is not valid")
        args[name] = arg
    try:
        return int(seq) if isinstance(seq, int) else -1, cls(**args)
    except TypeError as exc:
        raise InvalidArgument(f"supervisor request {op}: {exc}") from None


def _line(body: dict[str, Any]) -> bytes:
    return jsonio.dumps(body).encode() + b"\n"


def encode_result(seq: int, result: dict[str, Any] | None = None) -> bytes:
    return _line({"v": VERSION, "seq": seq, "ok": True, "result": result or {}})


def encode_error(seq: int, error: BerthError) -> bytes:
    return _line({"v": VERSION, "seq": seq, "ok": False, "error": error.to_json()})


def encode_exit_event(exit_: Exit) -> bytes:
    return _line({"v": VERSION, "event": "exit", "exit": exit_.to_json()})


def encode_exec_output(exec_id: str, stream: str, data: bytes) -> bytes:
    payload = base64.b64encode(data).decode("ascii")
    body = {"v": VERSION, "event": "exec_output", "exec_id": exec_id, "stream": stream}
    return _line({**body, "data": payload})


def encode_exec_exit(exec_id: str, exit_code: int) -> bytes:
    return _line({"v": VERSION, "event": "exec_exit", "exec_id": exec_id, "exit_code": exit_code})


def decode_reply(line: bytes, seq: int | None = None) -> dict[str, Any]:
    """One answer or event line as a dict; raises the supervisor's error for a failed request
    (with ``seq``: only if the answer is to that request; an older one is returned as is, for
    the caller to skip)."""
    try:
        body = jsonio.loads(line)
    except ValueError as exc:
        raise BerthError(f"supervisor answer: not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise BerthError(f"supervisor answer: unexpected {line[:200]!r}")
    if body.get("ok") is False and (seq is None or body.get("seq") == seq):
        raise BerthError.from_json(body.get("error") or {})
    return body
