"""Execs in berthd: extra processes started in running containers (``docker exec``), and the
terminal sizes of containers and execs.

Rules:
- An exec is created (``POST /containers/{id}/exec``: the container must be running, 409
  otherwise; a bad body is 400), then started once; the supervisor runs it (in-process, as it
  runs inits) from an OCI process built here: the container's own process (config.json) with
  Cmd as args, Env appended (same names replaced), WorkingDir, User resolved in the
  container's /etc/passwd, Tty, all capabilities when Privileged. Its output goes only to the
  connection that started it, never to the container's log.
- The exit code is recorded when the attached stream ends; a detached exec (or one whose
  client left) is asked about at the supervisor when inspected. A process that could not
  start gets dockerd's exit codes: 127 not found, 126 otherwise (permission denied...), and
  its error text as output.
- ``ExecIDs`` of the container's inspect lists its execs that have not ended (the record's
  ``exec_ids``, not saved). Records of ended execs are kept until the container is removed,
  at most ``KEPT_PER_CONTAINER`` of them.
- Resize: 404 for an unknown container or exec, 409 "is not running" as dockerd.
- Events as dockerd's: ``exec_create: <cmd>``, ``exec_start: <cmd>`` (with ``execID``) and
  ``exec_die`` (with ``execID`` and ``exitCode``, once the exit code is known), on the
  container's events; health probes are execs and show too, as with dockerd.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import secrets
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from berth.engine.containers import ContainerManager
from berth.engine.containers_state import Record
from berth.engine.oci_config import resolve_user
from berth.engine.oci_request import _console_size
from berth.engine.supervisor_client import AsyncClient
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound
from berth.spec.defaults import CAPABILITIES

log = logging.getLogger(__name__)

KEPT_PER_CONTAINER = 64
READY_TIMEOUT = 10.0  # a resize waits this long for its exec to start
UNKNOWN_EXIT = 137  # ended with its container before anyone read its status: it was killed


def start_failure_exit_code(message: str) -> int:
    """dockerd's ExitCode for an exec whose process could not start."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    return 126


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{name}: {value!r} must be a list of strings")
    return list(value)


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{name}: {value!r} must be a string")
    return value


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name}: {value!r} must be a boolean")
    return value


@dataclass
class ExecConfig:
    """What ``POST /containers/{id}/exec`` asked for."""

    cmd: list[str]
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    privileged: bool = False
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = False
    attach_stderr: bool = False
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None

    @staticmethod
    def from_json(body: Any) -> ExecConfig:
        if not isinstance(body, dict):
            raise InvalidArgument("exec config: the body must be a JSON object")
        cmd = _strings(body, "Cmd")
        if not cmd:
            raise InvalidArgument("No exec command specified")
        working_dir = _string(body, "WorkingDir")
        if working_dir and not working_dir.startswith("/"):
            raise InvalidArgument(
                f"the working directory '{working_dir}' is invalid, it needs to be an absolute path"
            )
        for entry in _strings(body, "Env"):
            if not entry or entry.startswith("="):
                raise InvalidArgument(f"invalid environment variable: {entry!r}")
        return ExecConfig(
            cmd=cmd,
            env=_strings(body, "Env"),
            user=_string(body, "User"),
            working_dir=working_dir,
            privileged=_flag(body, "Privileged"),
            tty=_flag(body, "Tty"),
            attach_stdin=_flag(body, "AttachStdin"),
            attach_stdout=_flag(body, "AttachStdout"),
            attach_stderr=_flag(body, "AttachStderr"),
            detach_keys=_string(body, "DetachKeys"),
            console_size=_console_size(body, "ConsoleSize"),
        )


@dataclass
class Exec:
    """One exec: its config, and its state as far as berthd knows it."""

    id: str
    container_id: str
    config: ExecConfig
    started: bool = False
    running: bool = False
    pid: int = 0
    exit_code: int | None = None
    keep: bool = True  # False: a healthcheck's, forgotten once it ends
    # set once its process runs, or could not start (its stdin may be written from then on)
    ready: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def inspect(self) -> dict[str, Any]:
        c = self.config
        return {
            "ID": self.id,
            "Running": self.running,
            "ExitCode": self.exit_code,
            "ProcessConfig": {
                "tty": c.tty,
                "entrypoint": c.cmd[0],
                "arguments": c.cmd[1:],
                "privileged": c.privileged,
                "user": c.user,
            },
            "OpenStdin": c.attach_stdin,
            "OpenStderr": c.attach_stderr,
            "OpenStdout": c.attach_stdout,
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": c.detach_keys,
            "Pid": self.pid,
        }


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    """``extra`` over ``base``: a name given again replaces the earlier value, in place."""
    out = list(base)
    index = {entry.partition("=")[0]: i for i, entry in enumerate(out)}
    for entry in extra:
        name = entry.partition("=")[0]
        if name in index:
            out[index[name]] = entry
        else:
            index[name] = len(out)
            out.append(entry)
    return out


