"""The test suite's guard and shared fixtures.

Rules:
- Tests run as root on a shared, real kernel and must leave no trace. At session start this
  file exports ``BERTH_TEST_SESSION=<uuid>`` (every child process inherits it) and snapshots
  the mounts, cgroups, netns, interfaces and processes a test could leak (see leakcheck.py for
  the exact scope). At session end it takes another snapshot; anything new fails the run with
  exit status 1 and a "berth leak check" section naming each leak.
- Every test marked ``root`` or ``peer`` is also checked on its own: a leak fails that test's
  teardown (reported as an error naming the leak). Other tests are only covered by the session
  check, which keeps unit tests fast (a snapshot costs a few milliseconds).
- Mounts leaked under the session's own temp dir are detached after being reported, so that
  pytest's later removal of old temp dirs never descends into a mounted filesystem.
- ``root``-marked tests are skipped unless the effective uid is 0.
- Cgroups and container ids that tests make must be named with ``leakcheck.tagged_name()``
  (the session's tag): the check watches those, at each hierarchy root and below our own
  cgroup, and not the cgroups of other test runs on the same kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
TOOLS_DIR = TESTS_DIR.parent / "tools"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import leakcheck  # noqa: E402  (needs the path above)

CHECKED_MARKERS = ("root", "peer")
# Seconds a leak may take to go away before it counts (dying processes, or a concurrent
# session's short-lived mount); BERTH_LEAKCHECK_GRACE overrides both (the leak check's own
# tests shorten it).
_grace = os.environ.get("BERTH_LEAKCHECK_GRACE")
PER_TEST_GRACE = float(_grace) if _grace else 1.0
SESSION_GRACE = float(_grace) if _grace else 3.0

_checker_key = pytest.StashKey[leakcheck.Checker]()
_start_key = pytest.StashKey[leakcheck.Snapshot]()
_report_key = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    marker = uuid.uuid4().hex
    # Overwrites an outer session's marker: a nested pytest run is its own session.
    os.environ[leakcheck.MARKER_VAR] = marker
    os.environ.setdefault(leakcheck.TAG_VAR, marker[:6])
    config.stash[_checker_key] = leakcheck.Checker(marker=marker, root_pid=os.getpid())


def pytest_sessionstart(session: pytest.Session) -> None:
    checker = session.config.stash[_checker_key]
    session.config.stash[_start_key] = checker.snapshot()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root (marked root)")


@pytest.fixture(autouse=True)
def _berth_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Per-test leak check for tests marked root or peer (see the module docstring)."""
    node = request.node
    if not any(node.get_closest_marker(m) is not None for m in CHECKED_MARKERS):
        yield
        return
    checker = request.config.stash[_checker_key]
    before = checker.snapshot()
    yield
    leaks = checker.leaks_since(before, grace=PER_TEST_GRACE)
    if leaks:
        pytest.fail(leakcheck.format_report(leaks, f"{node.nodeid} leaked"), pytrace=False)


def _detach(mount_point: str) -> str | None:
    """Lazily unmount one leaked mount of our own; return an error text or None."""
    try:
        subprocess.run(
            ["umount", "--lazy", mount_point], check=True, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        return f"could not detach {mount_point}: {detail.strip()}"
    return None


@pytest.hookimpl(trylast=True)  # after the runner has torn down session fixtures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _start_key not in config.stash:
        return
    checker = config.stash[_checker_key]
    start = config.stash[_start_key]
    leaks = checker.leaks_since(start, grace=SESSION_GRACE)
    if not leaks:
        return
    report = leakcheck.format_report(leaks, "berth leak check: this test session")
    basetemp = _basetemp(config)
    if basetemp is not None:
        notes = []
        for point in leakcheck.new_mounts_under(start, checker.snapshot(), str(basetemp)):
            err = _detach(point)
            notes.append(err or f"detached {point} (under this session's temp dir)")
        if notes:
            report += "\n" + "\n".join(f"  {n}" for n in notes)
    config.stash[_report_key] = report
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if config.pluginmanager.get_plugin("terminalreporter") is None:
        sys.stderr.write(report + "\n")


def _basetemp(config: pytest.Config) -> Path | None:
    """The session's temp dir if this session created one (pytest keeps it private)."""
    factory = getattr(config, "_tmp_path_factory", None)
    basetemp = getattr(factory, "_basetemp", None)
    return basetemp if isinstance(basetemp, Path) else None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    report = terminalreporter.config.stash.get(_report_key, None)
    if report is not None:
        terminalreporter.section("berth leak check", red=True)
        for line in report.splitlines():
            terminalreporter.write_line(line, red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    report = config.stash.get(_report_key, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if report is not None and reporter is not None:
        reporter.write_line(
            "FAILED: the berth leak check found leaks (see its section above); exit status 1",
            red=True,
            bold=True,
        )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem, built once per session. Shared: treat it as read-only."""
    if str(TOOLS_DIR) not in sys.path:
        sys.path.insert(0, str(TOOLS_DIR))
    from busybox_rootfs import build_busybox_rootfs

    target = tmp_path_factory.mktemp("busybox") / "rootfs"
    return Path(build_busybox_rootfs(str(target)))


@pytest.fixture
def runtime_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty directory for one test's runtime --root (state dir), mode 0700.

    Short (``<basetemp>/rt<N>``) rather than under tmp_path, so unix socket paths built inside
    it stay well below the 108-byte limit.
    """
    path = tmp_path_factory.mktemp("rt", numbered=True)
    path.chmod(0o700)
    return path
