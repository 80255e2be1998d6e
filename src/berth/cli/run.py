"""Verbs that start processes and stream them: run, create, start, attach, exec.

Rules:
- The order is the docker CLI's, which the daemon relies on: create → attach (hijacked, before
  start so no output is lost) → wait (its headers arrive at once; ``condition=removed`` with
  ``--rm``, else ``next-exit``) → start → copy the output → the wait body's ``StatusCode`` is
  our exit code.
- A missing image (404 "No such image" on create) is pulled, with "Unable to find image
  'REF' locally" and the pull's progress on stderr, then create is tried once more.
- Exit codes: a daemon error on run/create is 125; a start refused because the command is
  missing is 127 ("executable file not found", "no such file or directory"), not runnable
  126 ("permission denied", "is a directory"); with ``--rm`` the failed container's removal
  is awaited first.
- Without a TTY, SIGINT/SIGTERM/SIGHUP/SIGQUIT are passed to the container (``--sig-proxy``,
  on by default) while attached. ``-it`` needs our stdin to be a terminal.
- ``-t`` asks for a TTY: raw mode on our terminal (when stdin is one), the terminal size as
  ``ConsoleSize``, a resize after start and on every SIGWINCH (a daemon without resize is
  tolerated: the session goes on), detach keys ctrl-p ctrl-q (``--detach-keys``).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from berth.cli import tty as tty_mod
from berth.cli.client import ApiError, Client, Connection, DaemonUnreachable
from berth.cli.common import CliError, Context, for_each, parser
from berth.cli.options import add_create_flags, create_body, create_parser
from berth.cli.streams import copy_output

RUN_ERROR = 125


def exit_code_of_start_error(message: str) -> int:
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return 127
    if "permission denied" in lowered or "is a directory" in lowered:
        return 126
    return RUN_ERROR


def full_reference(image: str) -> str:
    """``busybox`` → ``busybox:latest`` (a tag or digest given is kept)."""
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last or "@" in image else image + ":latest"


def _run_error(verb: str, message: str, code: int = RUN_ERROR) -> CliError:
    return CliError(
        f"berth: Error response from daemon: {message}\n\n"
        f"Run 'berth {verb} --help' for more information",
        code,
    )


def create_container(ctx: Context, a: argparse.Namespace, verb: str) -> str:
    size = tty_mod.terminal_size() if a.tty else None
    body = create_body(a, size)
    query = {"name": a.name, "platform": a.platform}
    if a.pull == "always":
        _pull(ctx, a.image)
    try:
        result = ctx.client.post("/containers/create", query, body)
    except ApiError as e:
        if e.status != 404 or not e.message.startswith("No such image") or a.pull == "never":
            raise _run_error(verb, e.message) from e
        sys.stderr.write(f"Unable to find image '{full_reference(a.image)}' locally\n")
        _pull(ctx, a.image, verb)
        try:
            result = ctx.client.post("/containers/create", query, body)
        except ApiError as again:
            raise _run_error(verb, again.message) from again
    for warning in result.get("Warnings") or []:
        sys.stderr.write(f"WARNING: {warning}\n")
    cid: str = result["Id"]
    return cid


def _pull(ctx: Context, image: str, verb: str = "run") -> None:
    from berth.cli.registry_client import pull_image

    try:
        pull_image(ctx, image, sys.stderr)
    except ApiError as e:
        raise _run_error(verb, e.message) from e
    except CliError as e:
        raise _run_error(verb, e.message.removeprefix("Error response from daemon: ")) from e


def _resizer(client: Client, path: str, redraw: bool = False) -> Callable[[], None]:
    """A resize of the remote terminal to ours; with ``redraw`` the first one is done one
    row and column bigger first, so the program redraws (what ``docker attach`` does)."""
    pending_redraw = [redraw]

    def resize() -> None:
        size = tty_mod.terminal_size()
        if size is None:
            return
        try:
            if pending_redraw[0]:
                pending_redraw[0] = False
                client.post(path, {"h": size[0] + 1, "w": size[1] + 1})
            client.post(path, {"h": size[0], "w": size[1]})
        except ApiError:
            pass  # an exec that already ended, or a daemon without resize: no harm

    return resize


def stream_session(
    client: Client,
    conn: Connection,
    tty: bool,
    interactive: bool,
    resize_path: str | None,
    detach_keys: bytes | None,
    redraw: bool = False,
) -> bool:
    """Copy a hijacked session both ways until it ends; True if the user detached."""
    raw = tty and interactive and tty_mod.stdin_is_terminal()
    pump = tty_mod.StdinPump(conn.sock, detach_keys if raw else None) if interactive else None
    resize = _resizer(client, resize_path, redraw) if tty and resize_path else None

    def read() -> bytes:
        try:
            return conn.reader.read1(65536)
        except (OSError, ValueError):
            return b""

    with tty_mod.raw_terminal(raw):
        if resize is not None:
            resize()
        if pump is not None:
            pump.start()
        if resize is not None:
            with tty_mod.on_resize(resize):
                copy_output(read, tty)
        else:
            copy_output(read, tty)
    conn.close()
    return bool(pump and pump.detached)


@contextlib.contextmanager
def signals_proxied(client: Client, cid: str, enabled: bool) -> Iterator[None]:
    """While attached without a TTY, SIGINT/SIGTERM/SIGHUP/SIGQUIT go to the container."""
    if not enabled:
        yield
        return

    def forward(signum: int, _frame: object) -> None:
        other = Client(client.url)
        try:
            other.post(f"/containers/{cid}/kill", {"signal": signal.Signals(signum).name})
        except (ApiError, DaemonUnreachable):
            pass  # it has gone already
        finally:
            other.close()

    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    previous = {s: signal.signal(s, forward) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _attach_start_wait(
    ctx: Context,
    cid: str,
    tty: bool,
    interactive: bool,
    condition: str,
    detach_keys: bytes | None,
    verb: str,
    streams: tuple[str, ...] = ("stdout", "stderr"),
    sig_proxy: bool = False,
) -> int:
    client = ctx.client
    query = {"stream": True, "stdin": interactive, **dict.fromkeys(streams, True)}
    conn = client.hijack(f"/containers/{cid}/attach", query)
    wait = client.stream("POST", f"/containers/{cid}/wait", {"condition": condition})
    try:
        client.post(f"/containers/{cid}/start")
    except ApiError as e:
        conn.close()
        if condition == "removed":
            wait.read()
        raise _run_error(verb, e.message, exit_code_of_start_error(e.message)) from e
    with signals_proxied(client, cid, sig_proxy and not tty):
        detached = stream_session(client, conn, tty, interactive, f"/containers/{cid}/resize",
                                  detach_keys)  # fmt: skip
    if detached:
        return 0
    result = wait.json() or {}
    error = (result.get("Error") or {}).get("Message")
    if error:
        sys.stderr.write(f"berth: Error response from daemon: {error}\n")
        return RUN_ERROR
    code: int = result.get("StatusCode", RUN_ERROR)
    return code


def _detach_keys(text: str | None) -> bytes:
    try:
        return tty_mod.parse_detach_keys(text) if text else tty_mod.DETACH_KEYS
    except ValueError as e:
        raise CliError(str(e), 125) from e


def cmd_run(ctx: Context, argv: list[str]) -> int:
    p = create_parser("run")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--rm", action="store_true")
    p.add_argument("--detach-keys")
    p.add_argument(
        "-a",
        "--attach",
        action="append",
        default=[],
        choices=["stdin", "stdout", "stderr", "STDIN", "STDOUT", "STDERR"],
    )
    p.add_argument("--sig-proxy", default="true", choices=["true", "false"])
    add_create_flags(p)
    a = p.parse_args(argv)
    keys = _detach_keys(a.detach_keys)
    if a.tty and a.interactive and not a.detach and not tty_mod.stdin_is_terminal():
        raise CliError("the input device is not a TTY", 1)
    # -a picks the output streams to attach; stdin is attached with -i (or -a stdin)
    a.interactive = a.interactive or "stdin" in (s.lower() for s in a.attach)
    streams = tuple(s.lower() for s in a.attach if s.lower() != "stdin") or ("stdout", "stderr")
    cid = create_container(ctx, a, "run")
    if a.detach:
        try:
            ctx.client.post(f"/containers/{cid}/start")
        except ApiError as e:
            raise _run_error("run", e.message, exit_code_of_start_error(e.message)) from e
        sys.stdout.write(cid + "\n")
        return 0
    condition = "removed" if a.rm else "next-exit"
    return _attach_start_wait(ctx, cid, a.tty, a.interactive, condition, keys, "run",
                              streams, a.sig_proxy == "true")  # fmt: skip


def cmd_create(ctx: Context, argv: list[str]) -> int:
    p = create_parser("create")
    p.add_argument("--rm", action="store_true")
    add_create_flags(p)
    a = p.parse_args(argv)
    sys.stdout.write(create_container(ctx, a, "create") + "\n")
    return 0


def cmd_start(ctx: Context, argv: list[str]) -> int:
    p = parser("start", "[OPTIONS] CONTAINER [CONTAINER...]")
    p.add_argument("-a", "--attach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("--detach-keys")
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    a = p.parse_args(argv)
    if not (a.attach or a.interactive):
        return for_each(a.containers, lambda c: ctx.client.post(f"/containers/{c}/start"))
    if len(a.containers) > 1:
        raise CliError("you cannot start and attach multiple containers at once", 1)
    doc = ctx.client.get(f"/containers/{a.containers[0]}/json")
    config = doc.get("Config") or {}
    interactive = a.interactive and bool(config.get("OpenStdin"))
    keys = _detach_keys(a.detach_keys)
    return _attach_start_wait(ctx, doc["Id"], bool(config.get("Tty")), interactive, "next-exit",
                              keys, "start")  # fmt: skip


def cmd_attach(ctx: Context, argv: list[str]) -> int:
    p = parser("attach", "[OPTIONS] CONTAINER")
    p.add_argument("--no-stdin", action="store_true")
    p.add_argument("--detach-keys")
    p.add_argument("container")
    a = p.parse_args(argv)
    doc = ctx.client.get(f"/containers/{a.container}/json")
    if not (doc.get("State") or {}).get("Running"):
        raise CliError("You cannot attach to a stopped container, start it first", 1)
    config = doc.get("Config") or {}
    cid, tty = doc["Id"], bool(config.get("Tty"))
    interactive = bool(config.get("OpenStdin")) and not a.no_stdin
    wait = ctx.client.stream("POST", f"/containers/{cid}/wait")
    query = {"stream": True, "stdout": True, "stderr": True, "stdin": interactive}
    conn = ctx.client.hijack(f"/containers/{cid}/attach", query)
    detached = stream_session(ctx.client, conn, tty, interactive, f"/containers/{cid}/resize",
                              _detach_keys(a.detach_keys), redraw=True)  # fmt: skip
    if detached:
        return 0
    result: dict[str, Any] = wait.json() or {}
    return int(result.get("StatusCode", 0))


def cmd_exec(ctx: Context, argv: list[str]) -> int:
    p = parser("exec", "[OPTIONS] CONTAINER COMMAND [ARG...]")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-i", "--interactive", action="store_true")
    p.add_argument("-t", "--tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user", default="")
    p.add_argument("-w", "--workdir", default="")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--detach-keys")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    if not a.command:
        raise CliError("exec requires at least 2 arguments", 125)
    from berth.cli.options import env_item

    interactive = a.interactive and not a.detach
    body = {
        "User": a.user,
        "Privileged": a.privileged,
        "Tty": a.tty,
        "AttachStdin": interactive,
        "AttachStderr": not a.detach,
        "AttachStdout": not a.detach,
        "Detach": a.detach,
        "DetachKeys": a.detach_keys or "",
        "Env": [item for e in a.env if (item := env_item(e))] or None,
        "WorkingDir": a.workdir,
        "Cmd": a.command,
    }
    if a.tty and (size := tty_mod.terminal_size()):
        body["ConsoleSize"] = list(size)
    eid = ctx.client.post(f"/containers/{a.container}/exec", body=body)["Id"]
    if a.detach:
        ctx.client.post(f"/exec/{eid}/start", body={"Detach": True, "Tty": a.tty})
        return 0
    conn = ctx.client.hijack(f"/exec/{eid}/start", body={"Detach": False, "Tty": a.tty})
    detached = stream_session(ctx.client, conn, a.tty, interactive, f"/exec/{eid}/resize",
                              _detach_keys(a.detach_keys))  # fmt: skip
    if detached:
        return 0
    code: int = (ctx.client.get(f"/exec/{eid}/json") or {}).get("ExitCode") or 0
    return code
