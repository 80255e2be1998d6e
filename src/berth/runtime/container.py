"""The runtime's verbs on an existing container: start, state, kill, delete, pause, resume,
ps, stats, and ``run`` (create + start + wait + delete).

Rules: every verb loads the record, derives the live status from the kernel and asks the
transition table (``berth.spec.state.check_operation``) whether it may proceed; nothing here
trusts a status written earlier. ``delete`` removes the cgroup and the record and then runs the
poststop hooks; ``delete --force`` kills first and succeeds on a container that is already gone.
"""

from __future__ import annotations

import os
import time

from berth.errors import BerthError, InvalidArgument, NotFound
from berth.runtime import signals, store
from berth.spec.state import State, Status, check_operation
from berth.spec.value import replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from berth.runtime.cgroups import Cgroup, CgroupStats
    from berth.runtime.create import CreateOptions

START_TIMEOUT = 10.0


class Loaded:
    """A container's record with its live status; its cgroup is opened only when asked for
    (``start``, ``state`` and ``list`` do without: fewer imports on their path)."""

    def __init__(self, record: store.Record, status: str, cgroup: Cgroup | None = None) -> None:
        self.record = record
        self.status = status
        self._cgroup = cgroup

    @property
    def cgroup(self) -> Cgroup:
        if self._cgroup is None:
            from berth.runtime.cgroups import Cgroup

            self._cgroup = Cgroup.from_json(self.record.cgroup)
        return self._cgroup

    def state(self) -> State:
        return state_of(self.record, self.status)

    def run_hooks(self, kind: str, status: str) -> None:
        run_hooks(self.record, kind, status)


def state_of(record: store.Record, status: str) -> State:
    return State(
        id=record.id,
        status=status,
        pid=record.pid if status != Status.STOPPED else 0,
        bundle=record.bundle,
        rootfs=record.rootfs,
        created=record.created,
        owner=record.owner,
        annotations=record.annotations,
    )


def run_hooks(record: store.Record, kind: str, status: str) -> None:
    """Run the config's hooks of ``kind``; the config is parsed only when it has some."""
    if record.config.get("hooks", {}).get(kind):
        from berth.runtime import hooks
        from berth.spec.config import Spec

        hooks.run_hooks(Spec.from_json(record.config).hooks, kind, state_of(record, status))


def load(st: store.Store, container_id: str) -> Loaded:
    loaded = Loaded(st.load(container_id), "")
    created = os.path.exists(st.fifo(container_id))
    frozen = not created and loaded.record.init_alive() and loaded.cgroup.is_frozen()
    loaded.status = st.status(loaded.record, frozen)
    return loaded


def state(st: store.Store, container_id: str) -> State:
    return load(st, container_id).state()


def list_states(st: store.Store) -> list[State]:
    states = []
    for container_id in st.ids():
        try:
            states.append(load(st, container_id).state())
        except NotFound:
            continue  # deleted while we listed
    return states


def start(st: store.Store, container_id: str) -> None:
    loaded = load(st, container_id)
    check_operation(container_id, "start", loaded.status)
    _release(st, loaded)
    loaded.run_hooks("poststart", Status.RUNNING)


def _release(st: store.Store, loaded: Loaded) -> None:
    """Open the exec fifo: the init, blocked opening its other end, writes one byte, runs the
    startContainer hooks and execs, which closes its end (close-on-exec). We return at that
    end of file, so the poststart hooks run after the user's program has started."""
    import select

    fifo = st.fifo(loaded.record.id)
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    released = False
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                data = os.read(fd, 1)
            except BlockingIOError:
                data = None  # the init has the fifo open and is not done
            if data:
                released = True
                os.unlink(fifo)
            elif data == b"" and released:
                return  # the init has exec'd (or died: the status will say)
            elif not loaded.record.init_alive():
                raise BerthError(f"container {loaded.record.id}: init exited before start")
            if time.monotonic() > deadline:
                raise BerthError(f"container {loaded.record.id}: init did not answer start")
            select.select([fd], [], [], 0.005)
    finally:
        os.close(fd)


def parse_signal(text: str) -> int:
    number = signals.parse(text)
    if number is not None:
        return number
    raise InvalidArgument(f"signal {text!r} is not a valid signal name or number")


