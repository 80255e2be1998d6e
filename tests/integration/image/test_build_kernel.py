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
