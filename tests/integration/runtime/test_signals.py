"""The container's program starts with the signal dispositions its runtime was given:
nothing the runtime's own process ignored (Python ignores SIGPIPE and SIGXFSZ) may leak into
it, since an ignored signal stays ignored across execve. What the test's own environment
ignores (a job runner may ignore signal 32, which glibc will not let anyone reset) passes
through, for runc as for berth.
"""

from __future__ import annotations

import signal

import pytest

pytestmark = pytest.mark.root


PYTHON_IGNORES = (1 << (signal.SIGPIPE - 1)) | (1 << (signal.SIGXFSZ - 1))


def expected_sigign() -> str:
    """What a child of this test sees ignored: ours, less what subprocess restores."""
    with open("/proc/self/status") as f:
        ours = int(_status_field(f.read(), "SigIgn"), 16)
    return f"{ours & ~PYTHON_IGNORES:016x}"


def _status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"{name}:"):
            return line.split()[1]
    raise AssertionError(f"no {name} in {text!r}")


@pytest.mark.parametrize("how", ["run", "exec"])
def test_no_signal_is_ignored_in_the_container(runtime, bundle, how):
    if how == "run":
        proc = runtime.run(bundle(["cat", "/proc/self/status"]), runtime.new_id())
    else:
        cid = runtime.new_id()
        started = runtime.run(bundle(["sleep", "30"]), cid, detach=True)
        assert started.returncode == 0, started.stderr
        proc = runtime("exec", cid, "cat", "/proc/self/status")
    assert proc.returncode == 0, proc.stderr
    assert _status_field(proc.stdout, "SigIgn") == expected_sigign()