def kill(st: store.Store, container_id: str, sig: int, all_processes: bool = False) -> None:
    loaded = load(st, container_id)
    check_operation(container_id, "kill", loaded.status)
    if all_processes:
        for pid in loaded.cgroup.pids():
            _signal(pid, sig)
        if loaded.status == Status.PAUSED:
            loaded.cgroup.thaw()
            loaded.cgroup.freeze()
    else:
        _signal(loaded.record.pid, sig)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def delete(st: store.Store, container_id: str, force: bool = False) -> None:
    try:
        loaded = load(st, container_id)
    except NotFound:
        if force:
            st.remove(container_id)  # a create that died half-way leaves only its directory
            return
        raise
    check_operation(container_id, "delete --force" if force else "delete", loaded.status)
    _remove(st, loaded)


def _remove(st: store.Store, loaded: Loaded) -> None:
    """Kill what is left, remove the cgroup and the record, then the poststop hooks."""
    if loaded.status != Status.STOPPED:
        loaded.cgroup.kill_all()
        _signal(loaded.record.pid, signals.SIGKILL)
        _wait_gone(loaded.record)
    loaded.cgroup.kill_all()
    loaded.cgroup.destroy()
    st.remove(loaded.record.id)
    loaded.run_hooks("poststop", Status.STOPPED)


def _wait_gone(record: store.Record, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while record.init_alive():
        try:
            if os.waitpid(record.pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            pass
        if time.monotonic() > deadline:
            raise BerthError(f"container {record.id}: init {record.pid} survived SIGKILL")
        time.sleep(0.002)


def pause(st: store.Store, container_id: str) -> None:
    loaded = load(st, container_id)
    check_operation(container_id, "pause", loaded.status)
    loaded.cgroup.freeze()


def resume(st: store.Store, container_id: str) -> None:
    loaded = load(st, container_id)
    check_operation(container_id, "resume", loaded.status)
    loaded.cgroup.thaw()


def pids(st: store.Store, container_id: str) -> list[int]:
    loaded = load(st, container_id)
    check_operation(container_id, "ps", loaded.status)
    return loaded.cgroup.pids()


def stats(st: store.Store, container_id: str) -> CgroupStats:
    loaded = load(st, container_id)
    check_operation(container_id, "events", loaded.status)
    return loaded.cgroup.stats()


def run(st: store.Store, container_id: str, opts: CreateOptions, detach: bool) -> int:
    """create + start; in the foreground also wait, forward signals and delete. Returns the
    exit status as a shell reports it (128 + signal for a killed process)."""
    from berth.runtime.create import create, load_bundle

    bundle = load_bundle(opts.bundle)
    proc = bundle.spec.process
    # a foreground terminal with no console socket given is ours: we relay it to our stdio
    terminal_socket: tuple[str, int] | None = None
    if not detach and opts.console_socket is None and proc is not None and proc.terminal:
        from berth.runtime import console

        terminal_socket = console.listen()
        opts = replace(opts, console_socket=terminal_socket[0])
    try:
        created = create(
            st, container_id, opts, foreground=not detach, bundle=bundle, start_at_once=True
        )
    except BaseException:
        if terminal_socket is not None:
            console.discard(*terminal_socket)
        raise
    run_hooks(created.record, "poststart", Status.RUNNING)
    if detach:
        return 0
    forwarded = (
        signals.SIGINT,
        signals.SIGTERM,
        signals.SIGHUP,
        signals.SIGQUIT,
        signals.SIGUSR1,
        signals.SIGUSR2,
        signals.SIGWINCH,
    )

    def forward(signum: int, _frame: object) -> None:
        _signal(created.pid, signum)

    for sig in forwarded:
        signals.set_handler(sig, forward)
    try:
        if terminal_socket is not None:
            master = console.receive_master(*terminal_socket)
            console.proxy(master)
        from berth.runtime import process

        status = process.wait_exit(created.pid)
    except BaseException:
        for sig in forwarded:
            signals.set_handler(sig, signals.SIG_DFL)
        delete(st, container_id, force=True)
        raise
    for sig in forwarded:
        signals.set_handler(sig, signals.SIG_DFL)
    # the init is reaped: what we hold is the container's state, no need to read it back
    _remove(st, Loaded(created.record, Status.STOPPED, created.cgroup))
    return status
