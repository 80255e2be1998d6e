"""The last steps before a container process runs, shared by a container's init and exec.

Rules: called in the child that will exec, in this order: rlimits, working directory, identity
(groups, gid, uid) with capabilities kept across the switch, capabilities, no_new_privs,
seccomp, execve. An executable that cannot be found fails *before* the container is reported
created, with runc's wording (``exec: "x": executable file not found in $PATH``) that the
Docker CLI maps to exit code 127.
"""

from __future__ import annotations

import os
import resource

from berth.errors import BerthError, InvalidArgument
from berth.runtime import log
from berth.spec.config import Rlimit, User

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def env_path(env: tuple[str, ...]) -> str:
    for entry in env:
        if entry.startswith("PATH="):
            return entry[5:]
    return DEFAULT_PATH


def lookup_executable(program: str, env: tuple[str, ...], cwd: str = "/") -> str:
    """Resolve ``program`` as execvp would, in the current root; raise runc's error if absent."""
    if "/" in program:
        path = program if program.startswith("/") else os.path.join(cwd, program)
        if not os.path.exists(path):
            raise BerthError(f'exec: "{program}": stat {program}: no such file or directory')
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise BerthError(f'exec: "{program}": permission denied')
        return path
    for directory in env_path(env).split(":"):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise BerthError(f'exec: "{program}": executable file not found in $PATH')


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The home directory of the first ``passwd`` entry with ``uid``, else "/" (runc sets
    HOME to it for a process whose env has none)."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2].strip() == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def set_rlimits(rlimits: tuple[Rlimit, ...]) -> None:
    for i, limit in enumerate(rlimits):
        number = getattr(resource, limit.type, None)
        if not isinstance(number, int):
            raise InvalidArgument(f"process.rlimits[{i}].type: unknown rlimit {limit.type!r}")
        soft, hard = limit.soft, limit.hard
        _, current_hard = resource.getrlimit(number)
        if current_hard != resource.RLIM_INFINITY and hard > current_hard:
            # Raising a hard limit needs CAP_SYS_RESOURCE, which this host may not grant.
            try:
                resource.setrlimit(number, (min(soft, hard), hard))
                continue
            except (ValueError, PermissionError):
                log.warning(
                    f"process.rlimits[{i}]: {limit.type} {soft}:{hard} is above the hard limit"
                    f" {current_hard} and cannot be raised here: clamped to {current_hard}"
                )
                hard = current_hard
                soft = min(soft, hard)
        try:
            resource.setrlimit(number, (soft, hard))
        except (ValueError, OSError) as exc:
            raise InvalidArgument(
                f"process.rlimits[{i}]: {limit.type} soft={soft} hard={hard}: {exc}"
            ) from None


def switch_user(user: User) -> None:
    try:
        os.setgroups(list(user.additional_gids))
    except PermissionError:
        if user.additional_gids:
            raise
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)


def set_oom_score_adj(value: int | None) -> None:
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as exc:
        raise InvalidArgument(f"process.oomScoreAdj: {value}: {exc.strerror}") from None


def wait_exit(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0
        if os.WIFSIGNALED(status):
            return 128 + os.WTERMSIG(status)
        if os.WIFEXITED(status):
            return os.WEXITSTATUS(status)
