"""``exec``: run another process inside a running (or created) container.

The runtime joins the container's pid namespace itself (that only moves its future children),
forks (and goes back to its own pid namespace at once), and the child joins the other
namespaces (user first, mount last), moves into the container's cgroup, takes the process's
identity and capabilities, loads the container's seccomp profile and execs. Rule: a failure
in the child before execve comes back over a close-on-exec channel as data; a silent close of
that channel means execve succeeded.
"""

from __future__ import annotations

import os

from berth.errors import BerthError, InvalidArgument, NotFound
from berth.runtime import init, process, store
from berth.runtime import syscalls as s
from berth.runtime.channel import Channel
from berth.runtime.container import Loaded, load
from berth.spec import fields, jsonio
from berth.spec.config import Capabilities, Process, Spec, User
from berth.spec.state import check_operation
from berth.spec.value import replace, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from berth.runtime.cgroups import Cgroup
    from berth.runtime.seccomp import Filter, Program


@value
class ExecOptions:
    process_file: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str | None = None
    user: str | None = None
    additional_gids: tuple[int, ...] = ()
    tty: bool = False
    caps: tuple[str, ...] = ()
    no_new_privs: bool = False
    detach: bool = False
    pid_file: str | None = None
    console_socket: str | None = None
    preserve_fds: int = 0


def build_process(base: Process | None, opts: ExecOptions) -> Process:
    """The process to exec: process.json as given, or the container's process overridden by the
    command line as runc does (args replaced, env appended, cwd/user/tty/caps set)."""
    if opts.process_file:
        try:
            with open(opts.process_file, "rb") as f:
                raw = jsonio.loads(f.read())
        except FileNotFoundError:
            raise NotFound(f"--process: {opts.process_file} does not exist") from None
        except ValueError as exc:
            raise InvalidArgument(
                f"--process: {opts.process_file}: not valid JSON: {exc}"
            ) from None
        return Process.from_json(fields.obj(raw, "process"), "process")
    if not opts.args:
        raise InvalidArgument("exec: give a command to run or --process FILE")
    proc = base or Process(args=opts.args, cwd="/")
    user = proc.user
    if opts.user:
        uid, _, gid = opts.user.partition(":")
        try:
            user = User(int(uid), int(gid) if gid else 0, user.umask, user.additional_gids)
        except ValueError:
            raise InvalidArgument(f"--user: {opts.user!r} must be UID[:GID]") from None
    if opts.additional_gids:
        user = replace(user, additional_gids=opts.additional_gids)
    caps = proc.capabilities
    if opts.caps and caps is not None:
        # as runc since CVE-2022-29162: never the inheritable set, and the ambient one only
        # where the config has inheritable capabilities (the kernel needs both to raise one)
        extended = {"bounding", "effective", "permitted"}
        if caps.inheritable:
            extended.add("ambient")
        caps = Capabilities(
            *(
                tuple(dict.fromkeys((*getattr(caps, name), *opts.caps)))
                if name in extended
                else getattr(caps, name)
                for name in Capabilities.SETS
            )
        )
    return replace(
        proc,
        args=opts.args,
        env=(*proc.env, *opts.env),
        cwd=opts.cwd or proc.cwd,
        user=user,
        terminal=opts.tty,
        capabilities=caps,
        no_new_privileges=proc.no_new_privileges or opts.no_new_privs,
    )


def exec_in(
    st: store.Store, container_id: str, opts: ExecOptions, sys_: s.Syscalls = s.LINUX
) -> int:
    """Returns the exit status (foreground) or 0 (detached)."""
    loaded = load(st, container_id)
    check_operation(container_id, "exec", loaded.status)
    spec = Spec.from_json(loaded.record.config)
    proc = build_process(spec.process, opts)
    if proc.terminal and not opts.console_socket and opts.detach:
        raise InvalidArgument("--tty with --detach needs --console-socket")
    listen = None
    console_socket = opts.console_socket
    if proc.terminal and not console_socket:
        from berth.runtime import console

        listen = console.listen()
        console_socket = listen[0]
    try:
        child_pid = spawn(
            loaded, proc, console_socket=console_socket, preserve_fds=opts.preserve_fds, sys_=sys_
        )
    except BaseException:
        if listen is not None:
            from berth.runtime import console

            console.discard(*listen)
        raise
    if opts.pid_file:
        store.write_atomically(os.path.abspath(opts.pid_file), str(child_pid).encode(), 0o644)
    if opts.detach:
        return 0
    if listen is not None:
        from berth.runtime import console

        console.proxy(console.receive_master(*listen))
    return process.wait_exit(child_pid)


