"""The builder on the real kernel: overlay snapshots, RUN steps as ``berth-runtime`` containers
(``runner.KernelRunner``), a small Containerfile built, rebuilt from cache, rebuilt after one
copied file changed, and a failing RUN reported with its status and line.

Rules: every mount is made in the runner's private mount namespace; containers are named by
``leakcheck.tagged_name()`` so the session's leak check fails the run if one leaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from berth.image import base
from berth.image.build import BuildError, BuildEvent, build
from berth.image.store import Image, ImageStore, overlay_available

sys.path.insert(0, str(Path(__file__).parent))
from runner import KernelRunner

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not os.access(base.BUSYBOX, os.X_OK), reason="needs busybox-static"),
    pytest.mark.skipif(not overlay_available(), reason="needs overlayfs"),
]

CONTAINERFILE = """\
FROM busybox
RUN echo hi > /hello && echo built-output
COPY tree /srv/tree
CMD ["cat", "/hello"]
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[ImageStore, Path, KernelRunner]:
    store = ImageStore(str(tmp_path / "store"))
    assert store.snapshots.mode == "overlay"
    ctx = tmp_path / "ctx"
    (ctx / "tree" / "sub").mkdir(parents=True)
    (ctx / "tree" / "a.txt").write_text("a\n")
    (ctx / "tree" / "sub" / "b.txt").write_text("b\n")
    work = tmp_path / "runs"
    work.mkdir()
    return store, ctx, KernelRunner(work)


def do_build(
    store: ImageStore, ctx: Path, runner: KernelRunner, text: str = CONTAINERFILE
) -> tuple[Image, list[BuildEvent]]:
    events: list[BuildEvent] = []
    image = build(store, str(ctx), text, tags=["built:1"], runner=runner, events=events.append)
    return image, events


