"""``docker build`` and ``docker commit`` against berthd, with the real clients: the docker CLI
28 (the legacy builder: ``POST /build``, tar in, JSON lines out) and docker-py.

The module fixture ``berthd`` (``conftest``) runs a private berthd whose cgroup parent carries
the session's tag, so the leak check sees a RUN step's cgroup or process left behind; the
fixture also fails if any mount is left under the data root. Each test checks that its builds
left no step bundle, runtime state or mount.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from berthd_process import launch, mounts_under
from test_berthd_images import DOCKER, Daemon, stop_daemon, stop_supervisor

from leakcheck import tagged_name

pytestmark = [pytest.mark.root, pytest.mark.peer]

APP = """\
FROM busybox
ARG GREETING=hello
RUN echo "$GREETING from run" > /greeting && echo built-output
COPY app.txt /app/app.txt
ENV NAME=world
WORKDIR /app
CMD ["sh", "-c", "cat /greeting app.txt; echo $NAME; pwd"]
"""

MULTI = """\
FROM busybox AS base
RUN echo base > /b
FROM base AS mid
RUN echo mid > /m
FROM busybox
COPY --from=mid /m /m
CMD ["cat", "/m"]
"""


def _context(tmp_path: Path, dockerfile: str = APP, name: str = "Dockerfile") -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / name).parent.mkdir(parents=True, exist_ok=True)
    (ctx / name).write_text(dockerfile)
    (ctx / "app.txt").write_text("app file\n")
    return ctx


def _nothing_left(berthd: Daemon) -> None:
    """No step bundle, runtime state, mount or container remains after the builds."""
    root = berthd.data_root
    for directory in (root / "builds", root / "run" / "build-runtime"):
        assert not directory.exists() or list(directory.iterdir()) == []
    assert mounts_under(str(root)) == []
    assert berthd.docker("ps", "-aq").stdout.split() == []


def _image_id(berthd: Daemon, ref: str) -> str:
    return berthd.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


# --------------------------------------------------------------------------- docker CLI


def test_build_run_then_rebuild_from_cache(berthd: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    first = berthd.docker("build", "-t", "app", "-t", "app:v2", "--build-arg", "NOPE=1", str(ctx))
    out = first.stdout
    assert "Step 1/7 : FROM busybox\n" in out
    assert 'Step 3/7 : RUN echo "$GREETING from run" > /greeting && echo built-output\n' in out
    running = re.search(r" ---> Running in ([0-9a-f]{12})\n", out)
    assert running is not None, out
    assert f"built-output\nRemoving intermediate container {running[1]}\n" in out
    image = _image_id(berthd, "app")
    assert f"Successfully built {image[7:19]}\n" in out
    assert "[Warning] One or more build-args [NOPE] were not consumed\n" in out
    assert out.endswith("Successfully tagged app:latest\nSuccessfully tagged app:v2\n")
    assert _image_id(berthd, "app:v2") == image
    run = berthd.docker("run", "--rm", "app")
    assert run.stdout == "hello from run\napp file\nworld\n/app\n"

    again = berthd.docker("build", "-t", "app", "--build-arg", "NOPE=1", str(ctx)).stdout
    assert again.count(" ---> Using cache\n") == 6, again  # every step after FROM
    assert "Running in" not in again
    assert _image_id(berthd, "app") == image
    berthd.docker("rmi", "app:v2")
    _nothing_left(berthd)


def test_build_arg_file_target_no_cache_and_quiet(berthd: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, APP, "sub/Other.df")
    quiet = berthd.docker(
        "build", "-q", "--build-arg", "GREETING=bonjour", "-f", str(ctx / "sub/Other.df"),
        "-t", "app-fr", str(ctx),
    )  # fmt: skip
    image = _image_id(berthd, "app-fr")
    assert quiet.stdout == image + "\n"
    run = berthd.docker("run", "--rm", "app-fr")
    assert run.stdout.startswith("bonjour from run\n")

    (ctx / "Multi.df").write_text(MULTI)
    mid = berthd.docker(
        "build", "-f", str(ctx / "Multi.df"), "--target", "mid", "-t", "mid", str(ctx)
    )
    assert "Step 4/4 : RUN echo mid > /m\n" in mid.stdout
    assert berthd.docker("run", "--rm", "mid", "cat", "/b", "/m").stdout == "base\nmid\n"

    final = berthd.docker("build", "--no-cache", "-f", str(ctx / "Multi.df"), "-t", "fin", str(ctx))
    assert "Using cache" not in final.stdout
    assert final.stdout.count(" ---> Running in ") == 2
    assert berthd.docker("run", "--rm", "fin").stdout == "mid\n"
    berthd.docker("rmi", "app-fr", "mid", "fin")
    _nothing_left(berthd)


def test_dockerfile_outside_the_context_and_from_stdin(berthd: Daemon, tmp_path: Path) -> None:
    """The CLI adds such a Dockerfile to the context tar under a random name, listed in
    .dockerignore, and ends the tar right after its data (no padding, no end blocks)."""
    ctx = _context(tmp_path, "unused\n")
    (ctx / ".dockerignore").write_text("app.txt\n")
    outside = tmp_path / "outside.df"
    outside.write_text("FROM busybox\nCOPY . /c/\nRUN ls -A /c\n")
    built = berthd.docker("build", "-f", str(outside), str(ctx)).stdout
    assert "\n.dockerignore\nDockerfile\nRemoving intermediate container" in built
    piped = subprocess.run(
        [DOCKER, "-H", berthd.url, "build", "-f-", "-t", "piped", str(ctx)],
        env=_cli_env(berthd),
        input="FROM busybox\nRUN echo from stdin\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "\nfrom stdin\n" in piped.stdout
    berthd.docker("rmi", "piped")
    _nothing_left(berthd)


def _cli_env(berthd: Daemon) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env["DOCKER_CONFIG"] = str(berthd.home / "docker-config")
    return env


def test_failing_run_exits_with_dockers_message(berthd: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM busybox\nRUN echo before\nRUN false\n")
    failed = berthd.docker("build", "-t", "broken", str(ctx), check=False)
    assert failed.returncode == 1
    assert "The command '/bin/sh -c false' returned a non-zero code: 1" in failed.stderr
    assert "Step 3/3 : RUN false" in failed.stdout
    (ctx / "Dockerfile").write_text("FROM busybox\nRUN exit 3\n")
    quiet = berthd.docker("build", "-q", str(ctx), check=False)
    assert quiet.returncode == 3, quiet.stderr
    assert "returned a non-zero code: 3" in quiet.stderr
    assert berthd.docker("images", "-q", "broken").stdout == ""
    _nothing_left(berthd)


def test_steps_run_under_the_cgroup_parent_with_the_builds_limits(
    berthd: Daemon, tmp_path: Path
) -> None:
    run = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; grep :memory: /proc/self/cgroup"
    ctx = _context(tmp_path, f"FROM busybox\nRUN {run}\n")
    out = berthd.docker("build", "--memory", "64m", str(ctx)).stdout
    step = re.search(r" ---> Running in ([0-9a-f]{12})\n", out)
    assert step is not None, out
    args = [str(a) for a in berthd.proc.args]
    parent = args[args.index("--cgroup-parent") + 1]
    assert "\n67108864\n" in out
    assert re.search(rf":memory:/.*{parent}/{step[1]}[0-9a-f]{{52}}\n", out), out
    tiny = berthd.docker("build", "--memory", "1k", str(ctx), check=False)
    assert tiny.returncode == 1 and "Minimum memory limit allowed is 6MB" in tiny.stderr
    _nothing_left(berthd)


def test_bad_requests_are_refused_before_building(berthd: Daemon, tmp_path: Path) -> None:
    ctx = _context(tmp_path, "FROM busybox\nFOO bar\n")
    bad = berthd.docker("build", str(ctx), check=False)
    assert bad.returncode == 1
    assert "Error response from daemon: Dockerfile:2:" in bad.stderr
    assert "FOO" in bad.stderr
    (ctx / "Dockerfile").write_text(APP)
    wrong = berthd.docker("build", "--platform", "linux/s390x", str(ctx), check=False)
    assert wrong.returncode == 1 and "linux/s390x" in wrong.stderr
    target = berthd.docker("build", "--target", "nosuch", str(ctx), check=False)
    assert target.returncode == 1 and "nosuch" in target.stderr
    _nothing_left(berthd)


def test_a_client_gone_mid_step_stops_the_build(berthd: Daemon, tmp_path: Path) -> None:
    seconds = random.randint(100000, 999999)  # names the step's process
    ctx = _context(tmp_path, f"FROM busybox\nRUN echo started; sleep {seconds}; echo never\n")
    cli = subprocess.Popen(
        [DOCKER, "-H", berthd.url, "build", str(ctx)],
        env=_cli_env(berthd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert cli.stdout is not None
        for line in cli.stdout:
            if line == "started\n":
                break
        deadline = time.monotonic() + 10
        while not _sleepers(seconds):
            assert time.monotonic() < deadline, "the step is not running"
            time.sleep(0.05)
        assert mounts_under(str(berthd.data_root)) != []
    finally:
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        if cli.stdout is not None:
            cli.stdout.close()
    deadline = time.monotonic() + 15
    while _sleepers(seconds) or mounts_under(str(berthd.data_root)):
        assert time.monotonic() < deadline, "the build went on after the client left"
        time.sleep(0.1)
    _wait_for_empty(berthd.data_root / "builds")
    _nothing_left(berthd)
    assert "cancelling the build" in (berthd.home / "berthd.log").read_text()


def test_a_daemon_killed_mid_build_leaves_nothing_after_its_restart(tmp_path: Path) -> None:
    """kill -9 berthd while a step runs: the step goes on, mounted; the next daemon's first
    build removes it."""
    home = Path(tempfile.mkdtemp(prefix="berthd-bld-"))
    daemon = Daemon(home, str(home / "berth.sock"), home / "root", launch(home, tagged_name()))
    try:
        daemon.docker("pull", "busybox")
        seconds = random.randint(100000, 999999)
        ctx = _context(tmp_path, f"FROM busybox\nRUN sleep {seconds}\n")
        cli = subprocess.Popen(
            [DOCKER, "-H", daemon.url, "build", str(ctx)],
            env=_cli_env(daemon),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not _sleepers(seconds):
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.05)
        daemon.proc.kill()
        daemon.proc.wait()
        cli.wait(timeout=30)
        assert _sleepers(seconds) and mounts_under(str(daemon.data_root))
        daemon.proc = launch(home, tagged_name())
        (ctx / "Dockerfile").write_text("FROM busybox\nRUN true\n")
        daemon.docker("build", str(ctx))
        assert not _sleepers(seconds)
        _nothing_left(daemon)
        assert "removed 1 step(s) a daemon left mid-build" in (home / "berthd.log").read_text()
    finally:
        stop_daemon(daemon)
        stop_supervisor(daemon.data_root)
        leaked = mounts_under(str(daemon.data_root))
        shutil.rmtree(home, ignore_errors=not leaked)
    assert not leaked, f"mounts left: {leaked}"


def _sleepers(seconds: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", str(seconds).encode()]:
            found.append(int(pid))
    return found


def _wait_for_empty(directory: Path) -> None:
    deadline = time.monotonic() + 10
    while list(directory.iterdir()):
        assert time.monotonic() < deadline, f"{directory} keeps {list(directory.iterdir())}"
        time.sleep(0.05)


def test_commit_a_container_then_run_the_image(berthd: Daemon) -> None:
    script = "echo committed > /data.txt; rm /bin/vi"
    berthd.docker("run", "--name", "writer", "busybox", "sh", "-c", script)
    made = berthd.docker(
        "commit", "-c", 'CMD ["cat", "/data.txt"]', "-c", "ENV LEVEL=2", "-m", "a note",
        "-a", "someone", "writer", "committed:1",
    )  # fmt: skip
    assert made.stdout.strip() == _image_id(berthd, "committed:1")
    berthd.docker("rm", "writer")
    assert berthd.docker("run", "--rm", "committed:1").stdout == "committed\n"
    check = berthd.docker(
        "run", "--rm", "committed:1", "sh", "-c", "echo $LEVEL; ls /bin/vi", check=False
    )
    assert check.stdout == "2\n" and "No such file" in check.stderr
    doc: dict[str, Any] = json.loads(berthd.docker("image", "inspect", "committed:1").stdout)[0]
    assert doc["Comment"] == "a note" and doc["Author"] == "someone"
    assert doc["Config"]["Cmd"] == ["cat", "/data.txt"]
    assert "LEVEL=2" in doc["Config"]["Env"]
    assert len(doc["RootFS"]["Layers"]) == 2
    missing = berthd.docker("commit", "nosuch", "x", check=False)
    assert missing.returncode == 1 and "No such container: nosuch" in missing.stderr
    berthd.docker("rmi", "committed:1")


# --------------------------------------------------------------------------- docker-py


def test_docker_py_build_and_commit(berthd: Daemon, tmp_path: Path) -> None:
    import docker

    ctx = _context(tmp_path)
    client = docker.DockerClient(base_url=berthd.url, timeout=60)
    try:
        image, logs = client.images.build(
            path=str(ctx), tag="pyapp", buildargs={"GREETING": "hi"}, labels={"team": "berth"}
        )
        text = "".join(line.get("stream", "") for line in logs)
        assert "Step 1/7 : FROM busybox" in text and "built-output\n" in text
        assert image.tags == ["pyapp:latest"] and image.labels == {"team": "berth"}
        out = client.containers.run("pyapp", remove=True)
        assert out == b"hi from run\napp file\nworld\n/app\n"

        (ctx / "Dockerfile").write_text("FROM busybox\nRUN echo oops >&2; exit 2\n")
        with pytest.raises(docker.errors.BuildError) as failed:
            client.images.build(path=str(ctx))
        assert (
            failed.value.msg
            == "The command '/bin/sh -c echo oops >&2; exit 2' returned a non-zero code: 2"
        )
        assert {"stream": "oops\n"} in list(failed.value.build_log)

        c = client.containers.run("busybox", ["sh", "-c", "echo py > /py.txt"], detach=True)
        try:
            c.wait(timeout=30)
            committed = c.commit("pycommit", "v1", changes=["CMD cat /py.txt"])
        finally:
            c.remove(force=True)
        assert client.containers.run(committed.id, remove=True) == b"py\n"
        client.images.remove("pycommit:v1")
        client.images.remove("pyapp")
    finally:
        client.close()
    _nothing_left(berthd)
