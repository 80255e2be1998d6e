"""``berth`` and the docker CLI side by side against one recording fake daemon.

What each sends for the network, volume and port flags is compared (the create bodies with
zero values left out on both sides: the docker CLI sends every field, berth only what was
asked); what each prints from the same canned answers (``ps`` PORTS, ``network ls``,
``volume ls``, ``port``) is compared byte for byte. No root, no real daemon; skipped where the
docker CLI is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_daemon import FakeDaemon

DOCKER = shutil.which("docker")
BERTH = str(Path(sys.executable).parent / "berth")
pytestmark = pytest.mark.skipif(DOCKER is None, reason="the docker CLI is not installed")

CREATED = "2026-11-26T21:50:07.123456700Z"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeDaemon]:
    home = Path(tempfile.mkdtemp(prefix="berth-fake-"))
    daemon = FakeDaemon(home / "d.sock")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(home)


def run(fake: FakeDaemon, cli: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "BERTH_"))}
    env["DOCKER_CONFIG"] = str(fake.socket_path.parent / "docker-config")
    env["DOCKER_CLI_HINTS"] = "false"
    program = DOCKER if cli == "docker" else BERTH
    assert program is not None
    return subprocess.run(
        [program, "-H", fake.url, *args],
        capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip


def meaningful(value: Any) -> Any:
    """``value`` without Go's zero values (empty strings, maps, lists, false, 0, null)."""
    if isinstance(value, dict):
        kept = {k: meaningful(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", {}, [], False, 0)}
    if isinstance(value, list):
        return [meaningful(v) for v in value]
    return value


def sent_body(fake: FakeDaemon, cli: str, path: str, *args: str) -> Any:
    fake.requests.clear()
    proc = run(fake, cli, *args)
    assert proc.returncode == 0, f"{cli} {args}: {proc.stderr}"
    (request,) = fake.sent("POST", path)
    return request.body


NETWORK_FIELDS = ("ExposedPorts", "Hostname", "NetworkingConfig")
HOST_FIELDS = ("NetworkMode", "PortBindings", "PublishAllPorts", "Dns", "DnsSearch",
               "DnsOptions", "ExtraHosts")  # fmt: skip


def network_part(body: dict[str, Any]) -> Any:
    host = body.get("HostConfig") or {}
    part = {k: body.get(k) for k in NETWORK_FIELDS} | {k: host.get(k) for k in HOST_FIELDS}
    normal = meaningful(part)
    if normal.get("NetworkMode") == "default":  # the daemon's default: berth leaves it out
        del normal["NetworkMode"]
    return normal


CREATE_CASES = [
    ["-p", "8080:80"],
    ["-p", "127.0.0.1:9000-9001:7000-7001/udp", "-p", "80", "-P"],
    ["-p", "8000-8010:80", "-p", "127.0.0.1::81", "-p", "[::1]:82:82/sctp", "-p", "0:83"],
    ["--publish", "published=8080,target=80,protocol=udp"],
    ["--expose", "3000", "--expose", "4000-4002/udp", "-p", "4001:4001/udp"],
    ["--dns", "1.1.1.1", "--dns", "2001:db8::1", "--dns-search", "example.com",
     "--dns-option", "ndots:2", "--add-host", "h:1.2.3.4", "--add-host", "v6=[2001:db8::2]",
     "--add-host", "gw:host-gateway"],
    ["--network", "n1", "--network-alias", "web", "--network-alias", "www", "--ip", "10.9.0.9",
     "--ip6", "fd00::9", "--hostname", "hh"],
    ["--network", "n1"],
    ["--net", "host"],
    ["--ip", "10.0.0.7"],
    ["--network", "n1", "--network", "n2", "--network-alias", "a"],
]  # fmt: skip


@pytest.mark.parametrize("flags", CREATE_CASES, ids=" ".join)
def test_create_sends_what_docker_sends(fake: FakeDaemon, flags: list[str]) -> None:
    fake.replies[("POST", "/containers/create")] = (201, {"Id": "b" * 64, "Warnings": []})
    theirs = sent_body(fake, "docker", "/containers/create", "create", *flags, "busybox")
    ours = sent_body(fake, "berth", "/containers/create", "create", *flags, "busybox")
    assert network_part(ours) == network_part(theirs)


BAD_CREATE = [
    (["-p", "abc"], "invalid containerPort: abc"),
    (["-p", "80/xyz"], "invalid proto: xyz"),
    (["-p", "1-2:3-5"], "invalid ranges specified for container and host Ports: 3-5 and 1-2"),
    (["-p", "70000"], "invalid containerPort: 70000"),
    (["-p", "1.2.3:80:80"], "invalid IP address: 1.2.3"),
    (["-p", "x:80"], "invalid hostPort: x"),
    (["--expose", "x"], 'invalid range format for --expose: x, error: strconv.ParseUint: '
                        'parsing "x": invalid syntax'),
    (["--expose", "80-70"], "invalid range format for --expose: 80-70, error: invalid range "
                            "specified for port: 80-70"),
    (["--expose", "1:2"], "invalid port format for --expose: 1:2"),
    (["--network-alias", "x"], "network-scoped aliases are only supported for user-defined "
                               "networks"),
    (["--add-host", "bad"], 'bad format for add-host: "bad"'),
    (["--add-host", "h:nope"], 'invalid IP address in add-host: "nope"'),
    (["--dns", "bad"], "IP address is not correctly formatted: bad"),
    (["--dns-search", "a..b"], "a..b is not a valid domain"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "reason"), BAD_CREATE, ids=str)
def test_bad_flags_are_refused_like_docker(fake: FakeDaemon, flags: list[str], reason: str) -> None:
    for cli in ("docker", "berth"):
        fake.requests.clear()
        proc = run(fake, cli, "create", *flags, "busybox")
        assert proc.returncode == 125, (cli, proc.stderr)
        assert reason in proc.stderr, (cli, proc.stderr)
        assert fake.requests == [], "nothing may be sent"


NETWORK_CREATES = [
    ["n1"],
    ["-d", "bridge", "--subnet", "10.9.0.0/16", "--gateway", "10.9.0.1", "--ip-range",
     "10.9.1.0/24", "--internal", "--label", "a=b", "--label", "c", "-o",
     "com.docker.network.bridge.name=br9", "--attachable", "n2"],
    ["--subnet", "10.1.0.0/24", "--subnet", "10.2.0.0/24", "--gateway", "10.2.0.254",
     "--aux-address", "host=10.1.0.5", "--ipam-opt", "x=y", "--ipv6", "n3"],
]  # fmt: skip


def _ipam_sorted(body: dict[str, Any]) -> dict[str, Any]:
    configs = body["IPAM"]["Config"]  # a Go map's order on the docker side
    return body | {"IPAM": body["IPAM"] | {"Config": sorted(configs, key=str)}}


@pytest.mark.parametrize("flags", NETWORK_CREATES, ids=" ".join)
def test_network_create_sends_what_docker_sends(fake: FakeDaemon, flags: list[str]) -> None:
    fake.replies[("POST", "/networks/create")] = (201, {"Id": "a" * 64, "Warning": ""})
    theirs = sent_body(fake, "docker", "/networks/create", "network", "create", *flags)
    ours = sent_body(fake, "berth", "/networks/create", "network", "create", *flags)
    assert _ipam_sorted(ours) == _ipam_sorted(theirs)
    assert run(fake, "berth", "network", "create", *flags).stdout == "a" * 64 + "\n"


BAD_NETWORK_CREATES = [
    (["--gateway", "10.0.0.1", "n"], "every ip-range or gateway must have a corresponding subnet"),
    (["--subnet", "10.0.0.0/16", "--subnet", "10.0.1.0/24", "n"],
     "multiple overlapping subnet configuration is not supported"),
    (["--subnet", "10.0.0.0/16", "--gateway", "10.1.0.1", "n"],
     "no matching subnet for gateway 10.1.0.1"),
    (["--subnet", "10.0.0.0/16", "--ip-range", "10.1.0.0/24", "n"],
     "no matching subnet for range 10.1.0.0/24"),
]  # fmt: skip


@pytest.mark.parametrize(("flags", "reason"), BAD_NETWORK_CREATES, ids=str)
def test_bad_network_create_is_refused_like_docker(
    fake: FakeDaemon, flags: list[str], reason: str
) -> None:
    results = []
    for cli in ("docker", "berth"):
        fake.requests.clear()
        proc = run(fake, cli, "network", "create", *flags)
        assert fake.requests == [], "nothing may be sent"
        results.append((proc.returncode, proc.stderr))
    assert results[0] == results[1] == (1, reason + "\n")


@pytest.mark.parametrize(
    "args",
    [["connect", "--alias", "x", "--alias", "y,z", "--ip", "10.9.0.5", "n1", "c1"],
     ["connect", "--ip6", "fd00::5", "--driver-opt", "k=v", "n1", "c1"],
     ["disconnect", "-f", "n1", "c1"], ["disconnect", "n1", "c1"]],
    ids=" ".join,
)  # fmt: skip
def test_connect_and_disconnect_send_what_docker_sends(fake: FakeDaemon, args: list[str]) -> None:
    path = f"/networks/n1/{args[0]}"
    fake.replies[("POST", path)] = (200, None)
    theirs = sent_body(fake, "docker", path, "network", *args)
    ours = sent_body(fake, "berth", path, "network", *args)
    assert meaningful(ours) == meaningful(theirs)


@pytest.mark.parametrize(
    "args",
    [["-d", "local", "-o", "type=tmpfs", "-o", "device=tmpfs", "--label", "x=y", "vv"], [],
     ["--name", "named"]],
    ids=lambda a: " ".join(a) or "anonymous",
)  # fmt: skip
def test_volume_create_sends_what_docker_sends(fake: FakeDaemon, args: list[str]) -> None:
    fake.replies[("POST", "/volumes/create")] = (201, {"Name": "vv", "Driver": "local"})
    theirs = sent_body(fake, "docker", "/volumes/create", "volume", "create", *args)
    ours = sent_body(fake, "berth", "/volumes/create", "volume", "create", *args)
    assert ours == theirs
    assert run(fake, "berth", "volume", "create", *args).stdout == "vv\n"


# --------------------------------------------------------------------------- output

PORTS = [
    {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
    {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
    {"IP": "0.0.0.0", "PrivatePort": 7000, "PublicPort": 7000, "Type": "udp"},
    {"IP": "0.0.0.0", "PrivatePort": 7001, "PublicPort": 7001, "Type": "udp"},
    {"IP": "::", "PrivatePort": 7000, "PublicPort": 7000, "Type": "udp"},
    {"IP": "::", "PrivatePort": 7001, "PublicPort": 7001, "Type": "udp"},
    {"PrivatePort": 3000, "Type": "tcp"}, {"PrivatePort": 3001, "Type": "tcp"},
    {"PrivatePort": 3003, "Type": "tcp"}, {"PrivatePort": 3004, "Type": "tcp"},
    {"PrivatePort": 3000, "Type": "udp"},
    {"IP": "127.0.0.1", "PrivatePort": 9000, "PublicPort": 32768, "Type": "tcp"},
    {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 53, "Type": "sctp"},
]  # fmt: skip


def _container(cid: str, name: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Id": cid * 64, "Names": [f"/{name}"], "Image": "busybox", "Command": "sh",
            "Created": 1_700_000_000, "Ports": ports, "State": "running", "Status": "Up 1 second",
            "Labels": {}, "NetworkSettings": {"Networks": {"bridge": {}}}}  # fmt: skip


def same_output(fake: FakeDaemon, *args: str) -> str:
    theirs, ours = run(fake, "docker", *args), run(fake, "berth", *args)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout)
    return ours.stdout


def test_ps_ports_column_is_dockers(fake: FakeDaemon) -> None:
    fake.replies[("GET", "/containers/json")] = (200, [
        _container("c", "many", PORTS), _container("d", "none", []),
        _container("e", "one", PORTS[:1]), _container("f", "v6", [PORTS[1], PORTS[4]]),
    ])  # fmt: skip
    out = same_output(fake, "ps", "--format", "{{.Names}}: {{.Ports}}")
    assert "many: 3000-3001/tcp, 0.0.0.0:53->53/sctp, 3003-3004/tcp, 3000/udp, " in out
    assert "[::]:8080->80/tcp" in out
    same_output(fake, "ps", "--format", "table {{.Names}}\t{{.Ports}}")


NETWORKS = [
    {"Name": name, "Id": f"{i:x}" * 64, "Created": CREATED, "Scope": "local",
     "Driver": driver, "EnableIPv6": i == 2, "Internal": i == 3, "Labels": labels}
    for i, (name, driver, labels) in enumerate([
        ("net10", "bridge", {}), ("net2", "bridge", {"a": "b"}), ("bridge", "bridge", None),
        ("host", "host", {}), ("none", "null", {}), ("Net1", "bridge", {}),
    ])
]  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [[], ["-q"], ["--no-trunc"], ["--format", "{{.Name}} {{.IPv6}} {{.Internal}} {{.Labels}}"],
     ["--format", "table {{.Name}}\t{{.CreatedAt}}\t{{.Label \"a\"}}"], ["--format", "json"],
     ["--format", "{{json .}}"], ["-q", "--no-trunc"]],
    ids=lambda a: " ".join(a) or "default",
)  # fmt: skip
def test_network_ls_prints_what_docker_prints(fake: FakeDaemon, args: list[str]) -> None:
    fake.replies[("GET", "/networks")] = (200, NETWORKS)
    same_output(fake, "network", "ls", *args)


VOLUMES = [
    {"Name": name, "Driver": "local", "Mountpoint": f"/var/lib/docker/volumes/{name}/_data",
     "CreatedAt": CREATED, "Labels": labels, "Scope": "local", "Options": None}
    for name, labels in [("v10", {}), ("v2", {"x": "y"}), ("a" * 64, None), ("V1", {})]
]  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [[], ["-q"], ["--format", "{{.Name}} {{.Mountpoint}} {{.Labels}} {{.Links}} {{.Size}}"],
     ["--format", "table {{.Name}}\t{{.Scope}}\t{{.Driver}}"], ["--format", "json"]],
    ids=lambda a: " ".join(a) or "default",
)  # fmt: skip
def test_volume_ls_prints_what_docker_prints(fake: FakeDaemon, args: list[str]) -> None:
    fake.replies[("GET", "/volumes")] = (200, {"Volumes": VOLUMES, "Warnings": None})
    same_output(fake, "volume", "ls", *args)


@pytest.mark.parametrize(
    "args", [["web"], ["web", "80"], ["web", "80/tcp"], ["web", "7000/udp"], ["web", "81"],
             ["web", "abc"], ["web", "99999"], ["quiet"], ["quiet", "80"]],
    ids=" ".join,
)  # fmt: skip
def test_port_prints_what_docker_prints(fake: FakeDaemon, args: list[str]) -> None:
    ports = {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
        "7000/udp": [{"HostIp": "127.0.0.1", "HostPort": "7000"}],
        "10/tcp": [{"HostIp": "0.0.0.0", "HostPort": "10"}],
        "9/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9"}],
        "81/tcp": None,
    }  # fmt: skip
    doc = {"Id": "c" * 64, "Name": "/web", "NetworkSettings": {"Ports": ports}}
    fake.replies[("GET", "/containers/web/json")] = (200, doc)
    quiet = {"Id": "d" * 64, "Name": "/quiet", "NetworkSettings": {"Ports": {}}}
    fake.replies[("GET", "/containers/quiet/json")] = (200, quiet)
    theirs, ours = run(fake, "docker", "port", *args), run(fake, "berth", "port", *args)
    assert (ours.returncode, ours.stdout, ours.stderr) == (
        theirs.returncode, theirs.stdout, theirs.stderr,
    )  # fmt: skip
