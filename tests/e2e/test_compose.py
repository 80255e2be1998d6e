"""``berth compose`` end to end: the example app and small projects against a real daemon.

The daemon is a fixture parameter: a private dockerd with bridge networking (tests/e2e/
dockerd.py, ``networking=True``: user networks, the embedded DNS and published ports, all in
its own network namespace), and conftest's private berthd (in a network namespace of its
own too). The published ports are reached from inside the daemon's network namespace
(nsenter), never from the host's. Busybox is loaded into dockerd from Berth's own store,
made locally by berthd (nothing is pulled from a registry).

Module scope: one daemon. The example app is built and brought up once, in one test that
checks it step by step (ps, requests, logs and exec, scale, down and up again, down -v).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from berth.cli.render import parse_rfc3339
from berth.image import archive, base
from berth.image.store import ImageStore

sys.path.insert(0, str(Path(__file__).parent))
import dockerd  # tests/e2e/dockerd.py, a fixture module

pytestmark = [
    pytest.mark.root,
    pytest.mark.peer,
    pytest.mark.skipif(dockerd.missing() is not None, reason=str(dockerd.missing())),
]

BERTH = str(Path(sys.executable).parent / "berth")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "compose-app"
PROJECT = "compose-app"
TIMEOUT = 180


@dataclass
class Daemon:
    """What the compose tests need of a daemon."""

    kind: str
    url: str  # unix://…
    netns: str  # /proc/<pid>/ns/net of the namespace its published ports live in
    docker: Callable[..., subprocess.CompletedProcess[str]]  # the docker CLI against it

    def json(self, *args: str) -> Any:
        proc = self.docker(*args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def _load_busybox(docker: dockerd.Dockerd) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = ImageStore(f"{tmp}/store", "copy")
        base.busybox_image(store)
        with open(f"{tmp}/busybox.tar", "wb") as f:
            archive.save(store, ["busybox"], f, "docker")
        docker.ok("load", "-i", f"{tmp}/busybox.tar")


@pytest.fixture(scope="module", params=["dockerd", "berthd"])
def daemon(request: pytest.FixtureRequest) -> Iterator[Daemon]:
    if request.param == "berthd":  # conftest's private berthd in its own netns, busybox pulled
        berthd = request.getfixturevalue("berthd")
        # berthd removes its cgroup parent with the container that made it, if it is empty
        # by then: a container made first and kept for the module holds it, so the parent
        # is neither made nor left behind inside a test (the per-test leak check)
        berthd.docker("run", "-d", "--name", "compose-tests-holder", "--network", "none",
                      "busybox", "sleep", "86400")  # fmt: skip
        try:
            yield Daemon("berthd", berthd.url, f"/proc/{berthd.proc.pid}/ns/net",
                         lambda *a: berthd.docker(*a, check=False))  # fmt: skip
        finally:
            berthd.docker("rm", "-f", "compose-tests-holder", check=False)
        return
    with dockerd.private_dockerd(networking=True) as docker:
        _load_busybox(docker)
        # dockerd makes its cgroup parent with the first container: one throw-away run, so it
        # exists before the tests' leak-check snapshots (it goes with the daemon)
        docker.ok("run", "--rm", "--network", "none", "busybox", "true")
        yield Daemon("dockerd", f"unix://{docker.socket}", docker.netns_path, docker)


def compose(
    daemon: Daemon,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [BERTH, "-H", daemon.url, "compose", *args],
        cwd=cwd or EXAMPLE,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if check:
        assert proc.returncode == 0, (
            f"compose {args}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
        )
    return proc


def http(daemon: Daemon, port: int, path: str, method: str = "GET") -> tuple[int, str]:
    """A request from inside the daemon's network namespace to one of its published ports."""
    code = (
        "import sys, urllib.request, urllib.error\n"
        "req = urllib.request.Request(sys.argv[1], method=sys.argv[2],"
        " data=b'' if sys.argv[2] == 'POST' else None)\n"
        "try:\n"
        "    r = urllib.request.urlopen(req, timeout=20)\n"
        "    print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    url = f"http://127.0.0.1:{port}{path}"
    proc = subprocess.run(
        ["nsenter", f"--net={daemon.netns}", sys.executable, "-I", "-c", code, url, method],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status, _, body = proc.stdout.partition("\n")
    return int(status), body


def project_objects(daemon: Daemon, project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        "containers": daemon.docker("ps", "-aq", "--filter", label).stdout.split(),
        "networks": daemon.docker("network", "ls", "-q", "--filter", label).stdout.split(),
        "volumes": daemon.docker("volume", "ls", "-q", "--filter", label).stdout.split(),
    }


def inspect(daemon: Daemon, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = daemon.json("inspect", name)[0]
    return doc


# ------------------------------------------------------------------ the example app


def check_up_wait_starts_in_dependency_order_with_limits(example: Daemon) -> None:
    states = {s: inspect(example, f"{PROJECT}-{s}-1") for s in ("kv", "api", "web")}
    for service, doc in states.items():
        assert doc["State"]["Health"]["Status"] == "healthy"
        labels = doc["Config"]["Labels"]
        assert labels["com.docker.compose.project"] == PROJECT
        assert labels["com.docker.compose.service"] == service
        assert labels["com.docker.compose.container-number"] == "1"
        assert labels["com.docker.compose.oneoff"] == "False"
        assert labels["com.docker.compose.project.working_dir"] == str(EXAMPLE)
        assert labels["com.docker.compose.project.config_files"] == str(EXAMPLE / "compose.yaml")
        assert len(labels["com.docker.compose.config-hash"]) == 64
        host = doc["HostConfig"]
        assert (host["Memory"], host["PidsLimit"]) == (32 << 20, 64)
        assert host["NanoCpus"] in (250_000_000, 500_000_000)
    # each started only once what it depends on was healthy
    started = {s: parse_rfc3339(d["State"]["StartedAt"]) for s, d in states.items()}
    assert started["kv"] < started["api"] < started["web"]
    networks = states["api"]["NetworkSettings"]["Networks"]
    assert set(networks) == {f"{PROJECT}_front", f"{PROJECT}_back"}
    assert "api" in networks[f"{PROJECT}_back"]["Aliases"]
    assert set(states["web"]["NetworkSettings"]["Networks"]) == {f"{PROJECT}_front"}
    network = example.json("network", "inspect", f"{PROJECT}_front")[0]["Labels"]
    assert network["com.docker.compose.network"] == "front"
    assert network["com.docker.compose.project"] == PROJECT
    volume = example.json("volume", "inspect", f"{PROJECT}_kvdata")[0]["Labels"]
    assert volume["com.docker.compose.volume"] == "kvdata"
    assert volume["com.docker.compose.project"] == PROJECT
    # build: the service's image, tagged <project>-<service>
    built = compose(example, "build", "-q", "web").stdout.split()[-1]
    assert built == example.json("image", "inspect", f"{PROJECT}-web")[0]["Id"]


def check_ps_prints_composes_table(example: Daemon) -> None:
    lines = compose(example, "ps").stdout.splitlines()
    assert lines[0].split() == ["NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS",
                                "PORTS"]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[1:]}
    assert sorted(rows) == [f"{PROJECT}-api-1", f"{PROJECT}-kv-1", f"{PROJECT}-web-1"]
    assert "(healthy)" in rows[f"{PROJECT}-kv-1"]
    assert "0.0.0.0:8080->80/tcp" in rows[f"{PROJECT}-web-1"]
    assert compose(example, "ps", "--services").stdout.split() == ["api", "kv", "web"]
    rows_json = [json.loads(line) for line in compose(example, "ps", "--format", "json").stdout
                 .splitlines()]  # fmt: skip
    assert {r["Service"]: r["Health"] for r in rows_json} == dict.fromkeys(
        ("api", "kv", "web"), "healthy"
    )


def check_services_reach_each_other_by_name(example: Daemon) -> None:
    first = http(example, 8080, "/cgi-bin/visit")
    second = http(example, 8080, "/cgi-bin/visit")
    assert first[0] == second[0] == 200, (first, second)
    numbers = [int(body.split("Visit number ")[1].split("<")[0]) for _, body in (first, second)]
    assert numbers[1] == numbers[0] + 1
    assert http(example, 8080, "/")[1].count("Berth compose app") == 2
    # web and kv share no network: kv's name does not even resolve there
    probe = compose(example, "exec", "-T", "web", "sh", "-c", "nc -w 2 kv 7000 </dev/null",
                    check=False)  # fmt: skip
    assert probe.returncode != 0
    request = "POST /cgi-bin/kv?colour HTTP/1.0\\r\\nContent-Length: 4\\r\\n\\r\\nblue"
    stored = compose(example, "exec", "-T", "api", "sh", "-c",
                     f"printf '{request}' | nc -w 5 kv 7000")  # fmt: skip
    assert stored.stdout.startswith("HTTP/1.") and "blue" in stored.stdout


def check_logs_and_exec(example: Daemon) -> None:
    http(example, 8080, "/cgi-bin/visit")
    logs = compose(example, "logs", "kv", "api").stdout.splitlines()
    assert "kv-1  | POST visits&incr -> 200 OK" in logs
    assert "api-1 | POST /cgi-bin/visit -> 200 OK" in logs
    assert all(line.startswith(("kv-1  | ", "api-1 | ")) for line in logs)
    bare = compose(example, "logs", "--no-log-prefix", "--tail", "1", "kv").stdout
    assert bare.startswith("POST ") and bare.count("\n") == 1
    count = compose(example, "exec", "-T", "kv", "cat", "/data/visits").stdout
    assert int(count) >= 3
    assert compose(example, "exec", "-T", "kv", "sh", "-c", "exit 3", check=False).returncode == 3
    env = compose(example, "exec", "-T", "-e", "X=y", "-w", "/data", "kv", "sh", "-c",
                  'echo "$X $(pwd) $KV_HOST"').stdout  # fmt: skip
    assert env == "y /data \n"


def check_scale_up_and_back_down(example: Daemon) -> None:
    before = inspect(example, f"{PROJECT}-api-1")["Id"]
    compose(example, "up", "-d", "--wait", "--scale", "api=2")
    second = inspect(example, f"{PROJECT}-api-2")
    assert second["Config"]["Labels"]["com.docker.compose.container-number"] == "2"
    assert "api" in second["NetworkSettings"]["Networks"][f"{PROJECT}_front"]["Aliases"]
    assert inspect(example, f"{PROJECT}-api-1")["Id"] == before  # unchanged: left alone
    assert http(example, 8080, "/cgi-bin/visit")[0] == 200
    compose(example, "up", "-d", "--wait")
    names = example.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert f"{PROJECT}-api-2" not in names
    assert inspect(example, f"{PROJECT}-api-1")["Id"] == before


def check_down_keeps_the_volume_and_down_v_leaves_nothing(example: Daemon) -> None:
    count = int(compose(example, "exec", "-T", "kv", "cat", "/data/visits").stdout)
    down = compose(example, "down")
    assert " Network compose-app_front  Removed" in down.stderr
    left = project_objects(example, PROJECT)
    assert left == {"containers": [], "networks": [], "volumes": [f"{PROJECT}_kvdata"]}
    compose(example, "up", "-d", "--wait")
    status, body = http(example, 8080, "/cgi-bin/visit")
    assert status == 200 and f"Visit number {count + 1}<" in body
    compose(example, "down", "-v", "--rmi", "local")
    assert project_objects(example, PROJECT) == {"containers": [], "networks": [], "volumes": []}
    images = example.docker("images", "--format", "{{.Repository}}").stdout.split()
    assert not [i for i in images if i.startswith(f"{PROJECT}-")]


def test_example_app(daemon: Daemon) -> None:
    """The example app's life, one check after another (one test: its healthchecks run a
    probe a second, which the per-test leak check would catch between tests)."""
    up = compose(daemon, "up", "-d", "--wait")
    assert " Container compose-app-web-1  Started" in up.stderr
    try:
        check_up_wait_starts_in_dependency_order_with_limits(daemon)
        check_ps_prints_composes_table(daemon)
        check_services_reach_each_other_by_name(daemon)
        check_logs_and_exec(daemon)
        check_scale_up_and_back_down(daemon)
        check_down_keeps_the_volume_and_down_v_leaves_nothing(daemon)
    finally:
        compose(daemon, "down", "-v", "--rmi", "local", check=False)


# ------------------------------------------------------------------ small projects


def write_project(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compose.yaml").write_text(textwrap.dedent(text))
    return directory


ORDERING = """
services:
  slow:
    image: busybox
    command: sh -c "sleep 2; touch /tmp/ready; exec sleep 600"
    stop_signal: SIGKILL
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 300ms
      retries: 50
  once:
    image: busybox
    command: sh -c "sleep 1; exit ${ONCE_EXIT:-0}"
  last:
    image: busybox
    command: sleep 600
    stop_signal: SIGKILL
    depends_on:
      slow: {condition: service_healthy}
      once: {condition: service_completed_successfully}
"""


def test_depends_on_conditions(daemon: Daemon, tmp_path: Path) -> None:
    cwd = write_project(tmp_path / "order", ORDERING)
    try:
        compose(daemon, "up", "-d", cwd=cwd)
        slow, once, last = (inspect(daemon, f"order-{s}-1")["State"] for s in
                            ("slow", "once", "last"))  # fmt: skip
        assert parse_rfc3339(last["StartedAt"]) >= parse_rfc3339(slow["StartedAt"]) + 2
        assert parse_rfc3339(last["StartedAt"]) >= parse_rfc3339(once["FinishedAt"])
        assert once["ExitCode"] == 0
        compose(daemon, "down", cwd=cwd)
        failed = compose(daemon, "up", "-d", cwd=cwd, env={"ONCE_EXIT": "4"}, check=False)
        assert failed.returncode == 1
        assert "service once didn't complete successfully: exit 4" in failed.stderr
        names = daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert "order-last-1" not in names  # never created
    finally:
        compose(daemon, "down", cwd=cwd, check=False)
    assert project_objects(daemon, "order") == {"containers": [], "networks": [], "volumes": []}


CHANGING = """
services:
  greeter:
    image: busybox
    command: sleep 600
    stop_signal: SIGKILL
    environment:
      GREETING: ${GREETING:-hello}
"""


def test_changed_config_recreates_and_same_config_does_not(daemon: Daemon, tmp_path: Path) -> None:
    cwd = write_project(tmp_path / "hash", CHANGING)
    try:
        compose(daemon, "up", "-d", cwd=cwd)
        first = inspect(daemon, "hash-greeter-1")["Id"]
        again = compose(daemon, "up", "-d", cwd=cwd)
        assert "Recreate" not in again.stderr
        assert inspect(daemon, "hash-greeter-1")["Id"] == first
        changed = compose(daemon, "up", "-d", cwd=cwd, env={"GREETING": "bonjour"})
        assert " Container hash-greeter-1  Recreate" in changed.stderr
        doc = inspect(daemon, "hash-greeter-1")
        assert doc["Id"] != first
        assert "GREETING=bonjour" in doc["Config"]["Env"]
        # the service renamed: the old container is an orphan, reported, then removed
        (cwd / "compose.yaml").write_text(textwrap.dedent(CHANGING).replace("greeter", "host"))
        renamed = compose(daemon, "up", "-d", cwd=cwd)
        assert "Found orphan containers ([hash-greeter-1])" in renamed.stderr
        compose(daemon, "up", "-d", "--remove-orphans", cwd=cwd)
        names = daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert "hash-greeter-1" not in names and "hash-host-1" in names
    finally:
        compose(daemon, "down", cwd=cwd, check=False)


ATTACHED = """
services:
  ticker:
    image: busybox
    command: sh -c 'trap "exit 0" TERM; while :; do echo tick; sleep 0.2; done'
"""


def _popen(daemon: Daemon, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [BERTH, "-H", daemon.url, "compose", *args], cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_logs_follow_ends_with_the_containers(daemon: Daemon, tmp_path: Path) -> None:
    cwd = write_project(tmp_path / "follow", ATTACHED)
    compose(daemon, "up", "-d", "--scale", "ticker=2", cwd=cwd)
    follow = _popen(daemon, cwd, "logs", "-f", "--tail", "0")
    try:
        assert follow.stdout is not None
        seen = {follow.stdout.readline()[:11] for _ in range(6)}
        assert seen == {"ticker-1 | ", "ticker-2 | "}
        compose(daemon, "down", cwd=cwd)
        _, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        compose(daemon, "down", cwd=cwd, check=False)


def test_attached_up_prefixes_logs_and_ctrl_c_stops(daemon: Daemon, tmp_path: Path) -> None:
    cwd = write_project(tmp_path / "attached", ATTACHED)
    proc = _popen(daemon, cwd, "up")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "Attaching to ticker-1\n"
        assert proc.stdout.readline() == "ticker-1 | tick\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Gracefully stopping..." in err
        assert " Container attached-ticker-1  Stopped" in err
        state = inspect(daemon, "attached-ticker-1")["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)  # it took the SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        compose(daemon, "down", cwd=cwd, check=False)


def test_bad_file_is_refused_before_anything_is_made(daemon: Daemon, tmp_path: Path) -> None:
    cwd = write_project(
        tmp_path / "bad",
        "services:\n  ok:\n    image: busybox\n  web:\n    image: busybox\n"
        "    ports: ['80:http']\n",
    )
    proc = compose(daemon, "up", "-d", cwd=cwd, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f'{cwd}/compose.yaml: services.web.ports[0]: invalid port "80:http"'
    )
    assert project_objects(daemon, "bad") == {"containers": [], "networks": [], "volumes": []}
    usage = compose(daemon, "up", "--bogus", cwd=cwd, check=False)
    assert usage.returncode == 125


NO_NETWORK = """
services:
  store:
    image: busybox
    network_mode: none
    command: sh -c 'trap "exit 0" TERM; while :; do sleep 0.2; done'
    volumes: [data:/data]
    mem_limit: 16m
    pids_limit: 16
    healthcheck:
      test: ["CMD-SHELL", "echo ready >/data/flag"]
      interval: 500ms
      retries: 20
  reader:
    image: busybox
    network_mode: none
    command: sh -c 'trap "exit 0" TERM; cat /data/flag; while :; do sleep 0.2; done'
    volumes: ["data:/data:ro"]
    depends_on:
      store: {condition: service_healthy}
volumes:
  data:
"""


def test_project_without_networks(daemon: Daemon, tmp_path: Path) -> None:
    """network_mode none: volumes, healthcheck-gated order, limits, -p down by labels."""
    cwd = write_project(tmp_path / "nonet", NO_NETWORK)
    try:
        compose(daemon, "up", "-d", "--wait", cwd=cwd)
        rows = compose(daemon, "ps", cwd=cwd).stdout.splitlines()[1:]
        assert [r.split()[0] for r in rows] == ["nonet-reader-1", "nonet-store-1"]
        # reader started once store was healthy: the flag its healthcheck wrote was there
        assert compose(daemon, "logs", "reader", cwd=cwd).stdout == "reader-1 | ready\n"
        assert compose(daemon, "exec", "-T", "store", "cat", "/data/flag", cwd=cwd).stdout == (
            "ready\n"
        )
        again = compose(daemon, "up", "-d", "--wait", cwd=cwd)  # nothing changed: left alone
        assert (
            "Recreate" not in again.stderr and " Container nonet-store-1  Running" in again.stderr
        )
        store = inspect(daemon, "nonet-store-1")
        assert (store["HostConfig"]["Memory"], store["HostConfig"]["PidsLimit"]) == (16 << 20, 16)
        assert store["Config"]["Labels"]["com.docker.compose.service"] == "store"
        # -p and no compose file: down finds the project by its labels
        down = compose(daemon, "-p", "nonet", "down", "-v", "-t", "1", cwd=tmp_path)
        assert " Volume nonet_data  Removed" in down.stderr
        assert project_objects(daemon, "nonet") == {"containers": [], "networks": [],
                                                    "volumes": []}  # fmt: skip
    finally:
        compose(daemon, "down", "-v", cwd=cwd, check=False)