def build_process(spec_process: dict[str, Any], rootfs: str, config: ExecConfig) -> dict[str, Any]:
    """The OCI process the supervisor runs for ``config`` (blocking: reads the rootfs)."""
    proc = copy.deepcopy(spec_process)
    proc["args"] = list(config.cmd)
    proc["env"] = _merge_env(list(proc.get("env") or []), config.env)
    proc["terminal"] = config.tty
    if config.tty and config.console_size is not None and all(config.console_size):
        proc["consoleSize"] = {"height": config.console_size[0], "width": config.console_size[1]}
    else:
        proc.pop("consoleSize", None)
    if config.working_dir:
        proc["cwd"] = config.working_dir
    if config.user:
        uid, gid, groups, home = resolve_user(rootfs, config.user)
        user: dict[str, Any] = {"uid": uid, "gid": gid}
        if groups:
            user["additionalGids"] = groups
        proc["user"] = user
        env: list[str] = proc["env"]
        if not any(e.startswith("HOME=") for e in config.env):
            proc["env"] = [e for e in env if not e.startswith("HOME=")] + [f"HOME={home}"]
    if config.privileged:
        caps = list(CAPABILITIES)
        proc["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    return proc


class ExecManager:
    """The execs of one berthd, over its containers and their supervisor."""

    def __init__(
        self,
        containers: ContainerManager,
    ) -> None:
        self.containers = containers
        self.execs: dict[str, Exec] = {}

    def _event(self, action: str, ex: Exec) -> None:
        rec = self.containers.records.get(ex.container_id)
        if rec is None:
            return
        if action == "exec_die":
            self.containers.emit(rec, action, execID=ex.id, exitCode=str(ex.exit_code))
        else:
            self.containers.emit(rec, f"{action}: {' '.join(ex.config.cmd)}", execID=ex.id)

    @property
    def sup(self) -> AsyncClient:
        return self.containers.sup

    # -- lookups
    def get(self, exec_id: str) -> Exec:
        ex = self.execs.get(exec_id)
        if ex is None or ex.container_id not in self.containers.records:
            raise NotFound(f"No such exec instance: {exec_id}")
        return ex

    def _running_container(self, ref: str) -> Record:
        rec = self.containers.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.state.get("Paused"):
            raise Conflict(f"Container {rec.id} is paused, unpause the container before exec")
        return rec

    def _forget_removed(self) -> None:
        for exec_id, ex in list(self.execs.items()):
            if ex.container_id not in self.containers.records:
                del self.execs[exec_id]

    # -- create, start
    def create(self, ref: str, body: Any, keep: bool = True) -> Exec:
        config = ExecConfig.from_json(body)
        rec = self._running_container(ref)
        self._forget_removed()
        ended = [x.id for x in self.execs.values() if x.container_id == rec.id and x.started]
        ended = [i for i in ended if not self.execs[i].running]
        for exec_id in ended[: max(0, len(ended) - KEPT_PER_CONTAINER)]:
            del self.execs[exec_id]
        ex = Exec(secrets.token_hex(32), rec.id, config, keep=keep)
        self.execs[ex.id] = ex
        rec.exec_ids.append(ex.id)
        self._event("exec_create", ex)
        return ex

    async def _starting(self, exec_id: str) -> tuple[Exec, Record, dict[str, Any]]:
        """The exec to start, its container and its OCI process (404, 409, 400 here); it
        counts as started from now on, unless this fails."""
        ex = self.get(exec_id)
        if ex.started:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        rec = self._running_container(ex.container_id)
        ex.started = True

        def build() -> dict[str, Any]:
            with open(os.path.join(self.containers.bundle(rec.id), "config.json"), "rb") as f:
                spec = json.load(f)
            return build_process(spec.get("process") or {}, rec.rootfs, ex.config)

        try:
            return ex, rec, await asyncio.to_thread(build)
        except BaseException:
            ex.started = False
            raise

    def _ended(self, ex: Exec, code: int) -> None:
        first = ex.exit_code is None
        ex.running, ex.exit_code = False, code
        ex.ready.set()
        if first:
            self._event("exec_die", ex)
        rec = self.containers.records.get(ex.container_id)
        if rec is not None and ex.id in rec.exec_ids:
            rec.exec_ids.remove(ex.id)
        if not ex.keep:
            self.execs.pop(ex.id, None)

    def forget(self, exec_id: str) -> None:
        """Drop an exec nobody will ask about (a healthcheck's that timed out)."""
        ex = self.execs.pop(exec_id, None)
        rec = self.containers.records.get(ex.container_id) if ex is not None else None
        if rec is not None and exec_id in rec.exec_ids:
            rec.exec_ids.remove(exec_id)

    def _failed(self, ex: Exec, e: BerthError) -> str:
        message = f"OCI runtime exec failed: exec failed: unable to start container process: {e}"
        self._ended(ex, start_failure_exit_code(str(e)))
        log.info("exec %s: cannot start: %s", ex.id, e)
        return message + ": unknown"

    async def start_detached(self, exec_id: str) -> None:
        ex, rec, process = await self._starting(exec_id)
        try:
            ex.pid = await self.sup.exec_detached(rec.id, ex.id, process, ex.config.attach_stdin)
        except NotFound:
            raise Conflict(f"Container {rec.id} is not running") from None
        except BerthError as e:
            raise InvalidArgument(self._failed(ex, e)) from None
        ex.running = True
        ex.ready.set()
        self._event("exec_start", ex)

    async def run(self, exec_id: str) -> AsyncGenerator[tuple[str, bytes], None]:
        """Check and prepare now (404, 409, 400), start when iterated: the exec's output as
        (stream, data) until it exits (then its exit code is recorded). A process that
        cannot start yields its error as "stdout"."""
        ex, rec, process = await self._starting(exec_id)
        return self._attached(ex, rec, process)

    async def _attached(
        self, ex: Exec, rec: Record, process: dict[str, Any]
    ) -> AsyncGenerator[tuple[str, bytes], None]:
        events = self.sup.exec_attached(rec.id, ex.id, process, ex.config.attach_stdin)
        try:
            first = await anext(events)
        except BerthError as e:
            yield "stdout", (self._failed(ex, e) + "\r\n").encode()
            return
        ex.pid = first if isinstance(first, int) else 0
        ex.running = True
        ex.ready.set()
        self._event("exec_start", ex)
        try:
            async for event in events:
                if isinstance(event, int):
                    self._ended(ex, event)
                    return
                yield event
        finally:
            await events.aclose()

    async def pump_stdin(self, exec_id: str, chunks: asyncio.Queue[bytes]) -> None:
        """Write ``chunks`` (``b""`` is EOF) to the exec's stdin once it runs (the client
        may send before the process is started)."""
        ex = self.get(exec_id)
        await ex.ready.wait()
        while ex.running:
            data = await chunks.get()
            await self.sup.write_stdin(ex.container_id, data, eof=not data, exec_id=ex.id)
            if not data:
                return

    # -- inspect, resize
    async def inspect(self, exec_id: str) -> dict[str, Any]:
        ex = self.get(exec_id)
        if ex.running:
            try:
                state = await self.sup.exec_state(ex.container_id, ex.id)
            except NotFound:  # its container ended and the supervisor forgot them both
                self._ended(ex, UNKNOWN_EXIT)
            else:
                if not state["running"]:
                    self._ended(ex, int(state["exit_code"]))
        return ex.inspect()

    async def resize(self, exec_id: str, height: int, width: int) -> None:
        ex = self.get(exec_id)
        if ex.started and not ex.ready.is_set():  # the CLI resizes right after the 101
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ex.ready.wait(), READY_TIMEOUT)
        if not ex.running:
            raise Conflict(f"Exec {exec_id} is not running")
        await self.sup.resize(ex.container_id, height, width, exec_id=ex.id)

    async def resize_container(self, ref: str, height: int, width: int) -> None:
        rec = self.containers.get(ref)
        if not rec.running:
            raise Conflict(f"Container {rec.id} is not running")
        if rec.tty:
            await self.sup.resize(rec.id, height, width)
        self.containers.emit(rec, "resize", height=str(height), width=str(width))
