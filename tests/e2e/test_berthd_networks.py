"""berthd's networks through the docker CLI and docker-py: create/ls/inspect/rm/prune/connect/
disconnect, containers reaching each other on a user network, the default bridge, none, host
and container: modes, bad input, and nothing left (veth, netns pin, mount) after removal, a
failed start or a daemon restart.

berthd runs in a network namespace of its own (``berthd_process``); what the tests look at in
it they see through ``/proc/<berthd>/net/dev`` and its data root.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
from berthd_process import mounts_under
from test_berthd_containers import own_berthd
from test_berthd_images import Daemon


def _inspect(d: Daemon, kind: str, ref: str) -> Any:
    return json.loads(d.docker(kind, "inspect", ref).stdout)[0]


def _interfaces(d: Daemon) -> set[str]:
    with open(f"/proc/{_berthd_pid(d)}/net/dev", encoding="ascii") as f:
        return {line.split(":")[0].strip() for line in f.read().splitlines()[2:]}


def _berthd_pid(d: Daemon) -> int:
    with open(d.data_root / "run" / "berthd.pid", encoding="ascii") as f:
        return int(f.read().strip())


def _veths(d: Daemon) -> set[str]:
    return {i for i in _interfaces(d) if i.startswith("veth")}


def _pins(d: Daemon) -> list[str]:
    directory = d.data_root / "run" / "netns"
    return sorted(os.listdir(directory)) if directory.exists() else []


def _nothing_left(d: Daemon) -> None:
    assert not _veths(d), _veths(d)
    assert not _pins(d), _pins(d)
    assert not mounts_under(str(d.data_root)), mounts_under(str(d.data_root))


def test_predefined_networks_and_the_default_bridge(berthd: Daemon) -> None:
    rows = berthd.docker("network", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    assert {"bridge bridge", "host host", "none null"} <= set(rows)
    bridge = _inspect(berthd, "network", "bridge")
    subnet = bridge["IPAM"]["Config"][0]["Subnet"]
    assert subnet == "172.17.0.0/16"
    out = berthd.docker("run", "--rm", "busybox", "sh", "-c", "ip -o -4 addr; cat /etc/hosts")
    assert "berth0" in _interfaces(berthd)  # made for the first container that needs it
    assert "eth0" in out.stdout and "inet 172.17.0." in out.stdout
    berthd.docker("run", "-d", "--name", "db0", "busybox", "sleep", "30")
    try:
        settings = _inspect(berthd, "container", "db0")["NetworkSettings"]
        assert settings["IPAddress"].startswith("172.17.0.")
        assert settings["Gateway"] == "172.17.0.1"
        assert settings["MacAddress"].startswith("02:42:ac:11:00:")
        assert settings["Networks"]["bridge"]["NetworkID"] == bridge["Id"]
        assert settings["SandboxKey"].endswith("/run/netns/" + settings["SandboxKey"][-64:])
        ping = berthd.docker("run", "--rm", "busybox", "ping", "-c1", "-W2", settings["IPAddress"])
        assert "1 packets received" in ping.stdout
        assert _inspect(berthd, "network", "bridge")["Containers"]
        with pytest.raises(AssertionError, match="pre-defined network"):
            berthd.docker("network", "rm", "bridge")
    finally:
        berthd.docker("rm", "-f", "db0")
    _nothing_left(berthd)


def test_two_containers_on_a_user_network_reach_each_other(berthd: Daemon) -> None:
    since = str(int(time.time()) - 1)
    berthd.docker("network", "create", "--subnet", "10.77.0.0/24", "--label", "k=v", "net1")
    try:
        net = _inspect(berthd, "network", "net1")
        assert net["IPAM"]["Config"][0] == {"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}
        assert net["Labels"] == {"k": "v"}
        berthd.docker("run", "-d", "--name", "srv", "--network", "net1", "--ip", "10.77.0.50",
                      "--network-alias", "web", "busybox", "nc", "-ll", "-p", "8080",
                      "-e", "echo", "hello")  # fmt: skip
        settings = _inspect(berthd, "container", "srv")["NetworkSettings"]["Networks"]["net1"]
        assert settings["IPAddress"] == "10.77.0.50" and settings["IPPrefixLen"] == 24
        assert "web" in settings["Aliases"] and "srv" in settings["DNSNames"]
        out = berthd.docker("run", "--rm", "--network", "net1", "busybox", "sh", "-c",
                            "ping -c1 -W2 10.77.0.50 && nc 10.77.0.50 8080 </dev/null;"
                            " cat /etc/resolv.conf")  # fmt: skip
        assert "1 packets received" in out.stdout and "hello" in out.stdout
        assert "nameserver 127.0.0.11" in out.stdout
        members = _inspect(berthd, "network", "net1")["Containers"]
        assert [m["Name"] for m in members.values()] == ["srv"]
        taken = berthd.docker("run", "--network", "net1", "--ip", "10.77.0.50", "--name", "dup",
                              "busybox", "true", check=False)  # fmt: skip
        assert taken.returncode != 0 and "Address already in use" in taken.stderr
        berthd.docker("rm", "dup")
        outside = berthd.docker("create", "--network", "net1", "--ip", "10.9.9.9", "busybox",
                                check=False)  # fmt: skip
        assert "no configured subnet or ip-range contain the IP address 10.9.9.9" in outside.stderr
        busy = berthd.docker("network", "rm", "net1", check=False)
        assert "has active endpoints" in busy.stderr
        custom = berthd.docker("network", "ls", "--filter", "type=custom", "--format", "{{.Name}}")
        assert "net1" in custom.stdout.split() and "bridge" not in custom.stdout.split()
        dangling = berthd.docker("network", "ls", "-f", "dangling=true", "--format", "{{.Name}}")
        assert "net1" not in dangling.stdout.split()
        filtered = berthd.docker("ps", "--filter", "network=net1", "--format", "{{.Names}}")
        assert filtered.stdout.split() == ["srv"]
        assert _veths(berthd)
        berthd.docker("rm", "-f", "srv")
        _nothing_left(berthd)
        berthd.docker("network", "rm", "net1")
        events = berthd.docker("events", "--since", since, "--until", str(int(time.time()) + 1),
                               "--filter", "type=network", "--filter", f"network={net['Id']}",
                               "--format", "{{.Action}}").stdout.split()  # fmt: skip
        assert events[0] == "create" and events[-1] == "destroy" and "connect" in events
        assert "disconnect" in events
    finally:
        berthd.docker("rm", "-f", "srv", check=False)
        berthd.docker("network", "rm", "net1", check=False)
    assert not any(i.startswith("br-") for i in _interfaces(berthd))


def test_bad_input_is_refused_with_dockers_words(berthd: Daemon) -> None:
    berthd.docker("network", "create", "--subnet", "10.78.0.0/16", "ovl")
    try:
        over = berthd.docker("network", "create", "--subnet", "10.78.1.0/24", "ovl2", check=False)
        assert "Pool overlaps with other one on this address space" in over.stderr
        dup = berthd.docker("network", "create", "ovl", check=False)
        assert "network with name ovl already exists" in dup.stderr
        v6 = berthd.docker("network", "create", "--ipv6", "six", check=False)
        assert v6.returncode != 0 and "IPv6" in v6.stderr
        unknown = berthd.docker("run", "--rm", "--network", "nosuch", "busybox", check=False)
        assert "network nosuch not found" in unknown.stderr
        failed = berthd.docker(
            "run", "--rm", "--network", "ovl", "busybox", "/no/such", check=False
        )
        assert failed.returncode != 0 and not _veths(berthd) and not _pins(berthd)
        missing = berthd.docker("network", "inspect", "nosuch", check=False)
        assert missing.returncode != 0
        assert "ovl2" not in berthd.docker("network", "ls").stdout
    finally:
        berthd.docker("network", "rm", "ovl")
    _nothing_left(berthd)


def test_none_host_and_container_modes(berthd: Daemon) -> None:
    out = berthd.docker("run", "--rm", "--network", "none", "busybox", "cat", "/proc/net/dev")
    names = {line.split(":")[0].strip() for line in out.stdout.splitlines()[2:]}
    assert names == {"lo"}
    cat = "cat /etc/hosts /etc/resolv.conf /etc/hostname"
    files = berthd.docker("run", "--rm", "--add-host", "extra.test:10.1.2.3", "--dns",
                          "9.9.9.9", "--dns-search", "example.test", "--hostname", "hn",
                          "busybox", "sh", "-c", cat)  # fmt: skip
    assert "10.1.2.3\textra.test" in files.stdout and "nameserver 9.9.9.9" in files.stdout
    assert "search example.test" in files.stdout and files.stdout.endswith("hn\n")
    host = berthd.docker("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev")
    assert "berth0" in host.stdout  # berthd's namespace
    berthd.docker("run", "-d", "--name", "owner", "busybox", "sleep", "30")
    try:
        ip = _inspect(berthd, "container", "owner")["NetworkSettings"]["IPAddress"]
        shared = berthd.docker("run", "--rm", "--network", "container:owner", "busybox",
                               "ip", "-o", "-4", "addr")  # fmt: skip
        assert ip in shared.stdout
    finally:
        berthd.docker("rm", "-f", "owner")
    _nothing_left(berthd)


def test_a_none_container_has_no_pin_and_can_be_joined(berthd: Daemon) -> None:
    """--network none: the runtime's namespace (lo only, up), no pin while it runs; inspect
    names a path that reaches it; a container:<id> joins that very namespace (the pin made
    then goes with it); network connect is refused as dockerd refuses it (400); nothing is
    left after rm or a failed start."""
    import docker

    berthd.docker("run", "-d", "--name", "quiet", "--network", "none", "busybox", "sleep", "30")
    client = docker.APIClient(base_url=berthd.url)
    try:
        doc = _inspect(berthd, "container", "quiet")
        settings, pid = doc["NetworkSettings"], doc["State"]["Pid"]
        assert _pins(berthd) == []
        assert settings["SandboxKey"] == f"/proc/{pid}/ns/net" and settings["SandboxID"]
        assert list(settings["Networks"]) == ["none"] and settings["IPAddress"] == ""
        links = berthd.docker("exec", "quiet", "ip", "-o", "link").stdout.splitlines()
        assert len(links) == 1 and ": lo:" in links[0] and ",UP" in links[0], links
        joined = berthd.docker("run", "--rm", "--network", "container:quiet", "busybox",
                               "readlink", "/proc/self/ns/net").stdout  # fmt: skip
        assert joined.strip() == os.readlink(f"/proc/{pid}/ns/net")
        assert _pins(berthd) == [doc["Id"]]  # made for the joiner, kept while quiet runs
        with pytest.raises(docker.errors.APIError) as refused:
            client.connect_container_to_network("quiet", "bridge")
        assert refused.value.status_code == 400
        assert "container cannot be connected to multiple networks with one of the networks in" \
            " private (none) mode" in str(refused.value.explanation)  # fmt: skip
    finally:
        client.close()
        berthd.docker("rm", "-f", "quiet")
    failed = berthd.docker("run", "--rm", "--network", "none", "busybox", "/no/such", check=False)
    assert failed.returncode != 0
    _nothing_left(berthd)


def test_connect_disconnect_and_prune_with_docker_py(berthd: Daemon) -> None:
    import docker

    client = docker.DockerClient(base_url=berthd.url)
    try:
        net = client.networks.create("pynet", driver="bridge", labels={"p": "1"})
        box = client.containers.run("busybox", ["sleep", "30"], detach=True, name="pybox")
        try:
            net.connect(box, aliases=["pyalias"])
            box.reload()
            assert set(box.attrs["NetworkSettings"]["Networks"]) == {"bridge", "pynet"}
            addrs = box.exec_run(["ip", "-o", "-4", "addr"]).output.decode()
            assert "eth1" in addrs
            net.reload()
            assert box.id in net.attrs["Containers"]
            net.disconnect(box)
            addrs = box.exec_run(["ip", "-o", "-4", "addr"]).output.decode()
            assert "eth1" not in addrs
        finally:
            box.remove(force=True)
        assert client.networks.prune(filters={"label": "p=1"})["NetworksDeleted"] == ["pynet"]
    finally:
        client.close()
    _nothing_left(berthd)


def test_a_daemon_restart_then_removal_leaves_nothing() -> None:
    with own_berthd("berthd-net-") as (d, relaunch):
        d.docker("network", "create", "keep")
        d.docker("run", "-d", "--name", "na", "--network", "keep", "busybox", "sleep", "60")
        d.docker("run", "-d", "--name", "nb", "--network", "keep", "busybox", "sleep", "0.5")
        d.docker("run", "-d", "--name", "nq", "--network", "none", "busybox", "sleep", "60")
        ip = _inspect(d, "container", "na")["NetworkSettings"]["Networks"]["keep"]["IPAddress"]
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0
        relaunch()
        assert _inspect(d, "container", "nb")["State"]["Status"] == "exited"
        assert len(_veths(d)) == 1 and _pins(d) == [_inspect(d, "container", "na")["Id"]]
        out = d.docker("run", "--rm", "--network", "keep", "busybox", "ping", "-c1", "-W2", ip)
        assert "1 packets received" in out.stdout
        quiet = _inspect(d, "container", "nq")  # "none": still running, joinable, no pin
        joined = d.docker("run", "--rm", "--network", "container:nq", "busybox", "readlink",
                          "/proc/self/ns/net").stdout  # fmt: skip
        assert joined.strip() == os.readlink(f"/proc/{quiet['State']['Pid']}/ns/net")
        d.docker("rm", "-f", "na", "nb", "nq")
        d.docker("network", "rm", "keep")
        _nothing_left(d)
