"""The container's init: what runs in the cloned child, from clone to execve.

Sequence (the parent's half is in ``create.py``):
  1. (new user namespace only: wait for ``go``, the parent has written our id maps; become
     the namespace's root)
  2. join the namespaces given by path; hostname and domainname
  3. the root filesystem up to pivot_root; before the first cgroup mount take ``go`` and join
     our cgroups ourselves (v1 through ``tasks``: no global lock), then make or join the
     cgroup namespace; tell the parent ``prestart`` so it runs the prestart/createRuntime
     hooks; run the createContainer hooks; pivot_root
  4. terminal, sysctls, masks, read-only paths, oom score, keyring, rlimits, working
     directory, the executable looked up (so a missing one fails create, not start),
     capabilities, identity, seccomp
  5. tell the parent ``created``; block opening the exec fifo until ``start`` opens it (not
     for ``run``, which starts at once)
  6. startContainer hooks; execve.
Rules: every failure before ``created`` travels to the parent as data over the channel and the
child exits 1; after it, there is no one to tell but the container's stderr.
"""

from __future__ import annotations

import os
import sys

from berth.errors import BerthError
from berth.runtime import capabilities, hooks, loopback, process, rootfs, signals
from berth.runtime import syscalls as s
from berth.runtime.cgroups import Cgroup, CgroupLayout
from berth.runtime.channel import Channel
from berth.spec.config import Process, Spec
from berth.spec.state import State, Status
from berth.spec.value import value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from berth.runtime.seccomp import Filter, Program


@value(frozen=False)
class InitContext:
    container_id: str
    spec: Spec
    process: Process
    bundle: str
    rootfs: str
    channel: Channel
    fifo_path: str  # "" when started at once (``run``): no waiting for ``start``
    layout: CgroupLayout
    cgroup: Cgroup
    namespaces: set[str]
    join_fds: dict[str, int]  # namespace type -> fd of the namespace to join (pid excluded)
    console_fd: int | None
    seccomp: Filter | Program | None
    no_pivot: bool
    no_new_keyring: bool
    preserve_fds: int
    stdio: tuple[int, int, int] | None = None  # dup2'd onto 0, 1, 2 first thing
    join_cgroups: bool = True  # join our v1 cgroups ourselves (not in a new user namespace)
    born_in_v2: bool = False  # cloned straight into the container's cgroup v2 directory
    fifo_fd: int = -1  # O_PATH fd of the exec fifo, opened before pivot_root
    fifo_write_fd: int = -1  # its writing end after start, open until execve
    executable: str = ""  # resolved before ``created``, so a missing program fails create


def join_container_keyring(sys_: s.Syscalls, container_id: str, in_user_ns: bool) -> None:
    """The container's own session keyring, named as runc names it (``_ses.<id>``), so no
    process of it inherits its caller's keys; searchable by the container's uid (by any, in a
    user namespace) so that an exec'd process joins the same one by name."""
    sys_.join_session_keyring(f"_ses.{container_id}", 0x8 if in_user_ns else 0x80000)


JOIN_ORDER = ("user", "ipc", "uts", "network", "cgroup", "time", "mount")


def join_namespaces(sys_: s.Syscalls, join_fds: dict[str, int]) -> None:
    for ns_type in JOIN_ORDER:
        fd = join_fds.get(ns_type)
        if fd is not None:
            try:
                sys_.setns(fd, s.NAMESPACE_FLAGS[ns_type])
            except OSError as exc:
                raise BerthError(
                    f"linux.namespaces: joining the {ns_type} namespace: {exc.strerror}"
                ) from None
            os.close(fd)


def seccomp_late(proc: Process) -> bool:
    """Load the filter just before execve when we may (NNP set, or still CAP_SYS_ADMIN)."""
    caps = proc.capabilities
    return proc.no_new_privileges or caps is None or "CAP_SYS_ADMIN" in caps.effective


def become_process(sys_: s.Syscalls, proc: Process, seccomp: Filter | Program | None) -> str:
    """rlimits, cwd, capabilities, identity, NNP, early seccomp; returns the executable."""
    process.set_rlimits(proc.rlimits)
    try:
        os.chdir(proc.cwd)
    except OSError as exc:
        raise BerthError(f"process.cwd: {proc.cwd}: {exc.strerror}") from None
    executable = process.lookup_executable(proc.args[0], proc.env, proc.cwd)
    capabilities.drop_bounding(proc.capabilities, sys_)
    if seccomp is not None and not seccomp_late(proc):
        seccomp.load()
    capabilities.keep_across_setuid(sys_)
    try:
        process.switch_user(proc.user)
    except OSError as exc:
        raise BerthError(
            f"process.user: uid {proc.user.uid} gid {proc.user.gid}: {exc.strerror}"
        ) from None
    capabilities.apply(proc.capabilities, sys_)
    if proc.user.umask is not None:
        os.umask(proc.user.umask)
    if proc.no_new_privileges:
        sys_.prctl(s.PR_SET_NO_NEW_PRIVS, 1)
    return executable


def close_extra_fds(preserve_fds: int, keep: int = -1) -> None:
    """Close inherited fds above the preserved ones, but ``keep`` (closed by execve itself)."""
    if keep >= 3 + preserve_fds:
        os.closerange(3 + preserve_fds, keep)
        os.closerange(keep + 1, 1 << 16)
    else:
        os.closerange(3 + preserve_fds, 1 << 16)


def exec_process(executable: str, proc: Process) -> None:
    env = dict(entry.split("=", 1) for entry in proc.env)
    if not env.get("HOME"):  # runc's: the user's home from the container's /etc/passwd
        env["HOME"] = process.home_of(proc.user.uid)
    for signum in signals.PYTHON_IGNORES:  # the program starts with default dispositions
        signals.set_handler(signum, signals.SIG_DFL)
    os.execve(executable, list(proc.args), env)