def spawn(
    loaded: Loaded,
    proc: Process,
    *,
    stdio: tuple[int, int, int] | None = None,
    console_socket: str | None = None,
    preserve_fds: int = 0,
    sys_: s.Syscalls = s.LINUX,
) -> int:
    """Start ``proc`` in the container ``loaded`` as our child and return its pid once it
    has exec'd (a failure before execve is raised here). ``stdio`` is dup'd onto its 0, 1, 2
    (else it inherits ours); with ``proc.terminal`` its pty master goes to ``console_socket``.
    We join the container's pid namespace only for the fork and go back to ours right after,
    so a long-lived caller (the supervisor) keeps making its later children in its own."""
    spec = Spec.from_json(loaded.record.config)
    from berth.runtime import capabilities

    capabilities.validate(proc.capabilities)
    if proc.terminal and not console_socket:
        raise InvalidArgument("exec: a terminal needs a console socket")
    seccomp_filter = None
    if spec.linux.seccomp is not None:
        from berth.runtime import seccomp

        seccomp_filter = seccomp.prepare(spec.linux.seccomp)
    pid = loaded.record.pid
    ns_fds: dict[str, int] = {}
    try:
        for ns in spec.linux.namespaces:
            name = s.NAMESPACE_PROC_NAMES[ns.type]
            ns_fds[ns.type] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        for fd in ns_fds.values():
            os.close(fd)
        raise BerthError(
            f"container {loaded.record.id}: cannot open its namespaces: {exc}"
        ) from None
    console_fd = None
    own_pid_ns = -1
    try:
        if proc.terminal and console_socket:
            from berth.runtime import console

            console_fd = console.connect(console_socket)
        pid_fd = ns_fds.pop("pid", None)
        if pid_fd is not None:
            own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            sys_.setns(pid_fd, s.CLONE_NEWPID)
            os.close(pid_fd)
        parent, child = Channel.pair()
        child_pid = os.fork()
        if child_pid == 0:
            parent.close()
            _child(
                sys_,
                loaded.cgroup,
                ns_fds,
                proc,
                seccomp_filter,
                console_fd,
                child,
                preserve_fds,
                stdio,
                keyring=None if loaded.record.no_new_keyring else loaded.record.id,
                in_user_ns=any(ns.type == "user" for ns in spec.linux.namespaces),
            )
        if own_pid_ns >= 0:
            sys_.setns(own_pid_ns, s.CLONE_NEWPID)
        child.close()
    finally:
        if own_pid_ns >= 0:
            os.close(own_pid_ns)
        for fd in ns_fds.values():
            os.close(fd)
        if console_fd is not None:
            os.close(console_fd)
        if seccomp_filter is not None:  # the child has its own copy; a supervisor lives on
            seccomp_filter.release()
    try:
        parent.receive("never", peer="exec")
    except BerthError as exc:
        if "exited before sending" not in str(exc):
            os.waitpid(child_pid, 0)
            raise
    finally:
        parent.close()
    return child_pid


def _child(
    sys_: s.Syscalls,
    cgroup: Cgroup,
    ns_fds: dict[str, int],
    proc: Process,
    seccomp_filter: Filter | Program | None,
    console_fd: int | None,
    channel: Channel,
    preserve_fds: int,
    stdio: tuple[int, int, int] | None = None,
    *,
    keyring: str | None = None,
    in_user_ns: bool = False,
) -> None:
    try:
        if stdio is not None:
            for target, fd in enumerate(stdio):
                if fd != target:
                    os.dup2(fd, target)  # dup2'd copies are inheritable: they survive execve
        cgroup.add_process(0)
        init.join_namespaces(sys_, ns_fds)
        if keyring is not None:  # the container's own, as runc's exec joins it
            init.join_container_keyring(sys_, keyring, in_user_ns)
        if console_fd is not None:
            from berth.runtime import console

            console.setup_terminal(console_fd, proc.console_height, proc.console_width)
        executable = init.become_process(sys_, proc, seccomp_filter)
        if seccomp_filter is not None and init.seccomp_late(proc):
            seccomp_filter.load()
        os.closerange(3 + preserve_fds, channel.write_fd)
        os.closerange(channel.write_fd + 1, 1 << 16)
        init.exec_process(executable, proc)
    except BaseException as exc:
        try:
            channel.send_error(exc)
        finally:
            os._exit(1)
