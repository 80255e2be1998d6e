"""berthd's build runner on the real kernel: RUN steps as ``berth-runtime`` containers with
Docker's build defaults, their output streamed as it comes, and a step cancelled while it runs.

Rules: the runner's cgroup parent is ``leakcheck.tagged_name()``, so the per-test leak check
fails a test whose step leaves a cgroup or a process; each test also checks that no mount,
bundle dir or runtime state is left under its data root.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import leakcheck
from berth.engine.build_runner import StepRunner
from berth.engine.paths import Paths
from berth.image import base
from berth.image.build import BuildError, BuildEvent, build
from berth.image.store import ImageStore, overlay_available

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.access(base.BUSYBOX, os.X_OK), reason="needs busybox-static"),
    pytest.mark.skipif(not overlay_available(), reason="needs overlayfs"),
]


class Setup:
    def __init__(self, root: Path) -> None:
        self.paths = Paths(str(root / "data"))
        self.paths.make()
        self.store = ImageStore(self.paths.images)
        self.context = root / "ctx"
        self.context.mkdir()
        self.started: list[str] = []
        self.runner = StepRunner(self.paths, leakcheck.tagged_name(), self.started.append)
        self.events: list[BuildEvent] = []

    def build(self, text: str) -> None:
        build(self.store, str(self.context), text, runner=self.runner, events=self.events.append)

    def output(self) -> list[tuple[str, str]]:
        return [(e.stream, e.text) for e in self.events if e.kind == "output"]

    def assert_clean(self) -> None:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            mounts = [line.split()[4] for line in f]
        assert [m for m in mounts if m.startswith(self.paths.data_root + "/")] == []
        assert os.listdir(self.paths.builds) == []
        assert os.listdir(self.runner.state.root) == []


@pytest.fixture
def setup(engine_workdir: Path) -> Iterator[Setup]:
    made = Setup(engine_workdir)
    yield made
    made.assert_clean()


def test_a_step_runs_with_dockers_build_defaults(setup: Setup) -> None:
    setup.build(
        "FROM busybox\n"
        "WORKDIR /made/here\n"
        "RUN pwd; hostname; id -u; grep -E '^(CapEff|Seccomp):' /proc/self/status;"
        " ls /sys/class/net; grep -c memory /proc/self/cgroup; echo to-stderr >&2; printf tail\n"
        "USER nobody\n"
        "RUN id -u\n"
    )
    (step, user) = setup.started
    assert len(step) == 64 and step != user
    out = setup.output()
    assert out[:2] == [("stdout", "/made/here"), ("stdout", step[:12])]
    assert ("stdout", "0") in out
    assert ("stdout", "CapEff:\t00000000a80425fb") in out  # Docker's 14 capabilities
    assert ("stdout", "Seccomp:\t2") in out
    assert ("stdout", "lo") in out and len([t for s, t in out if t == "lo"]) == 1
    assert ("stderr", "to-stderr") in out and ("stdout", "tail") in out
    assert out[-1] == ("stdout", "65534")


def test_a_failing_step_returns_its_status(setup: Setup) -> None:
    with pytest.raises(BuildError) as failed:
        setup.build("FROM busybox\nRUN echo going; exit 7\n")
    assert failed.value.status == 7
    assert failed.value.command == ("/bin/sh", "-c", "echo going; exit 7")
    assert setup.output() == [("stdout", "going")]


def test_cancel_stops_the_step_and_removes_everything(setup: Setup) -> None:
    going = threading.Event()
    setup.events = []

    def events(ev: BuildEvent) -> None:
        setup.events.append(ev)
        if ev.kind == "output" and ev.text == "going":
            going.set()

    errors: list[BaseException] = []

    def work() -> None:
        try:
            build(
                setup.store,
                str(setup.context),
                "FROM busybox\nRUN echo going; sleep 1000; echo never\n",
                runner=setup.runner,
                events=events,
            )
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    try:
        assert going.wait(30), "the step did not start"
        started = time.monotonic()
        setup.runner.cancel()
    finally:
        thread.join(30)
    assert not thread.is_alive()
    assert time.monotonic() - started < 10
    assert len(errors) == 1 and "was cancelled" in str(errors[0])
    assert ("stdout", "never") not in setup.output()
    with pytest.raises(BuildError, match="cancelled"):
        setup.build("FROM busybox\nRUN true\n")  # a cancelled runner runs nothing more
