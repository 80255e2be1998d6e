"""``berth network``/``volume``/``port`` and run's network flags, side by side with the docker CLI.

Networks: both CLIs against one private dockerd (tests/e2e/dockerd.py: its own network, mount
and pid namespaces, ``--bridge none --iptables=false``; user bridge networks work there, and
their bridges and veths die with its namespace), because berthd's networks are not there yet.
Busybox is loaded into it from Berth's image store (nothing is pulled). Volumes: both CLIs
against that dockerd and against the shared private ``berthd`` (conftest). Every output that
both print is compared byte for byte; each test removes what it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_berthd_images import Daemon

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
TIMEOUT = 60.0


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dockerd.Dockerd]:
    with dockerd.private_dockerd() as daemon:
        home = tmp_path_factory.mktemp("busybox")
        store = ImageStore(str(home / "store"), "copy")
        base.busybox_image(store)
        tar = home / "busybox.tar"
        with open(tar, "wb") as f:
            archive.save(store, ["busybox"], f, "docker")
        daemon.ok("load", "-i", str(tar))
        # dockerd makes its --cgroup-parent with the first container: here, not inside a test
        # whose leak check would count it (the fixture's teardown removes it)
        daemon.ok("run", "--rm", "--network", "none", "busybox", "true")
        yield daemon


def berth(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BERTH_HOST", "DOCKER_HOST")}
    return subprocess.run(
        [BERTH, "-H", url, *args],
        input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True, text=True, timeout=TIMEOUT, check=False, env=env,
    )  # fmt: skip


def url_of(docker: dockerd.Dockerd) -> str:
    return f"unix://{docker.socket}"


def same(docker: dockerd.Dockerd, *args: str, code: int = 0) -> str:
    """What both CLIs print (stdout, stderr, exit code all equal) for ``args``."""
    ours, theirs = berth(url_of(docker), *args), docker(*args)
    assert (ours.stdout, ours.stderr, ours.returncode) == (
        theirs.stdout, theirs.stderr, theirs.returncode,
    ), args  # fmt: skip
    assert ours.returncode == code, ours.stderr
    return ours.stdout


def ok(docker: dockerd.Dockerd, *args: str) -> str:
    proc = berth(url_of(docker), *args)
    assert proc.returncode == 0, f"berth {args}: {proc.stderr}"
    return proc.stdout


# --------------------------------------------------------------------------- networks


def test_network_create_ls_inspect_rm(docker: dockerd.Dockerd) -> None:
    made = ok(docker, "network", "create", "--subnet", "10.31.0.0/16", "--gateway", "10.31.0.1",
              "--ip-range", "10.31.1.0/24", "--label", "team=a", "-o",
              "com.docker.network.bridge.name=berth-n1", "--internal", "--attachable",
              "net1").strip()  # fmt: skip
    ok(docker, "network", "create", "net10")
    ok(docker, "network", "create", "-d", "bridge", "--label", "team=b", "net2")
    try:
        assert len(made) == 64
        doc = json.loads(docker.ok("network", "inspect", "net1"))[0]
        assert doc["IPAM"]["Config"] == [
            {"Subnet": "10.31.0.0/16", "IPRange": "10.31.1.0/24", "Gateway": "10.31.0.1"}
        ]
        assert doc["Internal"] and doc["Attachable"] and doc["Labels"] == {"team": "a"}
        assert doc["Options"] == {"com.docker.network.bridge.name": "berth-n1"}
        listed = same(docker, "network", "ls")
        assert listed.index(" net1 ") < listed.index(" net2 ") < listed.index(" net10 ")
        for args in (["-q"], ["--no-trunc"], ["--filter", "label=team"],
                     ["--format", "{{.Name}}\t{{.Internal}}\t{{.IPv6}}\t{{.Labels}}"],
                     ["--format", "table {{.Name}}\t{{.CreatedAt}}"], ["-f", "name=net1", "-q"],
                     ["--format", "json"]):  # fmt: skip
            same(docker, "network", "ls", *args)
        same(docker, "network", "inspect", "net1", "net2")
        same(docker, "network", "inspect", "-f", "{{.Name}} {{.Driver}} {{json .Labels}}", "net1")
        same(docker, "network", "inspect", "net1", "nosuch", code=1)
        same(docker, "network", "create", "net1", code=1)  # already exists
        same(docker, "network", "create", "--gateway", "10.0.0.1", "x", code=1)
        same(docker, "network", "rm", "nosuch", code=1)
        same(docker, "network", "rm", "-f", "nosuch")
        ours = berth(url_of(docker), "network", "rm", "net10", "nosuch")
        ok(docker, "network", "create", "net10")
        theirs = docker("network", "rm", "net10", "nosuch")
        assert (ours.stdout, ours.stderr, ours.returncode) == (
            theirs.stdout, theirs.stderr, theirs.returncode,
        ) == ("net10\n", theirs.stderr, 1)  # fmt: skip
    finally:
        berth(url_of(docker), "network", "rm", "net1", "net2", "net10")
    assert "net1" not in docker.ok("network", "ls", "--format", "{{.Name}}").split()


def test_run_network_flags_connect_disconnect_and_port(docker: dockerd.Dockerd) -> None:
    url = url_of(docker)
    ok(docker, "network", "create", "--subnet", "10.32.0.0/24", "front")
    ok(docker, "network", "create", "back")
    try:
        cid = ok(docker, "run", "-d", "--name", "web", "--network", "front", "--network-alias",
                 "site", "--ip", "10.32.0.9", "-p", "8080:80", "-p", "9000-9001:7000-7001/udp",
                 "--expose", "3000-3001", "--dns", "10.32.0.53", "--dns-search", "example.com",
                 "--dns-option", "ndots:2", "--add-host", "db:10.32.0.7", "--hostname", "webhost",
                 "busybox", "sleep", "60").strip()  # fmt: skip
        doc = json.loads(docker.ok("inspect", cid))[0]
        host = doc["HostConfig"]
        assert host["PortBindings"]["80/tcp"] == [{"HostIp": "", "HostPort": "8080"}]
        assert host["PortBindings"]["7001/udp"] == [{"HostIp": "", "HostPort": "9001"}]
        assert (host["Dns"], host["DnsSearch"], host["DnsOptions"], host["ExtraHosts"]) == (
            ["10.32.0.53"], ["example.com"], ["ndots:2"], ["db:10.32.0.7"],
        )  # fmt: skip
        assert set(doc["Config"]["ExposedPorts"]) == {"80/tcp", "3000/tcp", "3001/tcp",
                                                      "7000/udp", "7001/udp"}  # fmt: skip
        front = doc["NetworkSettings"]["Networks"]["front"]
        assert front["IPAddress"] == "10.32.0.9" and "site" in front["Aliases"]
        inside = docker.ok("exec", cid, "sh", "-c", "cat /etc/resolv.conf /etc/hosts; hostname")
        assert "search example.com" in inside  # the server is the embedded DNS on a user network
        assert "options ndots:2" in inside and "10.32.0.7\tdb" in inside
        assert inside.endswith("webhost\n")
        # ps PORTS, port and the network column, from a real daemon's answers
        same(docker, "ps", "--format", "{{.Names}}\t{{.Ports}}\t{{.Networks}}")
        # the default table but its time columns (they move between the two calls)
        same(
            docker,
            "ps",
            "--format",
            "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.Ports}}\t{{.Names}}",
        )
        for args in ([], ["80"], ["80/tcp"], ["7000/udp"], ["3000"], ["x"]):
            same(docker, "port", "web", *args, code=1 if args in (["3000"], ["x"]) else 0)
        same(docker, "container", "port", "web")
        # connect with an alias and an address, then disconnect
        ok(docker, "network", "connect", "--alias", "api", "--alias", "v2", "back", "web")
        networks = json.loads(docker.ok("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                        cid))  # fmt: skip
        assert {"api", "v2"} <= set(networks["back"]["Aliases"])
        same(docker, "network", "connect", "back", "web", code=1)  # already connected
        same(docker, "network", "inspect", "-f", "{{range .Containers}}{{.Name}}{{end}}", "back")
        ok(docker, "network", "disconnect", "back", "web")
        assert "back" not in docker.ok("inspect", "-f", "{{json .NetworkSettings.Networks}}", cid)
        same(docker, "network", "disconnect", "back", "web", code=1)  # not connected
        same(docker, "network", "rm", "front", code=1)  # in use
        bad = berth(url, "run", "--rm", "--network-alias", "x", "busybox", "true")
        assert bad.returncode == 125
        assert "network-scoped aliases are only supported for user-defined networks" in bad.stderr
    finally:
        docker("rm", "-f", "web")
        ok(docker, "network", "rm", "front", "back")


def test_network_prune(docker: dockerd.Dockerd) -> None:
    for cli in ("berth", "docker"):
        docker.ok("network", "create", "--label", "gone=yes", "unused1")
        docker.ok("network", "create", "kept")
        args = ("network", "prune", "-f", "--filter", "label=gone")
        out = ok(docker, *args) if cli == "berth" else docker.ok(*args)
        assert out == "Deleted Networks:\nunused1\n\n"
        names = docker.ok("network", "ls", "--format", "{{.Name}}").split()
        assert "unused1" not in names and "kept" in names
        docker.ok("network", "rm", "kept")
    assert same(docker, "network", "prune", "-f") == ""
    asked = berth(url_of(docker), "network", "prune", stdin="n\n")
    assert asked.returncode == 0
    assert asked.stdout == (
        "WARNING! This will remove all custom networks not used by at least one container.\n"
        "Are you sure you want to continue? [y/N] "
    )


def test_a_none_container_answers_as_dockerds(docker: dockerd.Dockerd, berthd: Daemon) -> None:
    """A running ``--network none`` container on dockerd and on berthd alike: lo only, connect
    refused in the same words, the same networks in inspect, stats' NET I/O, and a
    ``container:<id>`` that joins it sees its lo only."""
    clis: dict[str, DockerCli] = {
        "dockerd": docker, "berthd": lambda *args: berthd.docker(*args, check=False),
    }  # fmt: skip
    seen = {}
    for daemon, cli in clis.items():
        box = cli("run", "-d", "--name", "nonebox", "--network", "none", "busybox", "sleep", "30")
        assert box.returncode == 0, box.stderr
        assert cli("network", "create", "nonenet").returncode == 0
        try:
            inside = cli("exec", "nonebox", "cat", "/proc/net/dev").stdout.splitlines()[2:]
            joined = cli("run", "--rm", "--network", "container:nonebox", "busybox",
                         "cat", "/proc/net/dev").stdout.splitlines()[2:]  # fmt: skip
            connect = [cli("network", "connect", net, "nonebox") for net in ("nonenet", "none")]
            doc = json.loads(cli("inspect", "nonebox").stdout)[0]
            seen[daemon] = (
                [line.split(":")[0].strip() for line in inside + joined],
                [(c.returncode, c.stderr) for c in connect],
                sorted(doc["NetworkSettings"]["Networks"]),
                doc["NetworkSettings"]["IPAddress"],
                cli("stats", "--no-stream", "--format", "{{.NetIO}}", "nonebox").stdout,
            )
        finally:
            cli("rm", "-f", "nonebox")
            cli("network", "rm", "nonenet")
    assert seen["berthd"] == seen["dockerd"]
    assert seen["berthd"][0] == ["lo", "lo"]


# --------------------------------------------------------------------------- volumes


DockerCli = Callable[..., subprocess.CompletedProcess[str]]


def test_volume_verbs_on_dockerd(docker: dockerd.Dockerd) -> None:
    volume_verbs("dockerd", url_of(docker), docker)


def test_volume_verbs_on_berthd(berthd: Daemon) -> None:
    volume_verbs("berthd", berthd.url, lambda *args: berthd.docker(*args, check=False))


def volume_verbs(daemon: str, url: str, cli: DockerCli) -> None:
    def both(*args: str, code: int = 0) -> str:
        ours, theirs = berth(url, *args), cli(*args)
        assert (ours.stdout, ours.stderr, ours.returncode) == (
            theirs.stdout, theirs.stderr, theirs.returncode,
        ), args  # fmt: skip
        assert ours.returncode == code, ours.stderr
        return ours.stdout

    assert berth(url, "volume", "create", "--label", "team=a", "vol10").stdout == "vol10\n"
    assert berth(url, "volume", "create", "vol2").stdout == "vol2\n"
    anon = berth(url, "volume", "create").stdout.strip()
    try:
        assert len(anon) == 64
        listed = both("volume", "ls")
        assert listed.index("vol2") < listed.index("vol10")
        for args in (["-q"], ["--filter", "label=team=a"], ["--format", "json"],
                     ["--format", "{{.Name}} {{.Driver}} {{.Labels}} {{.Scope}}"],
                     ["--format", "table {{.Name}}\t{{.Mountpoint}}"]):  # fmt: skip
            both("volume", "ls", *args)
        both("volume", "inspect", "vol10", "vol2")
        both("volume", "inspect", "-f", "{{.Name}} {{.Labels}}", "vol10")
        both("volume", "inspect", "vol2", "nosuch", code=1)
        both("volume", "rm", "nosuch", code=1)
        both("volume", "rm", "-f", "nosuch")
        both("volume", "create", "bad/name", code=1)
        both("volume", "create", "--name", "a", "b", code=1)
        if daemon == "dockerd":  # API 1.41: prune takes named volumes too, and knows no "all"
            assert berth(url, "volume", "rm", "vol10").stdout == "vol10\n"
            pruned = berth(url, "volume", "prune", "-f").stdout.splitlines()
            assert sorted(pruned) == sorted(["Deleted Volumes:", "vol2", anon, "",
                                             "Total reclaimed space: 0B"])  # fmt: skip
            return
        pruned = berth(url, "volume", "prune", "-f")
        assert pruned.stdout == f"Deleted Volumes:\n{anon}\n\nTotal reclaimed space: 0B\n"
        assert both("volume", "prune", "-f") == "Total reclaimed space: 0B\n"
        asked = berth(url, "volume", "prune", "-a", stdin="n\n")
        assert asked.returncode == 0 and asked.stdout.startswith(
            "WARNING! This will remove all local volumes not used by at least one container.\n"
        )
        pruned_all = berth(url, "volume", "prune", "-a", "-f", "--filter", "label=team=a")
        assert pruned_all.stdout == "Deleted Volumes:\nvol10\n\nTotal reclaimed space: 0B\n"
        assert berth(url, "volume", "rm", "vol2").stdout == "vol2\n"
    finally:
        berth(url, "volume", "rm", "-f", "vol10", "vol2", anon)
