"""The supervisor: parent of every container, holder of their logs and exit codes.

``python -m berth.engine.supervisor --root DIR --socket PATH [--log FILE] [--daemonize]``

One small, long-lived, single-threaded process, separate from berthd, with no asyncio: one
``selectors`` loop over its unix socket (JSON lines, ``supervisor_protocol``), the containers'
stdout/stderr pipes, pidfds of adopted containers and a self-pipe woken by signals. It is a
child subreaper and creates every container itself through the runtime library (the init is
cloned from this process, with the library already loaded), so it reaps every container init
and every orphan of theirs. Beside this module: ``supervisor_logs`` (the json-file writer),
``supervisor_table`` (``Entry``, ``Conn``, exit statuses) and ``supervisor_process`` (detaching,
signal dispositions, rlimits), each with its own rules.

Rules:
- Layout: the runtime's store is ``--root`` itself (``<root>/<id>/state.json``); beside the
  record, ``supervisor.json`` (log path, stdin, start time) and, once the container has ended,
  ``exit.json``. Both are written atomically (tmp + fsync + rename); ``exit.json`` is written
  BEFORE any waiter or subscriber hears of the exit, and after the log is drained and synced,
  so whoever restarts reads it and finds every line before it.
- Logs are Docker's json-file format, one ``{"log","stream","time"}`` object per line; a line
  longer than 16 KiB is split as dockerd splits it; a partial line is flushed at exit.
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
- Requests run one at a time; ``create`` and ``start`` block the loop for as long as the
  runtime takes (milliseconds). Errors are answered as ``berth.errors`` kinds; an unexpected
  exception is logged with its traceback and answered as an internal error, never fatal.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from berth.engine import supervisor_protocol as p
from berth.engine.supervisor_logs import JsonFileLog, now
from berth.engine.supervisor_process import (
    _is_child,
    _raise_nofile,
    _readable,
    _unignore_signals,
    detach,
)
from berth.engine.supervisor_table import Conn, Entry, _read_json, exit_code_of, zombie_wait_status
from berth.errors import BerthError, Conflict, InvalidArgument, NotFound, Unavailable, Unsupported
from berth.runtime import container, store
from berth.runtime import init as _init  # noqa: F401  (loaded once here, not in every clone)
from berth.runtime import seccomp as _seccomp  # noqa: F401  (likewise, for every create)
from berth.runtime import syscalls as s
from berth.runtime.create import CreateOptions, create
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
MAX_STDIN_BUFFER = 16 << 20


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
        self.table: dict[str, Entry] = {}
        self.by_pid: dict[int, Entry] = {}
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
            self._drain(e)
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
            self._drain(e)
            if e.pidfd >= 0:
                self.sel.unregister(e.pidfd)
                os.close(e.pidfd)  # reopened by the new image
                e.pidfd = -1
            if e.adopted or e.exit is not None:
                continue
            fds = [*e.streams, e.stdin_w]
            for fd in fds:
                if fd >= 0:
                    os.set_inheritable(fd, True)
            partial = e.log.partial if e.log is not None else {}
            containers[e.id] = {
                "streams": {str(fd): stream for fd, stream in e.streams.items()},
                "stdin": e.stdin_w,
                "stdin_buf": base64.b64encode(e.stdin_buf).decode(),
                "stdin_eof": e.stdin_eof,
                "partial": {k: base64.b64encode(v).decode() for k, v in partial.items()},
            }
            if e.log is not None:
                e.log.close()
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
                for fd in (*map(int, fds["streams"]), fds["stdin"]):
                    if fd >= 0:
                        os.close(fd)

    def _take_over(self, e: Entry, handed: dict[str, Any] | None) -> None:
        if handed is None:
            return
        log_path = str(e.meta.get("log_path", ""))
        if log_path:
            e.log = JsonFileLog(log_path)
            for stream, partial in handed["partial"].items():
                e.log.partial[stream] = base64.b64decode(partial)
        for fd_text, stream in handed["streams"].items():
            fd = int(fd_text)
            os.set_inheritable(fd, False)
            e.streams[fd] = stream
            self.sel.register(fd, selectors.EVENT_READ, self._pipe_cb(e, fd))
        e.stdin_w = int(handed["stdin"])
        if e.stdin_w >= 0:
            os.set_inheritable(e.stdin_w, False)
            e.stdin_buf = base64.b64decode(handed["stdin_buf"])
            e.stdin_eof = bool(handed["stdin_eof"])
            self._pump_stdin(e)

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
            if e is None:
                log.debug("reaped orphan %d (status %d)", pid, status)
            else:
                self._exited(e, status)

    def _exited(self, e: Entry, status: int | None) -> None:
        """Record the exit durably, then tell the waiters and subscribers."""
        if e.exit is not None:
            return
        self.by_pid.pop(e.pid, None)
        if e.pidfd >= 0:
            self.sel.unregister(e.pidfd)
            os.close(e.pidfd)
            e.pidfd = -1
        self._drain(e)
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

    # -- the containers' output
    def _pipe_cb(self, e: Entry, fd: int) -> Callable[[int], None]:
        def on_readable(_mask: int) -> None:
            self._read_pipe(e, fd)

        return on_readable

    def _read_pipe(self, e: Entry, fd: int) -> int:
        """Read what is there: the byte count, 0 if nothing now, -1 once the pipe is closed
        (then it is closed here too, its partial line flushed)."""
        stream = e.streams[fd]
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return 0
        if data:
            if e.log is not None:
                e.log.feed(stream, data)
            return len(data)
        if e.log is not None:
            e.log.flush(stream)
        self.sel.unregister(fd)
        os.close(fd)
        del e.streams[fd]
        return -1

    def _drain(self, e: Entry) -> None:
        for fd in list(e.streams):
            for _ in range(1024):  # at most 64 MiB now; the rest when the loop comes back
                if self._read_pipe(e, fd) <= 0:
                    break

    def _release_fds(self, e: Entry) -> None:
        for fd in list(e.streams):
            self.sel.unregister(fd)
            os.close(fd)
        e.streams.clear()
        self._close_stdin(e)
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

    # -- requests
    def _dispatch(self, conn: Conn, seq: int, req: p.Request) -> dict[str, Any] | None:
        if isinstance(req, p.Create):
            return self._create(req).to_json()
        if isinstance(req, p.Start):
            return self._start(req.id).to_json()
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
            self._write_stdin(self._entry(req.id), req)
            return {}
        if isinstance(req, p.Restart):
            self.restarting = True
        self.stopping = True
        return {}

    def _entry(self, cid: str) -> Entry:
        e = self.table.get(cid)
        if e is None:
            raise NotFound(f"container {cid!r} does not exist")
        return e

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
        if req.terminal:
            raise Unsupported("create: terminal: not supported by the supervisor yet")
        if not os.path.isabs(req.log_path):
            raise InvalidArgument(f"create: log_path {req.log_path!r} must be absolute")
        if req.id in self.table:
            raise Conflict(f"container {req.id!r} already exists")
        child_ends: list[int] = []
        ours: list[int] = []
        try:
            if req.stdin:
                stdin_r, stdin_w = os.pipe2(os.O_CLOEXEC)
                ours.append(stdin_w)
            else:
                stdin_r = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            child_ends.append(stdin_r)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            ours.append(out_r)
            child_ends.append(out_w)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            ours.append(err_r)
            child_ends.append(err_w)
            log_file = JsonFileLog(req.log_path)
            try:
                opts = CreateOptions(bundle=req.bundle, stdio=(stdin_r, out_w, err_w))
                created = create(self.st, req.id, opts, foreground=True, start_at_once=req.start)
            except BaseException:
                log_file.close()
                raise
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        meta: dict[str, Any] = {"log_path": req.log_path, "stdin": req.stdin}
        e = Entry(req.id, created.record, meta, adopted=False)
        e.log = log_file
        if req.stdin:
            os.set_blocking(stdin_w, False)
            e.stdin_w = stdin_w
        for fd, stream in ((out_r, "stdout"), (err_r, "stderr")):
            os.set_blocking(fd, False)
            e.streams[fd] = stream
            self.sel.register(fd, selectors.EVENT_READ, self._pipe_cb(e, fd))
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
        store.write_atomically(os.path.join(self.st.dir(e.id), META), data, 0o644)

    def _write_stdin(self, e: Entry, req: p.WriteStdin) -> None:
        if e.stdin_w < 0 or e.stdin_eof:
            raise Conflict(f"container {e.id}: stdin is not open")
        data = req.payload()
        if len(e.stdin_buf) + len(data) > MAX_STDIN_BUFFER:
            raise Unavailable(
                f"container {e.id}: stdin is not being read: {MAX_STDIN_BUFFER}"
                " bytes are waiting already"
            )
        e.stdin_buf += data
        e.stdin_eof = req.eof
        self._pump_stdin(e)

    def _pump_stdin(self, e: Entry) -> None:
        try:
            while e.stdin_buf:
                e.stdin_buf = e.stdin_buf[os.write(e.stdin_w, e.stdin_buf) :]
        except BlockingIOError:
            pass
        except BrokenPipeError:
            log.info(
                "container %s: stdin closed by the container; %d bytes dropped",
                e.id,
                len(e.stdin_buf),
            )
            e.stdin_buf, e.stdin_eof = b"", True
        if e.stdin_buf and not e.stdin_polled:
            self.sel.register(e.stdin_w, selectors.EVENT_WRITE, lambda _m: self._pump_stdin(e))
            e.stdin_polled = True
        elif not e.stdin_buf and e.stdin_polled:
            self.sel.unregister(e.stdin_w)
            e.stdin_polled = False
        if e.stdin_eof and not e.stdin_buf:
            self._close_stdin(e)

    def _close_stdin(self, e: Entry) -> None:
        if e.stdin_polled:
            self.sel.unregister(e.stdin_w)
            e.stdin_polled = False
        if e.stdin_w >= 0:
            os.close(e.stdin_w)
            e.stdin_w = -1

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
