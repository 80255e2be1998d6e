"""``berth compose stop | start | restart | pull | rm`` against a real berthd.

One project for the module (a ``db`` with a healthcheck and a named volume, a ``web`` that
depends on it being healthy, with ``restart: true``). Each test that needs it running brings
it up and takes it down again (``up``): a container's network namespace is a bind mount
made at each start, and the per-test leak check would count one made in a test and still
mounted after it (by mount id, which the kernel may or may not hand out again). The pull
test pushes busybox to a docker-registry on 127.0.0.1 of berthd's network namespace
(``test_registry_client``'s fixture class), removes it locally and pulls it back through a
small project of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dockerd  # tests/e2e/dockerd.py, a fixture module
import pytest
from test_berthd_images import Daemon
from test_compose import _load_busybox
from test_registry_client import Registry, netns_of, running

from berth.cli.render import parse_rfc3339

pytestmark = [pytest.mark.root, pytest.mark.peer]

BERTH = str(Path(sys.executable).parent / "berth")
TIMEOUT = 120
PROJECT = "lifecycle"
COMPOSE = f"""
name: {PROJECT}
services:
  db:
    image: busybox
    # not healthy for a second after each start: start must wait for it before web
    command: sh -c "rm -f /tmp/ready; sleep 1; touch /tmp/ready; exec sleep 600"
    stop_signal: SIGKILL
    volumes: [data:/data]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 200ms
      retries: 50
  web:
    image: busybox
    command: sleep 600
    stop_signal: SIGKILL
    depends_on:
      db: {{condition: service_healthy, restart: true}}
volumes:
  data: {{}}
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(textwrap.dedent(text))
    return directory


Docker = Callable[..., subprocess.CompletedProcess[str]]  # (*args, check=True)


