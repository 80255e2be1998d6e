"""``create``: the runtime's half of making a container (the child's half is ``init.py``).

Everything that can be checked is checked before anything is made (config, rootfs, capability
names, sysctls, namespace paths, seccomp profile). Then: reserve the id, cgroup, exec fifo,
clone the init into its new namespaces, put it in the cgroup, write its id maps, let it go;
run prestart/createRuntime hooks when it reports its mounts ready; wait for ``created``; write
the record. Rule: any failure on the way kills the child and removes the cgroup, the fifo and
the container's directory, so a failed create leaves nothing behind.
"""

from __future__ import annotations

import errno
import os

from berth.errors import BerthError, InvalidArgument, NotFound
from berth.runtime import capabilities, cgroups, log, signals, store
from berth.runtime import syscalls as s
from berth.runtime.channel import Channel
from berth.spec import jsonio
from berth.spec.config import DeviceRule, IDMapping, Resources, Spec
from berth.spec.state import State, Status
from berth.spec.value import replace, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


# Always allowed by the devices cgroup, whatever the config says (as runc does): mknod of any
# node, and the default devices and ptys every container needs.
DEFAULT_DEVICE_RULES = (
    DeviceRule(True, "c", None, None, "m"),
    DeviceRule(True, "b", None, None, "m"),
    DeviceRule(True, "c", 1, 3, "rwm"),
    DeviceRule(True, "c", 1, 5, "rwm"),
    DeviceRule(True, "c", 1, 7, "rwm"),
    DeviceRule(True, "c", 1, 8, "rwm"),
    DeviceRule(True, "c", 1, 9, "rwm"),
    DeviceRule(True, "c", 5, 0, "rwm"),
    DeviceRule(True, "c", 5, 1, "rwm"),
    DeviceRule(True, "c", 5, 2, "rwm"),
    DeviceRule(True, "c", 136, None, "rwm"),
)


@value
class CreateOptions:
    bundle: str = "."
    pid_file: str | None = None
    console_socket: str | None = None
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0
    # the container's stdin, stdout, stderr when not ours (a supervisor's pipes or files)
    stdio: tuple[int, int, int] | None = None


@value
class Bundle:
    path: str
    raw: dict[str, Any]
    spec: Spec
    rootfs: str


def load_bundle(bundle: str) -> Bundle:
    path = os.path.abspath(bundle)
    config_path = os.path.join(path, "config.json")
    try:
        with open(config_path, "rb") as f:
            raw = jsonio.loads(f.read())
    except FileNotFoundError:
        raise NotFound(f"bundle {path}: config.json does not exist") from None
    except ValueError as exc:
        raise InvalidArgument(f"{config_path}: not valid JSON: {exc}") from None
    spec = Spec.from_json(raw)
    if spec.root is None:
        raise InvalidArgument("root: required: the bundle must name its root filesystem")
    root = spec.root.path if os.path.isabs(spec.root.path) else os.path.join(path, spec.root.path)
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise InvalidArgument(f"root.path: {root} does not exist or is not a directory")
    return Bundle(path, raw, spec, root)


def validate(spec: Spec) -> set[str]:
    """Checks that need no kernel state; returns the namespace types the container has."""
    if spec.process is None:
        raise InvalidArgument("process: required to create a container")
    capabilities.validate(spec.process.capabilities)
    namespaces = {ns.type for ns in spec.linux.namespaces}
    if "mount" not in namespaces:
        raise InvalidArgument("linux.namespaces: a mount namespace is required")
    if (spec.hostname or spec.domainname) and "uts" not in namespaces:
        raise InvalidArgument("hostname: setting it needs a new uts namespace")
    user = spec.linux.namespace("user")
    if (
        user is not None
        and not user.path
        and not (spec.linux.uid_mappings and spec.linux.gid_mappings)
    ):
        raise InvalidArgument("linux.uidMappings: a new user namespace needs uid and gid mappings")
    if spec.linux.sysctl:
        from berth.runtime.rootfs import check_sysctls

        check_sysctls(spec.linux.sysctl, namespaces)
    return namespaces


def open_namespace_paths(spec: Spec) -> dict[str, int]:
    fds: dict[str, int] = {}
    try:
        for i, ns in enumerate(spec.linux.namespaces):
            if not ns.path:
                continue
            try:
                fds[ns.type] = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise InvalidArgument(
                    f"linux.namespaces[{i}].path: {ns.path}: {exc.strerror}"
                ) from None
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def _resources(spec: Spec) -> Resources:
    res = spec.linux.resources or Resources()
    extra = tuple(DeviceRule(True, d.type, d.major, d.minor, "rwm") for d in spec.linux.devices)
    return replace(res, devices=(*res.devices, *DEFAULT_DEVICE_RULES, *extra))


