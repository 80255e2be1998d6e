"""The supervisor: parent of every container, holder of their logs and exit codes.

``python -m berth.engine.supervisor --root DIR --socket PATH [--log FILE] [--daemonize]``

One small, long-lived, single-threaded process, separate from berthd, with no asyncio: one
``selectors`` loop over its unix socket (JSON lines, ``supervisor_protocol``), the containers'
stdout/stderr pipes (or terminal masters), pidfds of adopted containers and a self-pipe woken
by signals. It is a child subreaper and creates every container itself through the runtime
library (the init is cloned from this process, with the library already loaded), so it reaps
every container init and every orphan of theirs; execs are forked from it the same way
(``runtime.execute.spawn``) and reaped by it. Beside this module: ``supervisor_logs`` (the
json-file writer), ``supervisor_table`` (``Entry``, ``ExecEntry``, ``Conn``, exit statuses),
``supervisor_io`` (a new process's pipes or terminal, stdin writes, resize),
``supervisor_output`` (reading the output to the log or an exec's client, backpressure) and
``supervisor_process`` (detaching, signal dispositions, rlimits), each with its own rules.

Rules:
- Layout: the runtime's store is ``--root`` itself (``<root>/<id>/state.json``); beside the
  record, ``supervisor.json`` (log path, stdin, start time) and, once the container has ended,
  ``exit.json``. Both are written atomically (tmp + fsync + rename); ``exit.json`` is written
  BEFORE any waiter or subscriber hears of the exit, and after the log is drained and synced,
  so whoever restarts reads it and finds every line before it.
- Logs are Docker's json-file format, one ``{"log","stream","time"}`` object per line; a line
  longer than 16 KiB is split as dockerd splits it; a partial line is flushed at exit. A
  terminal's output (raw, CR LF line ends, all "stdout") is logged as it is read, partial lines too
  (a shell's prompt), since attach reads it from the log.
- Stopping the supervisor (SIGTERM, SIGINT or ``shutdown``) never touches a container: they
  keep running. A new supervisor rebuilds its table from the store and the exit files and
  watches live inits it did not make with pidfds. Such an init is not its child, so its exit
  status is read from /proc while it is a zombie; if its new parent reaped it first the status
  is unknown: 255 (137 when the cgroup counted an OOM kill), ``known: false``, as containerd does.
  After such a stop the containers' stdout and stderr have no reader any more (a later write
  fails with EPIPE, and what they print is lost): an upgrade uses ``restart`` instead, which
  execs the new code in this same process with the pipes, the socket and the lock handed over,
  so containers stay its children and no line or exit status is lost.
- Containers start with default signal dispositions (Python's ignored SIGPIPE and SIGXFSZ
  would survive clone and execve otherwise).
- An exec's output goes only to the connection that started it with ``attach`` (dropped
  once that connection is gone), its exit after the last of its output; its exit code stays
  for ``exec_state`` (the last ``ENDED_EXECS_KEPT`` per container). A connection that does not
  read holds up the output of its execs only (backpressure, ``supervisor_output``).
- Requests run one at a time; ``create``, ``start`` and ``exec`` block the loop for as long as the
  runtime takes (milliseconds). Errors are answered as ``berth.errors`` kinds; an unexpected
  exception is logged with its traceback and answered as an internal error, never fatal.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from berth.engine import supervisor_execs as execs
from berth.engine import supervisor_handoff as handing
from berth.engine import supervisor_protocol as p
from berth.engine.supervisor_io import ChildIO, close_stdin, pump_stdin, resize
from berth.engine.supervisor_io import write_stdin as write_stdin_to
from berth.engine.supervisor_logs import JsonFileLog, now
from berth.engine.supervisor_output import OutputPump
from berth.engine.supervisor_process import (
    _is_child,
    _raise_nofile,
    _readable,
    _unignore_signals,
    detach,
)
from berth.engine.supervisor_table import (
    Conn,
    Entry,
    ExecEntry,
    Stdin,
    _read_json,
    exit_code_of,
    zombie_wait_status,
)
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound, Unavailable
from berth.runtime import container, store
from berth.runtime import init as _init  # noqa: F401  (loaded once here, not in every clone)
from berth.runtime import seccomp as _seccomp  # noqa: F401  (likewise, for every create)
from berth.runtime import syscalls as s
from berth.runtime.create import CreateOptions, create, load_bundle
from berth.spec import jsonio
from berth.spec.state import Status, check_operation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

log = logging.getLogger("berth.engine.supervisor")  # not "__main__" when run with -m

META = "supervisor.json"
EXIT = "exit.json"
HANDOFF = "supervisor.handoff.json"  # an in-place restart's fds, read and removed at once
LOCK = "supervisor.lock"  # flock'ed for the supervisor's life; holds its pid
MAX_REQUEST = 1 << 20
DELETE_TIMEOUT = 10.0
ENDED_EXECS_KEPT = 32  # per container, for exec_state after the engine lost the connection


# --------------------------------------------------------------------------- the supervisor


def stale_event(sel: selectors.BaseSelector, key: selectors.SelectorKey) -> bool:
    """True for an event of a select batch whose fd an earlier callback of the same batch
    closed (a container's exit drains and closes its pipes) or closed and registered anew."""
    try:
        return sel.get_key(key.fileobj) is not key
    except KeyError:
        return True


class Supervisor:
    def __init__(
        self,
        root: str,
        socket_path: str,
        log_path: str | None = None,
        handoff: str | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        self.socket_path = os.path.abspath(socket_path)
        self.log_path = log_path
        self.handoff = handoff
        self.restarting = False
        self.st = store.Store(self.root)
        self.sel = selectors.DefaultSelector()
        self.output = OutputPump(self.sel, self._send)
        self.table: dict[str, Entry] = {}
        self.by_pid: dict[int, Entry] = {}
        self.exec_by_pid: dict[int, ExecEntry] = {}
        self.conns: list[Conn] = []
        self.stopping = False
        self.listener: socket.socket | None = None
        self._wake_r = self._wake_w = -1
        self._lock_fd = -1

    # -- set-up and tear-down
    def open(self) -> None:
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        handed: dict[str, Any] = {}
        if self.handoff:  # an in-place restart: the lock and the socket are still ours
            handed = _read_json(self.handoff) or {}
            os.unlink(self.handoff)
            self._lock_fd = int(handed["lock"])
            self.listener = socket.socket(fileno=int(handed["listener"]))
            for fd in (self._lock_fd, self.listener.fileno()):
                os.set_inheritable(fd, False)
        else:
            lock = os.path.join(self.root, LOCK)
            self._lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Conflict(f"supervisor: another supervisor serves {self.root}") from None
            os.ftruncate(self._lock_fd, 0)
            os.write(self._lock_fd, f"{os.getpid()}\n".encode())  # who holds it, for people
        s.LINUX.prctl(s.PR_SET_CHILD_SUBREAPER, 1)
        _unignore_signals()
        _raise_nofile()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop_signal)
        signal.signal(signal.SIGINT, self._stop_signal)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._recover(handed.get("containers", {}))
        if self.listener is None:
            self.listener = self._listen()
        self.sel.register(self.listener, selectors.EVENT_READ, self._on_accept)
        self._reap()  # children that ended while we were exec'ing
        log.info("supervisor %d: serving %s on %s", os.getpid(), self.root, self.socket_path)

    def _listen(self) -> socket.socket:
        os.makedirs(os.path.dirname(self.socket_path), exist_ok=True)
        if os.path.exists(self.socket_path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(self.socket_path)
            except OSError:
                os.unlink(self.socket_path)  # stale: its supervisor is gone (we hold the lock)
            else:
                raise Conflict(f"supervisor: {self.socket_path} is already served")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _stop_signal(self, signum: int, _frame: object) -> None:
        log.info("supervisor: signal %d: stopping; containers keep running", signum)
        self.stopping = True

    def close(self) -> None:
        """Stop serving; leave every container running (their inits are reparented)."""
        for e in self.table.values():
            self.output.drain(e)
            if e.log is not None:  # no one will read the rest of a partial line
                for stream in ("stdout", "stderr"):
                    e.log.flush(stream)
            self._release_fds(e)
        for conn in list(self.conns):
            self._flush_blocking(conn)
            self._close_conn(conn)
        if self.listener is not None:
            self.sel.unregister(self.listener)
            self.listener.close()
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        signal.set_wakeup_fd(-1)
        self.sel.close()
        for fd in (self._wake_r, self._wake_w, self._lock_fd):
            if fd >= 0:
                os.close(fd)
        log.info(
            "supervisor %d: stopped; %d container(s) left running",
            os.getpid(),
            sum(1 for e in self.table.values() if e.exit is None),
        )

    def reexec(self) -> None:
        """Restart in place (an upgrade): exec the supervisor again in this process, so the
        containers stay our children; their pipes, the socket and the lock are handed over
        through inherited fds and ``supervisor.handoff.json``. Clients are disconnected."""
        containers: dict[str, Any] = {}
        for e in self.table.values():
            self.output.drain(e)
            if e.pidfd >= 0:
                self.sel.unregister(e.pidfd)
                os.close(e.pidfd)  # reopened by the new image
                e.pidfd = -1
            if e.adopted or e.exit is not None:
                continue
            containers[e.id] = handing.hand_over_container(e)
        for conn in list(self.conns):
            self._flush_blocking(conn)
            self._close_conn(conn)
        assert self.listener is not None
        for fd in (self._lock_fd, self.listener.fileno()):
            os.set_inheritable(fd, True)
        handoff = os.path.join(self.root, HANDOFF)
        state = {
            "lock": self._lock_fd,
            "listener": self.listener.fileno(),
            "containers": containers,
        }
        store.write_atomically(handoff, jsonio.dumps(state).encode())
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        argv = [sys.executable, "-m", "berth.engine.supervisor", "--root", self.root]
        argv += ["--socket", self.socket_path, "--handoff", handoff]
        if self.log_path:
            argv += ["--log", self.log_path]
        log.info(
            "supervisor %d: restarting in place, %d container(s) handed over",
            os.getpid(),
            len(containers),
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.execv(sys.executable, argv)

    def serve(self) -> None:
        while not self.stopping:
            for key, mask in self.sel.select():
                if stale_event(self.sel, key):
                    continue
                callback: Callable[[int], None] = key.data
                callback(mask)  # after a stop request the rest of this batch still runs

    # -- recovery after a restart
    def _recover(self, handed: dict[str, Any]) -> None:
        """Rebuild the table from the store, the exit files and (after an in-place restart)
        the fds the previous image handed over."""
        for cid in self.st.ids():
            try:
                record = self.st.load(cid)
            except BerthError as exc:
                log.error("container %s: not adopted: %s", cid, exc)
                continue
            meta = _read_json(os.path.join(self.st.dir(cid), META)) or {}
            e = Entry(cid, record, meta, adopted=True)
            self.table[cid] = e
            saved = _read_json(os.path.join(self.st.dir(cid), EXIT))
            if saved is not None:
                e.exit = p.Exit.from_json(saved)
            elif _is_child(record.pid):
                e.adopted = False
                self.by_pid[record.pid] = e
                self._take_over(e, handed.get(cid))
                log.info("container %s: still our child, init %d", cid, record.pid)
            else:
                self._watch(e)
        for cid, fds in handed.items():  # containers gone meanwhile: nothing to read for
            if cid not in self.table or self.table[cid].adopted:
                for fd in handing.handed_fds(fds):
                    os.close(fd)

    def _take_over(self, e: Entry, handed: dict[str, Any] | None) -> None:
        if handed is None:
            return
        execs = handing.take_container(e, handed)
        for holder in (e, *execs):
            self.output.watch(holder)
            if holder.stdin_w >= 0:
                pump_stdin(self.sel, holder)
        for x in execs:  # their clients were disconnected: output dropped
            e.execs[x.id] = x
            if x.exit_code is None:
                self.exec_by_pid[x.pid] = x

    def _watch(self, e: Entry) -> None:
        """An init that is not our child (an earlier supervisor's): watched by pidfd."""
        try:
            e.pidfd = s.LINUX.pidfd_open(e.pid)
        except OSError:
            e.pidfd = -1
        if e.pidfd >= 0 and e.record.init_alive():
            self.sel.register(e.pidfd, selectors.EVENT_READ, self._pidfd_cb(e))
            log.info("container %s: adopted, init %d", e.id, e.pid)
        else:
            self._adopted_exit(e)

    def _pidfd_cb(self, e: Entry) -> Callable[[int], None]:
        return lambda _mask: self._adopted_exit(e)

    def _adopted_exit(self, e: Entry) -> None:
        status = zombie_wait_status(e.pid, e.record.pid_start)
        if status is None:
            log.warning("container %s: init %d was reaped elsewhere: exit unknown", e.id, e.pid)
        self._exited(e, status)

    # -- signals and reaping
    def _on_wake(self, _mask: int) -> None:
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            e = self.by_pid.get(pid)
            if e is not None:
                self._exited(e, status)
            elif pid in self.exec_by_pid:
                self._exec_exited(self.exec_by_pid.pop(pid), status)
            else:
                log.debug("reaped orphan %d (status %d)", pid, status)

    def _exited(self, e: Entry, status: int | None) -> None:
        """Record the exit durably, then tell the waiters and subscribers."""
        if e.exit is not None:
            return
        self.by_pid.pop(e.pid, None)
        if e.pidfd >= 0:
            self.sel.unregister(e.pidfd)
            os.close(e.pidfd)
            e.pidfd = -1
        self.output.drain(e)
        if e.log is not None:
            for stream in ("stdout", "stderr"):
                e.log.flush(stream)
            e.log.sync()
        oom = self._oom_killed(e)
        unknown = 137 if oom else p.UNKNOWN_EXIT_CODE
        code = exit_code_of(status) if status is not None else unknown
        e.exit = p.Exit(e.id, e.pid, code, oom, now(), known=status is not None)
        directory = self.st.dir(e.id)
        if os.path.isdir(directory):
            data = jsonio.dumps(e.exit.to_json()).encode()
            store.write_atomically(os.path.join(directory, EXIT), data, 0o644)
        log.info("container %s: exited %d (oom %s)", e.id, code, oom)
        for conn, seq in e.waiters:
            self._send(conn, p.encode_result(seq, e.exit.to_json()))
        e.waiters = []
        event = p.encode_exit_event(e.exit)
        for conn in self.conns:
            if conn.subscribed:
                self._send(conn, event)

    def _oom_killed(self, e: Entry) -> bool:
        try:
            return e.loaded.cgroup.oom_killed()
        except (OSError, BerthError) as exc:
            log.warning("container %s: cannot read its OOM count: %s", e.id, exc)
            return False

    # -- the containers' and execs' fds
    def _release_fds(self, e: Stdin) -> None:
        for fd in list(e.streams):
            self.output.unwatch(e, fd)
            os.close(fd)
        e.streams.clear()
        e.console = -1  # it was one of the streams
        close_stdin(self.sel, e)
        if not isinstance(e, Entry):
            return
        for x in e.execs.values():
            self._release_fds(x)
        if e.pidfd >= 0:
            self.sel.unregister(e.pidfd)
            os.close(e.pidfd)
            e.pidfd = -1
        if e.log is not None:
            e.log.close()
            e.log = None

    # -- clients
    def _on_accept(self, _mask: int) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            conn = Conn(sock)
            self.conns.append(conn)
            self.sel.register(sock, selectors.EVENT_READ, self._conn_cb(conn))

    def _conn_cb(self, conn: Conn) -> Callable[[int], None]:
        return lambda mask: self._on_conn(conn, mask)

    def _on_conn(self, conn: Conn, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if not mask & selectors.EVENT_READ or conn.closed:
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_conn(conn)
            return
        conn.inbuf += data
        while not conn.closed and not self.stopping:
            line, nl, rest = conn.inbuf.partition(b"\n")
            if not nl:
                if len(conn.inbuf) > MAX_REQUEST:
                    self._send(conn, p.encode_error(-1, InvalidArgument("request too long")))
                    self._close_conn(conn)
                break
            conn.inbuf = rest
            if line.strip():
                self._handle_line(conn, line)

    def _handle_line(self, conn: Conn, line: bytes) -> None:
        seq = -1
        try:
            seq, req = p.decode_request(line)
            result = self._dispatch(conn, seq, req)
        except BerthError as exc:
            self._send(conn, p.encode_error(seq, exc))
            return
        except OSError as exc:
            self._send(conn, p.encode_error(seq, BerthError(str(exc))))
            return
        except Exception as exc:
            log.exception("supervisor: request %r failed", line[:200])
            self._send(conn, p.encode_error(seq, BerthError(f"supervisor: internal error: {exc}")))
            return
        if result is not None:
            self._send(conn, p.encode_result(seq, result))

    def _send(self, conn: Conn, data: bytes) -> None:
        if conn.closed:
            return
        conn.outbuf += data
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        try:
            while conn.outbuf:
                sent = conn.sock.send(conn.outbuf)
                conn.outbuf = conn.outbuf[sent:]
        except BlockingIOError:
            pass
        except OSError:
            self._close_conn(conn)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outbuf else 0)
        self.sel.modify(conn.sock, events, self._conn_cb(conn))
        self.output.sent(conn)

    def _flush_blocking(self, conn: Conn) -> None:
        if conn.closed or not conn.outbuf:
            return
        try:
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            conn.sock.sendall(conn.outbuf)
        except OSError:
            pass  # a client that does not read its answer within a second loses it
        conn.outbuf = b""

    def _close_conn(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.sel.unregister(conn.sock)
        conn.sock.close()
        self.conns.remove(conn)
        for e in self.table.values():
            e.waiters = [(c, q) for c, q in e.waiters if c is not conn]
            for x in e.execs.values():
                if x.conn is conn:
                    x.conn = None  # its output is dropped from now on; exec_state has its exit
        self.output.resume(conn)

    # -- requests
    def _dispatch(self, conn: Conn, seq: int, req: p.Request) -> dict[str, Any] | None:
        if isinstance(req, p.Create):
            return self._create(req).to_json()
        if isinstance(req, p.Start):
            return self._start(req.id).to_json()
        if isinstance(req, p.Kill) and req.exec_id:
            x = self._exec_entry(req.id, req.exec_id)
            if x.exit_code is None:  # not reaped yet: the pid is still its own
                os.kill(x.pid, req.signal)
            return {}
        if isinstance(req, p.Kill):
            e = self._entry(req.id)
            if e.exit is not None:
                check_operation(req.id, "kill", Status.STOPPED)
            container.kill(self.st, req.id, req.signal, req.all)
            return {}
        if isinstance(req, p.Delete):
            self._delete(req.id, req.force)
            return {}
        if isinstance(req, p.StateOf):
            return self._info(self._entry(req.id)).to_json()
        if isinstance(req, p.List):
            return {"containers": [self._info(e).to_json() for e in self.table.values()]}
        if isinstance(req, p.Wait):
            e = self._entry(req.id)
            if e.exit is not None:
                return e.exit.to_json()
            e.waiters.append((conn, seq))
            return None
        if isinstance(req, p.Subscribe):
            conn.subscribed = True
            return {}
        if isinstance(req, p.WriteStdin):
            write_stdin_to(self.sel, self._holder(req.id, req.exec_id), req.payload(), req.eof)
            return {}
        if isinstance(req, p.Resize):
            resize(self._holder(req.id, req.exec_id), req.height, req.width)
            return {}
        if isinstance(req, p.Exec):
            return self._exec(conn, req)
        if isinstance(req, p.ExecState):
            return self._exec_entry(req.id, req.exec_id).state()
        if isinstance(req, p.Restart):
            self.restarting = True
        self.stopping = True
        return {}

    def _entry(self, cid: str) -> Entry:
        e = self.table.get(cid)
        if e is None:
            raise NotFound(f"container {cid!r} does not exist")
        return e

    def _exec_entry(self, cid: str, exec_id: str) -> ExecEntry:
        x = self._entry(cid).execs.get(exec_id)
        if x is None:
            raise NotFound(f"exec {exec_id!r} of container {cid!r} does not exist")
        return x

    def _holder(self, cid: str, exec_id: str) -> Stdin:
        """The container ``cid``, or its exec ``exec_id`` when one is named."""
        return self._exec_entry(cid, exec_id) if exec_id else self._entry(cid)

    def _info(self, e: Entry) -> p.Info:
        if e.exit is not None:
            status = Status.STOPPED
        else:
            # the runtime's rule (store.status) on the record we hold: no re-reading it
            created = os.path.exists(self.st.fifo(e.id))
            frozen = not created and e.record.init_alive() and e.loaded.cgroup.is_frozen()
            status = self.st.status(e.record, frozen)
        return e.info(status)

    def _create(self, req: p.Create) -> p.Info:
        store.check_id(req.id)
        if not os.path.isabs(req.log_path):
            raise InvalidArgument(f"create: log_path {req.log_path!r} must be absolute")
        if req.id in self.table:
            raise Conflict(f"container {req.id!r} already exists")
        bundle = load_bundle(req.bundle)
        # the config says whether it has a terminal (the request's flag is only a hint)
        terminal = bundle.spec.process is not None and bundle.spec.process.terminal
        io = ChildIO(req.stdin, terminal)
        try:
            log_file = JsonFileLog(req.log_path)
            try:
                opts = CreateOptions(
                    bundle=req.bundle, stdio=io.stdio, console_socket=io.console_socket
                )
                created = create(
                    self.st,
                    req.id,
                    opts,
                    foreground=True,
                    bundle=bundle,
                    start_at_once=req.start,
                )
            except BaseException:
                log_file.close()
                raise
        except BaseException:
            io.abort()
            raise
        meta: dict[str, Any] = {"log_path": req.log_path, "stdin": req.stdin, "tty": terminal}
        e = Entry(req.id, created.record, meta, adopted=False)
        e.log = log_file
        io.started(e)
        self.output.watch(e)
        self.table[req.id] = e
        self.by_pid[e.pid] = e
        if req.start:
            meta["started_at"] = now()
            container.run_hooks(created.record, "poststart", Status.RUNNING)
        self._save_meta(e)
        log.info("container %s: created, init %d", req.id, e.pid)
        return self._info(e)

    def _start(self, cid: str) -> p.Info:
        e = self._entry(cid)
        container.start(self.st, cid)
        e.meta["started_at"] = now()
        self._save_meta(e)
        return self._info(e)

    def _save_meta(self, e: Entry) -> None:
        data = jsonio.dumps(e.meta).encode()
        # meaningful while the container runs, i.e. within this boot: no sync needed
        store.write_atomically(os.path.join(self.st.dir(e.id), META), data, 0o644, durable=False)

    # -- execs
    def _exec(self, conn: Conn, req: p.Exec) -> dict[str, Any]:
        """Start an exec; answer its pid once it runs."""
        e = self._entry(req.id)
        x = execs.start(self.st, e, req, conn)
        self.output.watch(x)
        e.execs[x.id] = x
        self.exec_by_pid[x.pid] = x
        return {"pid": x.pid}

    def _exec_exited(self, x: ExecEntry, status: int) -> None:
        """Its output to its connection first, then its exit; keep a few ended ones."""
        self.output.drain(x)
        self._release_fds(x)
        x.exit_code = exit_code_of(status)
        log.info("exec %s: exited %d", x.id, x.exit_code)
        if x.conn is not None:
            self._send(x.conn, p.encode_exec_exit(x.id, x.exit_code))
        e = self.table.get(x.container_id)
        if e is not None:
            ended = [k for k, v in e.execs.items() if v.exit_code is not None]
            for k in ended[:-ENDED_EXECS_KEPT]:
                del e.execs[k]

    def _delete(self, cid: str, force: bool) -> None:
        e = self.table.get(cid)
        if e is None:
            container.delete(self.st, cid, force)  # a record we never adopted: the runtime's
            return
        if e.exit is None:
            loaded = container.load(self.st, cid)
            if loaded.status != Status.STOPPED:
                check_operation(cid, "delete --force" if force else "delete", loaded.status)
                loaded.cgroup.kill_all()
                try:
                    os.kill(e.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._await_exit(e)
        live = [x for x in e.execs.values() if self.exec_by_pid.get(x.pid) is x]
        for x, status in execs.kill_and_reap(live):  # else its cgroup cannot go
            self._exec_exited(self.exec_by_pid.pop(x.pid), status)
        container.delete(self.st, cid, force)
        self._release_fds(e)
        del self.table[cid]
        log.info("container %s: deleted", cid)

    def _await_exit(self, e: Entry) -> None:
        """Block until ``e``'s init is gone and its exit recorded (delete, after SIGKILL)."""
        deadline = time.monotonic() + DELETE_TIMEOUT
        while e.exit is None:
            if e.adopted:
                if e.pidfd < 0 or _readable(e.pidfd, 0.01):
                    self._adopted_exit(e)
            else:
                try:
                    pid, status = os.waitpid(e.pid, os.WNOHANG)
                except ChildProcessError:
                    self._exited(e, None)
                    break
                if pid:
                    self._exited(e, status)
                    break
                time.sleep(0.002)
            if time.monotonic() > deadline:
                raise Unavailable(f"container {e.id}: init {e.pid} survived SIGKILL")


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="berth-supervisor", description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="the containers' state directory")
    ap.add_argument("--socket", required=True, help="the unix socket to serve")
    ap.add_argument("--log", help="the supervisor's own log (default: stderr)")
    ap.add_argument(
        "--daemonize",
        action="store_true",
        help="detach (fork, setsid, fork) and exit once the socket answers",
    )
    ap.add_argument("--handoff", help=argparse.SUPPRESS)  # an in-place restart's state
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    code, ready_w = detach(args.daemonize, args.log)
    if code is not None:
        return code
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sup = Supervisor(args.root, args.socket, args.log, args.handoff)
    try:
        sup.open()
    except (BerthError, OSError) as exc:
        log.error("supervisor: cannot start: %s", exc)
        if ready_w >= 0:
            os.write(ready_w, f"supervisor: cannot start: {exc}\n".encode())
        return 1
    if ready_w >= 0:
        os.write(ready_w, b"ok")
        os.close(ready_w)
    try:
        sup.serve()
    except BaseException:
        sup.close()
        raise
    if sup.restarting:
        sup.reexec()  # does not return
    sup.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
