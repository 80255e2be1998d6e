"""The container's program starts with default signal dispositions: nothing the runtime's
own process ignored (Python ignores SIGPIPE and SIGXFSZ) may leak into it, since an ignored
signal stays ignored across execve.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.root


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
    assert _status_field(proc.stdout, "SigIgn") == "0000000000000000"
