"""Small runtime helpers: mount options, secure_join, sysctl checks, signal names, the
parent/init channel, executable lookup, and errors as data.

Rules: nothing here mounts, writes a sysctl or signals a process; symlink trees live in
tmp_path and the channel's two ends stay in this process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from berth import errors
from berth.errors import BerthError, InvalidArgument
from berth.runtime import mountopts, rootfs, signals
from berth.runtime import syscalls as s
from berth.runtime.channel import Channel
from berth.runtime.process import env_path, lookup_executable
from berth.spec.defaults import MOUNT_OPTIONS

# --------------------------------------------------------------------------- mountopts


def test_mount_option_flags() -> None:
    parsed = mountopts.parse(("nosuid", "noexec", "nodev", "ro"))
    assert parsed.flags == s.MS_NOSUID | s.MS_NOEXEC | s.MS_NODEV | s.MS_RDONLY
    assert parsed.propagation == ()
    assert parsed.data == ""
    assert not parsed.is_bind


@pytest.mark.parametrize(
    ("options", "flags"),
    [
        (("ro", "rw"), 0),
        (("rw", "ro"), s.MS_RDONLY),
        (("nosuid", "suid"), 0),
        (("noexec", "exec", "noexec"), s.MS_NOEXEC),
        (("nodev", "dev"), 0),
        (("sync", "async"), 0),
        (("noatime", "atime"), 0),
        (("relatime", "norelatime", "strictatime"), s.MS_STRICTATIME),
        (("nosymfollow", "symfollow"), 0),
        (("defaults",), 0),
        (("", "ro", ""), s.MS_RDONLY),
    ],
)
def test_later_options_clear_earlier_ones(options: tuple[str, ...], flags: int) -> None:
    parsed = mountopts.parse(options)
    assert parsed.flags == flags
    assert parsed.data == ""


def test_bind_and_rbind() -> None:
    assert mountopts.parse(("bind",)).is_bind
    assert mountopts.parse(("bind",)).flags & s.MS_REC == 0
    rbind = mountopts.parse(("rbind", "ro"))
    assert rbind.is_bind
    assert rbind.flags == s.MS_BIND | s.MS_REC | s.MS_RDONLY


def test_propagation_is_kept_apart_in_order() -> None:
    parsed = mountopts.parse(("rbind", "rprivate", "ro", "shared", "unbindable"))
    assert parsed.flags == s.MS_BIND | s.MS_REC | s.MS_RDONLY
    assert parsed.propagation == (s.MS_PRIVATE | s.MS_REC, s.MS_SHARED, s.MS_UNBINDABLE)
    assert parsed.flags & (s.MS_PRIVATE | s.MS_SHARED | s.MS_SLAVE | s.MS_UNBINDABLE) == 0


def test_filesystem_data_is_joined_untouched() -> None:
    parsed = mountopts.parse(("nosuid", "mode=755", "strictatime", "size=65536k", "uid=5"))
    assert parsed.flags == s.MS_NOSUID | s.MS_STRICTATIME
    assert parsed.data == "mode=755,size=65536k,uid=5"


def test_default_spec_mount_options_parse() -> None:
    parsed = mountopts.parse(("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"))
    assert parsed.flags == s.MS_NOSUID | s.MS_NOEXEC
    assert parsed.data == "newinstance,ptmxmode=0666,mode=0620"


def test_every_advertised_mount_option_is_understood() -> None:
    passed_as_data = [o for o in MOUNT_OPTIONS if mountopts.parse((o,)).data]
    assert passed_as_data == []
    assert "tmpcopyup" not in MOUNT_OPTIONS  # not supported, so not advertised


@pytest.mark.parametrize(
    ("option", "flags"),
    [
        ("acl", s.MS_POSIXACL),
        ("iversion", s.MS_I_VERSION),
        ("silent", s.MS_SILENT),
    ],
)
def test_flag_options_and_their_opposites(option: str, flags: int) -> None:
    parsed = mountopts.parse((option,))
    assert (parsed.flags, parsed.data) == (flags, "")
    assert (parsed.recursive_set, parsed.recursive_clear) == (0, 0)
    opposite = {"acl": "noacl", "iversion": "noiversion", "silent": "loud"}[option]
    assert mountopts.parse((option, opposite)).flags == 0
    assert mountopts.parse((opposite, option)).flags == flags


@pytest.mark.parametrize(
    ("option", "attr_set", "attr_clear"),
    [
        ("rro", s.MOUNT_ATTR_RDONLY, 0),
        ("rrw", 0, s.MOUNT_ATTR_RDONLY),
        ("rnosuid", s.MOUNT_ATTR_NOSUID, 0),
        ("rsuid", 0, s.MOUNT_ATTR_NOSUID),
        ("rnodev", s.MOUNT_ATTR_NODEV, 0),
        ("rdev", 0, s.MOUNT_ATTR_NODEV),
        ("rnoexec", s.MOUNT_ATTR_NOEXEC, 0),
        ("rexec", 0, s.MOUNT_ATTR_NOEXEC),
        ("rnodiratime", s.MOUNT_ATTR_NODIRATIME, 0),
        ("rdiratime", 0, s.MOUNT_ATTR_NODIRATIME),
        ("rnosymfollow", s.MOUNT_ATTR_NOSYMFOLLOW, 0),
        ("rsymfollow", 0, s.MOUNT_ATTR_NOSYMFOLLOW),
        ("rnoatime", s.MOUNT_ATTR_NOATIME, s.MOUNT_ATTR__ATIME),
        ("rstrictatime", s.MOUNT_ATTR_STRICTATIME, s.MOUNT_ATTR__ATIME),
        ("rrelatime", s.MOUNT_ATTR_RELATIME, s.MOUNT_ATTR__ATIME),
    ],
)
def test_recursive_options_become_mount_attributes(
    option: str, attr_set: int, attr_clear: int
) -> None:
    parsed = mountopts.parse(("rbind", option))
    assert (parsed.recursive_set, parsed.recursive_clear) == (attr_set, attr_clear)
    assert parsed.flags == s.MS_BIND | s.MS_REC  # not mount(2) flags, not filesystem data
    assert parsed.data == ""


def test_recursive_options_later_ones_win() -> None:
    parsed = mountopts.parse(("rro", "rnosuid", "rrw", "rnoatime", "rstrictatime"))
    assert parsed.recursive_set == s.MOUNT_ATTR_NOSUID | s.MOUNT_ATTR_STRICTATIME
    assert parsed.recursive_clear == s.MOUNT_ATTR_RDONLY | s.MOUNT_ATTR__ATIME
    parsed = mountopts.parse(("rrw", "rro"))
    assert (parsed.recursive_set, parsed.recursive_clear) == (s.MOUNT_ATTR_RDONLY, 0)
    assert mountopts.parse(("ro",)).recursive_set == 0  # plain ro stays a mount(2) flag


@pytest.mark.parametrize("option", sorted(mountopts.RECURSIVE))
def test_recursive_attributes_are_ones_mount_setattr_accepts(option: str) -> None:
    # mount_setattr(2): the atime bits are an enum, so MOUNT_ATTR__ATIME must be cleared whole
    # or not at all (else EINVAL), and an atime value may be set only when it is cleared whole
    parsed = mountopts.parse((option,))
    atime_cleared = parsed.recursive_clear & s.MOUNT_ATTR__ATIME
    assert atime_cleared in (0, s.MOUNT_ATTR__ATIME)
    if not atime_cleared:
        assert parsed.recursive_set & s.MOUNT_ATTR__ATIME == 0


# --------------------------------------------------------------------------- secure_join


@pytest.fixture
def fake_rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.symlink("/etc", root / "abs-etc")  # absolute: must stay inside the rootfs
    os.symlink("../../../../../../etc", root / "var" / "escape")  # relative, climbs out
    os.symlink("usr/lib", root / "lib")  # relative, inside
    os.symlink("../etc/passwd", root / "var" / "pw")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    os.symlink("self", root / "self")
    os.symlink("/abs-etc/../var", root / "chain")
    return root


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/", ""),
        ("/etc/passwd", "etc/passwd"),
        ("etc/passwd", "etc/passwd"),
        ("/./etc//passwd/", "etc/passwd"),
        ("/../../etc", "etc"),
        ("/abs-etc/passwd", "etc/passwd"),
        ("/var/escape", "etc"),
        ("/var/escape/passwd", "etc/passwd"),
        ("/lib/x", "usr/lib/x"),
        ("/var/pw", "etc/passwd"),
        ("/chain/pw", "etc/passwd"),
        ("/does/not/exist", "does/not/exist"),
        ("/usr/lib/../../etc", "etc"),
        ("/lib/..", "usr"),
    ],
)
def test_secure_join_stays_in_the_rootfs(fake_rootfs: Path, path: str, inside: str) -> None:
    expected = os.path.join(str(fake_rootfs), inside) if inside else str(fake_rootfs)
    got = rootfs.secure_join(str(fake_rootfs), path)
    assert os.path.normpath(got) == os.path.normpath(expected)
    assert os.path.realpath(got).startswith(str(fake_rootfs))


@pytest.mark.parametrize("path", ["/loop-a", "/loop-b/x", "/self"])
def test_secure_join_refuses_symlink_loops(fake_rootfs: Path, path: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        rootfs.secure_join(str(fake_rootfs), path)
    assert path in info.value.message
    assert "too many levels of symbolic links" in info.value.message


# --------------------------------------------------------------------------- check_sysctls


@pytest.mark.parametrize(
    ("key", "namespace"),
    [
        ("kernel.msgmax", "ipc"),
        ("kernel.shm_rmid_forced", "ipc"),
        ("kernel.sem", "ipc"),
        ("fs.mqueue.msg_max", "ipc"),
        ("net.ipv4.ip_forward", "network"),
        ("net.core.somaxconn", "network"),
        ("kernel.hostname", "uts"),
        ("kernel.domainname", "uts"),
    ],
)
def test_namespaced_sysctl_needs_its_namespace(key: str, namespace: str) -> None:
    rootfs.check_sysctls({key: "1"}, {namespace, "mount"})
    others = {"pid", "mount", "ipc", "network", "uts", "user", "cgroup"} - {namespace}
    with pytest.raises(InvalidArgument) as info:
        rootfs.check_sysctls({key: "1"}, others)
    assert repr(key) in info.value.message
    assert namespace in info.value.message
    assert info.value.message.startswith("linux.sysctl:")


@pytest.mark.parametrize(
    "key",
    ["kernel.core_pattern", "vm.overcommit_memory", "fs.file-max", "kernel.pid_max", "net"],
)
def test_host_sysctls_are_refused(key: str) -> None:
    every = {"pid", "mount", "ipc", "network", "uts", "user", "cgroup", "time"}
    with pytest.raises(InvalidArgument) as info:
        rootfs.check_sysctls({key: "1"}, every)
    assert repr(key) in info.value.message
    assert "not namespaced" in info.value.message


def test_no_sysctls_is_fine() -> None:
    rootfs.check_sysctls({}, set())


# write_sysctls turns dots into slashes under /proc/sys: a '/', '..' or empty part could
# reach a host-global sysctl such as kernel.core_pattern, so such keys are refused outright
@pytest.mark.parametrize(
    "key",
    [
        "net./../kernel.core_pattern",
        "net.ipv4/../../kernel.core_pattern",
        "fs.mqueue./../../vm.x",
        "net...kernel.core_pattern",
        "net.ipv4..ip_forward",
        "net.ipv4.ip_forward.",
        "net.ipv4/ip_forward",
        "kernel.shm_rmid_forced/",
    ],
)
def test_sysctl_keys_cannot_climb_out_of_their_subtree(key: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        rootfs.check_sysctls({key: "|/tmp/x"}, {"network", "ipc", "uts", "mount"})
    assert info.value.message.startswith("linux.sysctl:")
    assert repr(key) in info.value.message


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("9", 9),
        ("15", 15),
        ("64", 64),
        ("KILL", 9),
        ("SIGKILL", 9),
        ("sigterm", 15),
        ("term", 15),
        ("SigHup", 1),
        ("IOT", 6),
        ("SIGCHLD", 17),
        ("WINCH", 28),
        ("RTMIN", 34),
        ("SIGRTMIN", 34),
        ("RTMIN+2", 36),
        ("rtmin+30", 64),
        ("RTMAX", 64),
        ("SIGRTMAX-2", 62),
    ],
)
def test_signal_names_and_numbers(text: str, number: int) -> None:
    assert signals.parse(text) == number


@pytest.mark.parametrize(
    "text",
    ["", "0", "65", "-9", "SIG", "NOPE", "SIGKILLX", "RTMIN+31", "RTMIN-1", "RTMAX+1", "RTMIN+",
     "RTMINX", "RTMIN+x", "9x", " 9"],
)  # fmt: skip
def test_bad_signals_are_none(text: str) -> None:
    assert signals.parse(text) is None


@pytest.mark.parametrize("text", ["\u00b2", "RTMIN+\u00b2", "1\u00b2", "SIGRTMAX-\u00b9"])
def test_superscript_digits_are_none(text: str) -> None:
    assert signals.parse(text) is None


def test_signal_table_matches_the_signal_module() -> None:
    import signal

    for name, number in signals.NUMBERS.items():
        if hasattr(signal, name):
            assert getattr(signal, name) == number, name
    assert signal.SIGRTMIN == signals.SIGRTMIN
    assert signal.SIGRTMAX == signals.SIGRTMAX


# --------------------------------------------------------------------------- channel


@pytest.fixture
def channel_pair() -> Iterator[tuple[Channel, Channel]]:
    parent, child = Channel.pair()
    yield parent, child
    parent.close()
    child.close()


def test_channel_messages_both_ways(channel_pair: tuple[Channel, Channel]) -> None:
    parent, child = channel_pair
    parent.send("config", spec={"args": ["sh"], "env": ["A=é"]}, pid=7)
    msg = child.receive("config")
    assert msg == {"type": "config", "spec": {"args": ["sh"], "env": ["A=é"]}, "pid": 7}
    child.send("ready")
    assert parent.receive("ready") == {"type": "ready"}


def test_channel_keeps_message_boundaries(channel_pair: tuple[Channel, Channel]) -> None:
    parent, child = channel_pair
    child.send("one", n=1)
    child.send("two", text="x" * 10000)
    child.send("three")
    assert parent.receive("one")["n"] == 1
    assert len(parent.receive("two")["text"]) == 10000
    assert parent.receive("three") == {"type": "three"}


def test_channel_fds_are_close_on_exec(channel_pair: tuple[Channel, Channel]) -> None:
    for end in channel_pair:
        for fd in (end.read_fd, end.write_fd):
            assert not os.get_inheritable(fd)


@pytest.mark.parametrize(
    "error",
    [
        errors.NotFound("container 'x' does not exist"),
        errors.InvalidArgument("process.cwd: 'tmp' must be an absolute path"),
        errors.FailedPrecondition("container x is running"),
        errors.BerthError("mounts[0] (/proc): Operation not permitted"),
    ],
)
def test_channel_error_keeps_its_class(
    channel_pair: tuple[Channel, Channel], error: BerthError
) -> None:
    parent, child = channel_pair
    child.send_error(error)
    with pytest.raises(BerthError) as info:
        parent.receive("ready")
    assert type(info.value) is type(error)
    assert info.value.message == error.message


def test_channel_foreign_error_becomes_a_berth_error(
    channel_pair: tuple[Channel, Channel],
) -> None:
    parent, child = channel_pair
    child.send_error(PermissionError(13, "Permission denied"))
    with pytest.raises(BerthError) as info:
        parent.receive("ready")
    assert type(info.value) is BerthError
    assert info.value.message.startswith("PermissionError:")
    assert "Permission denied" in info.value.message


def test_channel_unexpected_message_names_peer_and_types(
    channel_pair: tuple[Channel, Channel],
) -> None:
    parent, child = channel_pair
    child.send("pid", pid=1)
    with pytest.raises(BerthError) as info:
        parent.receive("ready", peer="exec process")
    assert info.value.message == "exec process sent 'pid' where 'ready' was expected"


def test_channel_eof_names_the_peer(channel_pair: tuple[Channel, Channel]) -> None:
    parent, child = channel_pair
    child.close()
    with pytest.raises(BerthError) as info:
        parent.receive("ready")
    assert info.value.message == "container init exited before sending 'ready'"
    with pytest.raises(BerthError, match=r"^hook helper exited before sending 'done'$"):
        parent.receive("done", peer="hook helper")


def test_channel_eof_after_a_partial_message(channel_pair: tuple[Channel, Channel]) -> None:
    parent, child = channel_pair
    os.write(child.write_fd, b'{"type": "rea')
    child.close()
    with pytest.raises(BerthError, match="exited before sending 'ready'"):
        parent.receive("ready")


def test_channel_across_fork() -> None:
    parent, child = Channel.pair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            parent.close()
            msg = child.receive("ping", peer="parent")
            child.send("pong", n=msg["n"] + 1)
            child.send_error(errors.Conflict("from the child"))
        except BaseException:
            code = 1
        os._exit(code)
    child.close()
    try:
        parent.send("ping", n=41)
        assert parent.receive("pong")["n"] == 42
        with pytest.raises(errors.Conflict, match="from the child"):
            parent.receive("anything")
        with pytest.raises(BerthError, match="exited before"):
            parent.receive("more")
    finally:
        parent.close()
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


# --------------------------------------------------------------------------- lookup_executable


@pytest.fixture
def bin_dirs(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for directory, name, mode in [
        (first, "data", 0o644),  # not executable: skipped
        (second, "data", 0o755),
        (second, "tool", 0o755),
        (first, "both", 0o755),
        (second, "both", 0o755),
    ]:
        path = directory / name
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
    (first / "adir").mkdir(mode=0o755)  # a directory is never the executable
    return first, second


def _path_env(*dirs: Path) -> tuple[str, ...]:
    return ("HOME=/root", "PATH=" + ":".join(str(d) for d in dirs))


def test_lookup_searches_path_in_order(bin_dirs: tuple[Path, Path]) -> None:
    first, second = bin_dirs
    env = _path_env(Path("/nonexistent"), first, second)
    assert lookup_executable("tool", env) == str(second / "tool")
    assert lookup_executable("both", env) == str(first / "both")
    assert lookup_executable("data", env) == str(second / "data")


@pytest.mark.parametrize("program", ["x", "adir", "nothing-here"])
def test_lookup_not_found_has_runcs_wording(bin_dirs: tuple[Path, Path], program: str) -> None:
    with pytest.raises(BerthError) as info:
        lookup_executable(program, _path_env(*bin_dirs))
    assert str(info.value) == f'exec: "{program}": executable file not found in $PATH'


def test_lookup_with_a_slash_skips_path(bin_dirs: tuple[Path, Path]) -> None:
    first, second = bin_dirs
    assert lookup_executable(str(second / "tool"), ()) == str(second / "tool")
    assert lookup_executable("second/tool", (), cwd=str(second.parent)) == str(second / "tool")
    with pytest.raises(BerthError) as info:
        lookup_executable(str(first / "missing"), _path_env(first))
    missing = str(first / "missing")
    assert info.value.message == f'exec: "{missing}": stat {missing}: no such file or directory'
    with pytest.raises(BerthError, match=r'^exec: ".*/data": permission denied$'):
        lookup_executable(str(first / "data"), ())
    with pytest.raises(BerthError, match=r"permission denied"):
        lookup_executable(str(first / "adir"), ())


def test_env_path_default() -> None:
    assert env_path(("HOME=/", "PATH=/x:/y")) == "/x:/y"
    assert env_path(("HOME=/",)) == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env_path(("MYPATH=/no", "PATH=")) == ""


# --------------------------------------------------------------------------- errors as data

ERROR_CLASSES = [
    errors.BerthError,
    errors.NotFound,
    errors.AlreadyExists,
    errors.Conflict,
    errors.InvalidArgument,
    errors.FailedPrecondition,
    errors.Unavailable,
    errors.Unsupported,
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_error_round_trip(cls: type[BerthError]) -> None:
    original = cls("container 'web': something é went wrong")
    data = original.to_json()
    assert data == {"kind": cls.kind, "message": original.message}
    back = BerthError.from_json(data)
    assert type(back) is cls
    assert back.message == original.message
    assert str(back) == original.message


def test_error_kinds_are_distinct() -> None:
    assert len({cls.kind for cls in ERROR_CLASSES}) == len(ERROR_CLASSES)
    assert all(issubclass(cls, BerthError) for cls in ERROR_CLASSES)


def test_error_from_unknown_or_incomplete_data() -> None:
    unknown = BerthError.from_json({"kind": "martian", "message": "hi"})
    assert type(unknown) is BerthError
    assert unknown.message == "hi"
    assert BerthError.from_json({}).message == "unknown error"