def _write_id_maps(pid: int, spec: Spec) -> None:
    for name, mappings in (
        ("uid_map", spec.linux.uid_mappings),
        ("gid_map", spec.linux.gid_mappings),
    ):
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)
        try:
            with open(f"/proc/{pid}/{name}", "w") as f:
                f.write(text)
        except OSError as exc:
            field = "uidMappings" if name == "uid_map" else "gidMappings"
            raise InvalidArgument(f"linux.{field}: {text.strip()!r}: {exc.strerror}") from None


def _make_fifo(fifo: str, spec: Spec) -> None:
    os.mkfifo(fifo, 0o622)
    os.chmod(fifo, 0o622)  # whatever the umask: the init may have become any user
    root_uid = _host_id(spec.linux.uid_mappings, 0)
    root_gid = _host_id(spec.linux.gid_mappings, 0)
    if root_uid or root_gid:
        os.chown(fifo, root_uid, root_gid)


def _host_id(mappings: tuple[IDMapping, ...], container_id: int) -> int:
    for m in mappings:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return container_id


@value(frozen=False)
class Created:
    record: store.Record
    pid: int
    cgroup: cgroups.Cgroup


def create(
    st: store.Store,
    container_id: str,
    opts: CreateOptions,
    *,
    foreground: bool = False,
    bundle: Bundle | None = None,
    start_at_once: bool = False,
    sys_: s.Syscalls = s.LINUX,
) -> Created:
    """Create the container; its init waits on the exec fifo. With ``foreground`` the init
    stays this process's child (``run``), and a terminal without a console socket is ours.
    With ``start_at_once`` (``run``) there is no fifo: the init execs as soon as it is ready."""
    store.check_id(container_id)
    if bundle is None:
        bundle = load_bundle(opts.bundle)
    spec = bundle.spec
    namespaces = validate(spec)
    process = spec.process
    assert process is not None  # validate() said so
    if process.terminal and not opts.console_socket and not foreground:
        raise InvalidArgument("process.terminal: true needs --console-socket (or run without -d)")
    seccomp_filter = None
    if spec.linux.seccomp is not None:
        from berth.runtime import seccomp

        seccomp_filter = seccomp.prepare(spec.linux.seccomp)
    join_fds = open_namespace_paths(spec)
    st.reserve(container_id)
    cgroup: cgroups.Cgroup | None = None
    pid = 0
    console_fd: int | None = None
    parent = child = None
    try:
        layout = cgroups.detect()
        cgroup = cgroups.Cgroup.plan(layout, spec.linux.cgroups_path, container_id)
        cgroup.create()
        cgroup.apply(_resources(spec))
        fifo = "" if start_at_once else st.fifo(container_id)
        if fifo:
            _make_fifo(fifo, spec)
        if process.terminal and opts.console_socket:
            from berth.runtime import console

            console_fd = console.connect(opts.console_socket)
        parent, child = Channel.pair()
        # joining a pid namespace moves only our future children: the init, and (until we go
        # back) any hook we run, so we go back right after the clone
        own_pid_ns = -1
        pid_ns_fd = join_fds.pop("pid", None)
        if pid_ns_fd is not None:
            own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            sys_.setns(pid_ns_fd, s.CLONE_NEWPID)
            os.close(pid_ns_fd)
        flags = 0
        for ns in spec.linux.namespaces:
            if not ns.path and ns.type != "cgroup":
                flags |= s.NAMESPACE_FLAGS[ns.type]
        new_userns = "user" in namespaces and "user" not in join_fds

        def start_init(born_in_v2: bool) -> None:
            """In the cloned child: the init's modules are imported here, off our own path."""
            from berth.runtime import init

            init.run(
                init.InitContext(
                    container_id=container_id,
                    spec=spec,
                    process=process,
                    bundle=bundle.path,
                    rootfs=bundle.rootfs,
                    channel=child,
                    fifo_path=fifo,
                    layout=layout,
                    cgroup=cgroup,
                    namespaces=namespaces,
                    join_fds=join_fds,
                    console_fd=console_fd,
                    seccomp=seccomp_filter,
                    no_pivot=opts.no_pivot,
                    no_new_keyring=opts.no_new_keyring,
                    preserve_fds=opts.preserve_fds,
                    stdio=opts.stdio,
                    # The init joins its v1 cgroups itself (cheap for the caller's own thread),
                    # except in a new user namespace, where it may not write the host's cgroup
                    # files: there we do it.
                    join_cgroups=not new_userns,
                    born_in_v2=born_in_v2,
                ),
                sys_,
            )

        pid = _clone(sys_, flags, cgroup, start_init, parent)
        if own_pid_ns >= 0:
            sys_.setns(own_pid_ns, s.CLONE_NEWPID)
            os.close(own_pid_ns)
        child.close()
        for fd in join_fds.values():
            os.close(fd)
        join_fds = {}
        if console_fd is not None:
            os.close(console_fd)
            console_fd = None
        if new_userns:
            cgroup.add_process(pid)
            _write_id_maps(pid, spec)
        parent.send("go")
        # written while the init builds its root filesystem; removed again if create fails
        record = _write_record(st, container_id, bundle, pid, cgroup, opts.no_new_keyring)
        parent.receive("prestart")
        creating = State(
            container_id,
            Status.CREATING,
            pid,
            bundle.path,
            bundle.rootfs,
            annotations=spec.annotations,
        )
        if spec.hooks["prestart"] or spec.hooks["createRuntime"]:
            from berth.runtime import hooks

            hooks.run_hooks(spec.hooks, "prestart", creating)
            hooks.run_hooks(spec.hooks, "createRuntime", creating)
        parent.send("hooks-done")
        parent.receive("created")
        if start_at_once:
            parent.wait_closed()  # the init has run its startContainer hooks and exec'd
        if opts.pid_file:
            store.write_atomically(os.path.abspath(opts.pid_file), str(pid).encode(), 0o644)
        return Created(record, pid, cgroup)
    except BaseException:
        _undo(st, container_id, pid, cgroup)
        if pid > 0:  # the container existed: its lifecycle ends with delete's poststop hooks
            stopped = State(
                container_id,
                Status.STOPPED,
                0,
                bundle.path,
                bundle.rootfs,
                annotations=spec.annotations,
            )
            from berth.runtime import hooks

            hooks.run_hooks(spec.hooks, "poststop", stopped)
        raise
    finally:
        for fd in join_fds.values():
            os.close(fd)
        if console_fd is not None:
            os.close(console_fd)
        if parent is not None:
            parent.close()
        if seccomp_filter is not None:  # the init has its own copy; a supervisor lives on
            seccomp_filter.release()


