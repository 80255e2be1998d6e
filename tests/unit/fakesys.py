"""A recording stand-in for ``berth.runtime.syscalls.Syscalls``, and a stand-in for ``os``.

Rules:
- ``RecordingSyscalls`` overrides every public method of ``Syscalls`` (a unit test checks that
  it keeps doing so): each call is appended to ``calls`` as ``Call(name, args)`` and nothing
  reaches the kernel; ``Syscalls.__init__`` is not run, so not even libc is loaded.
- ``fail(name, error, match=..., times=...)`` makes a chosen call raise: ``error`` is an errno
  (turned into the matching ``OSError`` subclass, as the real wrappers raise) or an exception
  instance; ``match`` picks calls by their arguments. The failing call is still recorded.
- ``note(name, *args)`` puts an event that is not a syscall (an ``os`` call, a callback) into the
  same stream, so a test can check the order of both together.
- ``OsProxy`` replaces the ``os`` module inside one module under test (``monkeypatch.setattr(
  module, "os", proxy)``) so that ``os.mknod``, ``os.chroot`` ... are recorded there only; the
  real ``os`` module, which pytest itself uses, is never patched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from berth.runtime.syscalls import Syscalls


class Call(NamedTuple):
    name: str
    args: tuple[Any, ...]


@dataclass
class _Failure:
    name: str
    error: BaseException
    match: Callable[..., bool] | None
    times: int | None  # None: every matching call


class RecordingSyscalls(Syscalls):
    """Records every call as ``Call(name, args)`` and performs none."""

    def __init__(
        self,
        clone_result: int = 0,
        capget_result: tuple[int, int, int] = (0, 0, 0),
        keyring_result: bool = True,
        pidfd_result: int = -1,
    ) -> None:
        # Syscalls.__init__ is deliberately not called: it loads libc.
        self.calls: list[Call] = []
        self._failures: list[_Failure] = []
        self.clone_result = clone_result
        self.capget_result = capget_result
        self.keyring_result = keyring_result
        self.pidfd_result = pidfd_result

    # -- configuring and reading the record
    def fail(
        self,
        name: str,
        error: int | BaseException,
        match: Callable[..., bool] | None = None,
        times: int | None = None,
    ) -> None:
        """Make calls to ``name`` (those ``match(*args)`` accepts) raise ``error``."""
        if isinstance(error, int):
            error = OSError(error, f"{name}: {os.strerror(error)}")
        self._failures.append(_Failure(name, error, match, times))

    def note(self, name: str, *args: Any) -> None:
        """Record an event that is not a syscall, in order with the syscalls."""
        self.calls.append(Call(name, args))

    def named(self, *names: str) -> list[Call]:
        return [c for c in self.calls if c.name in names]

    def mounts(self) -> list[tuple[Any, ...]]:
        """The arguments of every mount call: (source, target, fstype, flags, data)."""
        return [c.args for c in self.calls if c.name == "mount"]

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append(Call(name, args))
        for failure in self._failures:
            if failure.name != name or failure.times == 0:
                continue
            if failure.match is not None and not failure.match(*args):
                continue
            if failure.times is not None:
                failure.times -= 1
            raise failure.error

    # -- the Syscalls interface
    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def mount_setattr_recursive(self, target: str, attr_set: int, attr_clr: int) -> None:
        self._record("mount_setattr_recursive", target, attr_set, attr_clr)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._record("umount2", target, flags)

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._record("setns", fd, nstype)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)

    def setdomainname(self, name: str) -> None:
        self._record("setdomainname", name)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
        self._record("prctl", option, arg2, arg3, arg4, arg5)
        return 0

    def clone(self, flags: int) -> int:
        self._record("clone", flags)
        return self.clone_result

    def clone3(self, flags: int, cgroup_fd: int | None = None) -> int:
        self._record("clone3", flags, cgroup_fd)
        return self.clone_result

    def capget(self) -> tuple[int, int, int]:
        self._record("capget")
        return self.capget_result

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._record("capset", effective, permitted, inheritable)

    def join_session_keyring(self, name: str, add_perm: int) -> bool:
        self._record("join_session_keyring", name, add_perm)
        return self.keyring_result

    def pidfd_open(self, pid: int) -> int:
        self._record("pidfd_open", pid)
        return self.pidfd_result


class OsProxy:
    """The real ``os`` module, except for the functions given, for one module under test."""

    def __init__(self, replacements: dict[str, Callable[..., Any]]) -> None:
        self._replacements = replacements

    def __getattr__(self, name: str) -> Any:
        if name in self._replacements:
            return self._replacements[name]
        return getattr(os, name)


def recording_os(
    fake: RecordingSyscalls,
    stubbed: tuple[str, ...] = (),
    passthrough: tuple[str, ...] = (),
) -> OsProxy:
    """An ``os`` whose ``stubbed`` functions only ``fake.note`` their call and return None,
    and whose ``passthrough`` functions note it and then run the real function."""

    def stub(name: str) -> Callable[..., Any]:
        def call(*args: Any) -> None:
            fake.note(f"os.{name}", *args)

        return call

    def wrap(name: str) -> Callable[..., Any]:
        real = getattr(os, name)

        def call(*args: Any) -> Any:
            fake.note(f"os.{name}", *args)
            return real(*args)

        return call

    replacements = {name: stub(name) for name in stubbed}
    replacements.update({name: wrap(name) for name in passthrough})
    return OsProxy(replacements)


__all__ = ["Call", "OsProxy", "RecordingSyscalls", "recording_os"]