def _state(ctx: InitContext, pid: int, status: str) -> State:
    return State(
        ctx.container_id, status, pid, ctx.bundle, ctx.rootfs, annotations=ctx.spec.annotations
    )


def run(ctx: InitContext, sys_: s.Syscalls = s.LINUX) -> None:
    """The child's whole life; never returns."""
    try:
        _setup(ctx, sys_)
    except BaseException as exc:
        try:
            ctx.channel.send_error(exc)
        finally:
            os._exit(1)
    try:
        _wait_for_start(ctx)
        # as runc: in the container's namespaces the state shows its own pid, and "created"
        hooks.run_hooks(ctx.spec.hooks, "startContainer", _state(ctx, os.getpid(), Status.CREATED))
        if ctx.seccomp is not None and seccomp_late(ctx.process):
            ctx.seccomp.load()
        close_extra_fds(ctx.preserve_fds, keep=ctx.fifo_write_fd)
        exec_process(ctx.executable, ctx.process)
    except BaseException as exc:
        sys.stderr.write(f"berth-runtime: container {ctx.container_id}: {exc}\n")
        sys.stderr.flush()
        os._exit(127 if isinstance(exc, OSError) else 1)


class _Go:
    """The parent's ``go`` (it has written our id maps), then into our cgroups.

    Done as late as possible — before the first cgroup mount, or after the other mounts — so
    that the root filesystem is built meanwhile; then the cgroup namespace is made or joined
    (its root is the cgroup we are in then).
    """

    def __init__(self, ctx: InitContext, sys_: s.Syscalls) -> None:
        self.ctx = ctx
        self.sys = sys_
        self.done = False

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            self.ctx.channel.receive("go", peer="runtime")
            if self.ctx.join_cgroups:
                self.ctx.cgroup.join_self(skip_v2=self.ctx.born_in_v2)
            cgroup_fd = self.ctx.join_fds.pop("cgroup", None)
            if cgroup_fd is not None:
                join_namespaces(self.sys, {"cgroup": cgroup_fd})
            elif "cgroup" in self.ctx.namespaces:
                self.sys.unshare(s.CLONE_NEWCGROUP)


def _setup(ctx: InitContext, sys_: s.Syscalls) -> None:
    sys_.prctl(s.PR_SET_PDEATHSIG, signals.SIGKILL)
    if ctx.stdio is not None:
        for target, fd in enumerate(ctx.stdio):
            if fd != target:
                os.dup2(fd, target)  # dup2'd copies are inheritable: they survive execve
    go = _Go(ctx, sys_)
    if "user" in ctx.namespaces:
        go()  # in a new user namespace nothing works before the id maps are written
        # become the namespace's root, so what we create is owned by a mapped id
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    join_namespaces(sys_, {k: fd for k, fd in ctx.join_fds.items() if k != "cgroup"})
    if loopback.wanted(ctx.spec.annotations, ctx.namespaces, set(ctx.join_fds)):
        loopback.bring_up()
    if ctx.spec.hostname:
        sys_.sethostname(ctx.spec.hostname)
    if ctx.spec.domainname:
        sys_.setdomainname(ctx.spec.domainname)
    rootfs.prepare(
        sys_, ctx.spec, ctx.rootfs, ctx.layout, ctx.cgroup, ctx.namespaces, before_cgroups=go
    )
    go()
    if ctx.fifo_path:
        ctx.fifo_fd = os.open(ctx.fifo_path, os.O_PATH | os.O_CLOEXEC)
    ctx.channel.send("prestart")
    ctx.channel.receive("hooks-done", peer="runtime")
    hooks.run_hooks(ctx.spec.hooks, "createContainer", _state(ctx, os.getpid(), Status.CREATING))
    if ctx.console_fd is not None:
        from berth.runtime import console  # now: after pivot_root the host's modules are gone
    if ctx.spec.hooks["startContainer"]:
        import subprocess  # noqa: F401 - the same, for the hooks run after pivot_root
    rootfs.pivot(sys_, ctx.rootfs, ctx.no_pivot)
    if ctx.console_fd is not None:
        console.setup_terminal(
            ctx.console_fd, ctx.process.console_height, ctx.process.console_width
        )
    rootfs.write_sysctls(ctx.spec.linux.sysctl)  # before /proc/sys turns read-only
    rootfs.finish(sys_, ctx.spec)
    process.set_oom_score_adj(ctx.process.oom_score_adj)
    if not ctx.no_new_keyring:
        join_container_keyring(sys_, ctx.container_id, "user" in ctx.namespaces)
    ctx.executable = become_process(sys_, ctx.process, ctx.seccomp)
    # a uid change made us non-dumpable, which closes /proc/self/fd to us (the exec fifo is
    # reopened through it); execve sets dumpability again from the program it runs
    sys_.prctl(s.PR_SET_DUMPABLE, 1)
    sys_.prctl(s.PR_SET_PDEATHSIG, 0)
    ctx.channel.send("created")
    if ctx.fifo_path:
        ctx.channel.close()
    else:
        # started at once (run): our end stays open until execve closes it (close-on-exec),
        # so the runtime knows when the user's program has started (poststart comes after)
        ctx.channel.close_reading()


def _wait_for_start(ctx: InitContext) -> None:
    if not ctx.fifo_path:
        return
    # kept open (close-on-exec): ``start`` waits for its end of file, i.e. our execve
    ctx.fifo_write_fd = os.open(f"/proc/self/fd/{ctx.fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(ctx.fifo_write_fd, b"0")
    os.close(ctx.fifo_fd)