def read_in_image(store: ImageStore, image: Image, path: str) -> str:
    """A file of the image, read through an overlay mount in a private namespace."""
    chain = store.unpack(image)
    assert chain is not None
    lowers = ":".join(store.snapshots.lowers(chain))
    target = Path(store.root) / "peek"
    target.mkdir(exist_ok=True)
    script = (
        f"mount -t overlay -o lowerdir={lowers} overlay {target} && cat {target}{path}; "
        f"rc=$?; umount {target}; exit $rc"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_build_cache_and_change(setup: tuple[ImageStore, Path, KernelRunner]) -> None:
    store, ctx, runner = setup
    image, events = do_build(store, ctx, runner)
    assert [e.text for e in events if e.kind == "output"] == ["built-output"]
    assert [e.text for e in events if e.kind == "step"][1].startswith("[2/4] RUN echo hi")
    assert len(runner.ids) == 1
    assert read_in_image(store, image, "/hello") == "hi\n"
    assert read_in_image(store, image, "/srv/tree/sub/b.txt") == "b\n"
    assert image.config.config.cmd == ("cat", "/hello")
    assert len(image.config.rootfs.diff_ids) == 3

    again, events = do_build(store, ctx, runner)
    assert len(runner.ids) == 1, "a cached rebuild runs no container"
    assert all(e.cached for e in events if e.kind == "done")
    assert again.id == image.id

    (ctx / "tree" / "a.txt").write_text("changed\n")
    changed, events = do_build(store, ctx, runner)
    assert [e.cached for e in events if e.kind == "done"] == [True, True, False, False]
    assert len(runner.ids) == 1
    assert read_in_image(store, changed, "/srv/tree/a.txt") == "changed\n"
    assert changed.config.rootfs.diff_ids[:2] == image.config.rootfs.diff_ids[:2]


def test_failing_run(setup: tuple[ImageStore, Path, KernelRunner]) -> None:
    store, ctx, runner = setup
    text = "FROM busybox\nRUN echo before\n\nRUN echo going; exit 3\n"
    events: list[BuildEvent] = []
    with pytest.raises(BuildError, match=r"^Dockerfile:4: RUN exited with status 3"):
        build(store, str(ctx), text, tags=["bad:1"], runner=runner, events=events.append)
    assert "going" in [e.text for e in events if e.kind == "output"]
    assert [e.kind for e in events][-1] == "error"
    assert store.get("bad:1") is None
    assert not [s for s in store.snapshots.list() if s.kind == "active"]


HEREDOCS = """\
FROM busybox
RUN <<EOF
echo first > /one
echo second >> /one
EOF
RUN cat <<A > /two && echo from-stdin
two says $HOME
A
COPY <<-EOT /etc/greeting
\tindented text
\tEOT
RUN echo slow-start && sleep 1 && echo slow-end
"""


def test_heredocs_and_step_timing(setup: tuple[ImageStore, Path, KernelRunner]) -> None:
    """RUN and COPY heredocs as BuildKit reads them: a script run line by line, a command's
    stdin (expanded by the shell, unquoted delimiter), a file (``<<-`` strips leading tabs);
    each step's output arrives while it runs, and its "done" carries how long it took."""
    store, ctx, runner = setup
    events: list[tuple[float, BuildEvent]] = []
    image = build(
        store,
        str(ctx),
        HEREDOCS,
        tags=["heredoc:1"],
        runner=runner,
        events=lambda e: events.append((time.monotonic(), e)),
    )
    assert read_in_image(store, image, "/one") == "first\nsecond\n"
    assert read_in_image(store, image, "/two") == "two says /root\n"
    assert read_in_image(store, image, "/etc/greeting") == "indented text\n"
    outputs = [e.text for _, e in events if e.kind == "output"]
    assert outputs == ["from-stdin", "slow-start", "slow-end"], outputs
    done = [e for _, e in events if e.kind == "done"]
    assert len(done) == 5 and not any(e.cached for e in done), done
    assert done[-1].duration >= 1.0, done[-1]  # the step with the sleep
    assert all(e.duration > 0 for e in done[1:]), done
    # streamed: the first line of the slow step came about a second before its last
    [start] = [t for t, e in events if e.kind == "output" and e.text == "slow-start"]
    [end] = [t for t, e in events if e.kind == "output" and e.text == "slow-end"]
    assert end - start >= 0.8, (start, end)


INSTRUCTIONS = """\
ARG BASE=busybox
FROM $BASE
ARG WHO=nobody
ENV GREETING=hello
WORKDIR /srv/app
RUN ["/bin/sh", "-c", "echo exec-form > in-workdir.txt"]
USER nobody
RUN id -u > /tmp/uid; echo "$GREETING $WHO" > /tmp/greeting; pwd > /tmp/pwd
SHELL ["/bin/sh", "-x", "-c"]
RUN echo traced
"""


def test_run_forms_env_user_workdir_args_and_shell(
    setup: tuple[ImageStore, Path, KernelRunner],
) -> None:
    """RUN in a real container with the build's state: exec form, the workdir as cwd, ENV,
    ARG (one before FROM choosing the base, one given by --build-arg), USER and SHELL."""
    store, ctx, runner = setup
    events: list[BuildEvent] = []
    image = build(
        store,
        str(ctx),
        INSTRUCTIONS,
        tags=["state:1"],
        runner=runner,
        build_args={"WHO": "you"},
        events=events.append,
    )
    assert read_in_image(store, image, "/srv/app/in-workdir.txt") == "exec-form\n"
    assert read_in_image(store, image, "/tmp/uid") == "65534\n"
    assert read_in_image(store, image, "/tmp/greeting") == "hello you\n"
    assert read_in_image(store, image, "/tmp/pwd") == "/srv/app\n"
    outputs = [e.text for e in events if e.kind == "output"]
    # stderr (the trace) and stdout are read side by side: their order is not fixed
    assert sorted(outputs) == ["+ echo traced", "traced"], outputs
    config = image.config.config
    assert config.user == "nobody" and config.working_dir == "/srv/app"
    assert "GREETING=hello" in config.env