def _write_record(
    st: store.Store,
    container_id: str,
    bundle: Bundle,
    pid: int,
    cgroup: cgroups.Cgroup,
    no_new_keyring: bool,
) -> store.Record:
    start_time = store.process_start_time(pid)
    if start_time is None:
        raise BerthError(f"container {container_id}: init exited during create")
    record = store.Record(
        id=container_id,
        bundle=bundle.path,
        rootfs=bundle.rootfs,
        pid=pid,
        pid_start=start_time,
        created=store.now(),
        config=bundle.raw,
        cgroup=cgroup.to_json(),
        annotations=dict(bundle.spec.annotations),
        no_new_keyring=no_new_keyring,
    )
    st.save(record)
    return record


def _clone(
    sys_: s.Syscalls,
    flags: int,
    cgroup: cgroups.Cgroup,
    start_init: Callable[[bool], None],
    parent: Channel,
) -> int:
    """Clone the init into its namespaces — and into its cgroup v2 directory, if the host
    has one and the kernel has clone3 — and run ``start_init(born in the v2 cgroup)`` there."""
    unified = cgroup.unified_path()
    cgroup_fd = os.open(unified, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if unified else None
    try:
        try:
            pid = sys_.clone3(flags, cgroup_fd)
            born_in_v2 = cgroup_fd is not None
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.E2BIG, errno.EINVAL):
                raise
            pid, born_in_v2 = sys_.clone(flags), False  # kernel before 5.7
        if pid == 0:
            parent.close()
            start_init(born_in_v2)  # never returns
        return pid
    finally:
        if cgroup_fd is not None:
            os.close(cgroup_fd)


def _undo(st: store.Store, container_id: str, pid: int, cgroup: cgroups.Cgroup | None) -> None:
    """Remove whatever a failed create made; the original error is the one reported."""
    if pid > 0:
        try:
            os.kill(pid, signals.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    if cgroup is not None:
        try:
            cgroup.kill_all()
            cgroup.destroy()
        except (OSError, BerthError) as exc:
            log.warning(
                f"container {container_id}: removing its cgroup after a failed create: {exc}"
            )
    st.remove(container_id)