class Project:
    """The project's directory and the daemon it runs on (its URL, the docker CLI on it)."""

    def __init__(self, url: str, home: Path, docker: Docker, cwd: Path) -> None:
        self.url, self.home, self.docker, self.cwd = url, home, docker, cwd

    def compose(
        self, *args: str, stdin: str = "", check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_CONFIG"] = str(self.home / "docker-config")
        proc = subprocess.run(
            [BERTH, "-H", self.url, "compose", *args],
            cwd=cwd or self.cwd, env=env, input=stdin, capture_output=True, text=True,
            timeout=TIMEOUT, check=False,
        )  # fmt: skip
        if check:
            assert proc.returncode == 0, f"compose {args}: {proc.returncode}\n{proc.stderr}"
        return proc

    def inspect(self, name: str) -> dict[str, Any]:
        import json

        doc: dict[str, Any] = json.loads(self.docker("inspect", name).stdout)[0]
        return doc

    def names(self) -> list[str]:
        listed = self.docker("ps", "-a", "--filter", f"label=com.docker.compose.project="
                                    f"{PROJECT}", "--format", "{{.Names}}")  # fmt: skip
        return sorted(listed.stdout.split())


def _dockerd_cli(docker: dockerd.Dockerd) -> Docker:
    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = docker(*args)
        assert not check or proc.returncode == 0, f"docker {args}: {proc.stderr}"
        return proc

    return run


@pytest.fixture(scope="module", params=["berthd", "dockerd"])
def project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    """The module's project on berthd, then on a private dockerd (the same verbs against the
    reference engine)."""
    cwd = write(tmp_path_factory.mktemp("lifecycle"), COMPOSE)
    if request.param == "berthd":
        berthd: Daemon = request.getfixturevalue("berthd")
        # a container kept for the module holds berthd's cgroup parent (test_compose.daemon)
        berthd.docker("run", "-d", "--name", "lifecycle-holder", "--network", "none",
                      "busybox", "sleep", "86400")  # fmt: skip
        found = Project(berthd.url, berthd.home, berthd.docker, cwd)
        try:
            yield found
        finally:
            found.compose("down", "-v", check=False)
            berthd.docker("rm", "-f", "lifecycle-holder", check=False)
        return
    if dockerd.missing() is not None:
        pytest.skip(str(dockerd.missing()))
    with dockerd.private_dockerd(networking=True) as docker:
        _load_busybox(docker)
        docker.ok("run", "--rm", "--network", "none", "busybox", "true")  # its cgroup parent
        found = Project(f"unix://{docker.socket}", docker.home, _dockerd_cli(docker), cwd)
        try:
            yield found
        finally:
            found.compose("down", "-v", check=False)


@pytest.fixture
def up(project: Project) -> Iterator[Project]:
    project.compose("up", "-d")
    try:
        yield project
    finally:
        project.compose("down", check=False)


def started_at(p: Project, name: str) -> float:
    return parse_rfc3339(p.inspect(name)["State"]["StartedAt"])


def test_stop_then_start_keeps_containers_and_volume_data(up: Project) -> None:
    ids = {name: up.inspect(name)["Id"] for name in ("lifecycle-db-1", "lifecycle-web-1")}
    up.docker("exec", "lifecycle-db-1", "sh", "-c", "echo kept > /data/file")
    stopped = up.compose("stop", "-t", "1")
    lines = stopped.stderr.splitlines()
    web, db = (lines.index(f" Container lifecycle-{s}-1  Stopping") for s in ("web", "db"))
    assert web < db, stopped.stderr  # dependents first
    assert " Container lifecycle-db-1  Stopped" in lines
    for name in ids:
        assert up.inspect(name)["State"]["Status"] == "exited"
    started = up.compose("start")
    lines = started.stderr.splitlines()
    assert (
        lines.index(" Container lifecycle-db-1  Started")
        < lines.index(" Container lifecycle-db-1  Healthy")
        < lines.index(" Container lifecycle-web-1  Starting")
    ), started.stderr
    assert started_at(up, "lifecycle-web-1") >= started_at(up, "lifecycle-db-1") + 1
    for name, ident in ids.items():
        doc = up.inspect(name)
        assert (doc["Id"], doc["State"]["Running"]) == (ident, True)
    kept = up.docker("exec", "lifecycle-db-1", "cat", "/data/file").stdout
    assert kept == "kept\n"


def test_stop_one_service_and_start_brings_it_back(up: Project) -> None:
    up.compose("stop", "web")
    assert up.inspect("lifecycle-web-1")["State"]["Status"] == "exited"
    assert up.inspect("lifecycle-db-1")["State"]["Running"]
    again = up.compose("stop", "web")  # Compose stops it again: the daemon's 304 is fine
    assert " Container lifecycle-web-1  Stopped" in again.stderr
    started = up.compose("start", "web")
    assert " Container lifecycle-web-1  Started" in started.stderr
    assert " Container lifecycle-db-1  Starting" not in started.stderr  # it was running
    assert up.inspect("lifecycle-web-1")["State"]["Running"]


def test_p_without_a_file_works_from_the_labels(up: Project, tmp_path: Path) -> None:
    stopped = up.compose("-p", PROJECT, "stop", cwd=tmp_path)
    lines = stopped.stderr.splitlines()
    web, db = (lines.index(f" Container lifecycle-{s}-1  Stopping") for s in ("web", "db"))
    assert web < db, stopped.stderr  # the depends_on label orders them
    started = up.compose("-p", PROJECT, "start", cwd=tmp_path)
    lines = started.stderr.splitlines()
    assert lines.index(" Container lifecycle-db-1  Healthy") < lines.index(
        " Container lifecycle-web-1  Starting"
    ), started.stderr  # and carries the condition
    unknown = up.compose("-p", PROJECT, "restart", "nope", cwd=tmp_path, check=False)
    assert (unknown.returncode, unknown.stderr) == (1, "no such service: nope\n")


def test_restart_changes_started_at_and_follows_restart_dependents(up: Project) -> None:
    before = {s: started_at(up, f"lifecycle-{s}-1") for s in ("db", "web")}
    web_only = up.compose("restart", "-t", "0", "web")
    assert " Container lifecycle-web-1  Restarting" in web_only.stderr
    assert " Container lifecycle-db-1  Restarting" not in web_only.stderr
    assert started_at(up, "lifecycle-db-1") == before["db"]
    assert started_at(up, "lifecycle-web-1") > before["web"]
    middle = started_at(up, "lifecycle-web-1")
    # web depends on db with restart: true, so restarting db restarts web after it
    both = up.compose("restart", "db")
    lines = both.stderr.splitlines()
    assert lines.index(" Container lifecycle-db-1  Restarting") < lines.index(
        " Container lifecycle-web-1  Restarting"
    ), both.stderr
    assert started_at(up, "lifecycle-db-1") > before["db"]
    assert started_at(up, "lifecycle-web-1") > middle


def test_rm_asks_removes_only_stopped_and_stop_first_with_s(up: Project) -> None:
    up.compose("stop", "web")
    asked = up.compose("rm")  # stdin empty: "no", as Compose's prompt reads it
    assert asked.stdout.startswith("Going to remove lifecycle-web-1\nAre you sure? [yN] ")
    assert up.names() == ["lifecycle-db-1", "lifecycle-web-1"]
    removed = up.compose("rm", stdin="y\n")
    assert " Container lifecycle-web-1  Removed" in removed.stderr
    assert up.names() == ["lifecycle-db-1"]  # the running db stays
    assert up.compose("rm", "-f").stderr == "No stopped containers\n"
    missing = up.compose("start", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == 'service "web" has no container to start'
    forced = up.compose("rm", "-f", "-s", "db")
    assert forced.stdout == "Going to remove lifecycle-db-1\n"
    err = forced.stderr.splitlines()
    assert err.index(" Container lifecycle-db-1  Stopped") < err.index(
        " Container lifecycle-db-1  Removed"
    )
    assert up.names() == []
    volumes = up.docker("volume", "ls", "-q").stdout.split()
    assert f"{PROJECT}_data" in volumes  # a named volume is not rm's


@pytest.mark.parametrize("verb", ["stop", "start", "restart", "pull", "rm"])
def test_unknown_service_is_composes_error(project: Project, verb: str) -> None:
    proc = project.compose(verb, "nope", check=False)
    assert (proc.returncode, proc.stderr) == (1, "no such service: nope\n")


def test_bad_flag_is_a_usage_error(project: Project) -> None:
    proc = project.compose("stop", "--bogus", check=False)
    assert proc.returncode == 125, proc.stderr


PULLED = """
services:
  app:
    image: {ref}
    command: "true"
  same:
    image: {ref}
  built:
    build: ./built
  never:
    image: 127.0.0.1:1/not/there:1
    pull_policy: never
"""


def test_pull_from_a_local_registry(
    berthd: Daemon, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = Project(berthd.url, berthd.home, berthd.docker, tmp_path)
    with running(Registry(tmp_path_factory.mktemp("registry"), netns_of(berthd))) as registry:
        ref = f"{registry.host}/lifecycle/busybox:1"
        berthd.docker("tag", "busybox", ref)
        berthd.docker("push", ref)
        berthd.docker("rmi", ref)
        cwd = write(tmp_path / "pulled", PULLED.format(ref=ref))
        (cwd / "built").mkdir()
        (cwd / "built" / "Dockerfile").write_text("FROM busybox\n")
        pulled = project.compose("pull", cwd=cwd)
        err = pulled.stderr.splitlines()
        assert " built Skipped - No image to be pulled" in err
        assert " never Skipped" in err
        assert " same Skipped - Image is already being pulled by app" in err
        assert err.index(" app Pulling") < err.index(" app Pulled"), pulled.stderr
        assert berthd.docker("image", "inspect", ref, check=False).returncode == 0
        quiet = project.compose("pull", "-q", "app", cwd=cwd)
        assert (quiet.stdout, quiet.stderr) == ("", "")
        # a tag the registry does not have: exit 1 with the daemon's words, or ignored
        (cwd / "compose.yaml").write_text(
            f"services:\n  gone:\n    image: {registry.host}/lifecycle/none:1\n"
        )
        failed = project.compose("pull", cwd=cwd, check=False)
        assert failed.returncode == 1, failed.stderr
        assert " gone Error" in failed.stderr
        assert "lifecycle/none" in failed.stderr.splitlines()[-1]
        project.compose("pull", "--ignore-pull-failures", cwd=cwd)
        berthd.docker("rmi", ref)
