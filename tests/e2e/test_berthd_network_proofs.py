"""Issue 5's proofs of what rides on berthd's networks, through the docker CLI: names and
aliases through the embedded DNS, published ports answering on berthd's loopback and on its
addresses, isolation between user networks, a taken port refused with nothing left, and a
daemon restart that keeps a container's ports, then removal leaving no rule, veth or pin.

berthd runs in a network namespace of its own; the tests reach its loopback from a thread
that enters that namespace (``engine.netns.run_in`` on ``/proc/<berthd>/ns/net``) and read its
nftables table with ``nsenter``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from typing import Any

from test_berthd_containers import own_berthd
from test_berthd_images import Daemon
from test_berthd_networks import _berthd_pid, _inspect, _nothing_left, _veths

from berth.engine import netns

HTTPD = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"


def _fetch(d: Daemon, address: str, port: int) -> str:
    """GET / on ``address:port`` from inside berthd's network namespace ("" if refused)."""

    def get() -> str:
        try:
            with socket.create_connection((address, port), timeout=5) as s:
                s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(65536):
                    data += chunk
        except OSError:
            return ""
        return data.decode(errors="replace").rpartition("\r\n\r\n")[2]

    return netns.run_in(f"/proc/{_berthd_pid(d)}/ns/net", get)


def _published_rules(d: Daemon) -> list[str]:
    out = subprocess.run(
        ["nsenter", f"--net=/proc/{_berthd_pid(d)}/ns/net", "nft", "-j", "list", "ruleset"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rules = [i["rule"] for i in json.loads(out)["nftables"] if "rule" in i]
    return [json.dumps(r) for r in rules if r.get("chain") == "publish"]


def _host_port(d: Daemon, name: str, private: str = "80/tcp") -> int:
    ports: Any = _inspect(d, "container", name)["NetworkSettings"]["Ports"]
    return int(ports[private][0]["HostPort"])


def test_names_and_aliases_resolve_on_a_user_network_only(berthd: Daemon) -> None:
    berthd.docker("network", "create", "names")
    try:
        berthd.docker("run", "-d", "--name", "kvdb", "--network", "names",
                      "--network-alias", "store", "busybox", "sh", "-c",
                      "while true; do echo from-kvdb | nc -l -p 7000; done")  # fmt: skip
        for name in ("kvdb", "store"):
            out = berthd.docker("run", "--rm", "--network", "names", "busybox",
                                "nc", "-w", "5", name, "7000")  # fmt: skip
            assert out.stdout == "from-kvdb\n"
        looked = berthd.docker("run", "--rm", "--network", "names", "busybox", "nslookup", "store")
        ip = _inspect(berthd, "container", "kvdb")["NetworkSettings"]["Networks"]["names"]
        assert f"Address: {ip['IPAddress']}" in looked.stdout
        resolv = berthd.docker("run", "--rm", "--network", "names", "busybox",
                               "cat", "/etc/resolv.conf").stdout  # fmt: skip
        assert "nameserver 127.0.0.11" in resolv
        plain = berthd.docker("run", "--rm", "busybox", "nslookup", "kvdb", check=False)
        assert "Address: 172." not in plain.stdout  # the default bridge has no names
    finally:
        berthd.docker("rm", "-f", "kvdb", check=False)
        berthd.docker("network", "rm", "names")


def test_published_port_answers_and_goes_with_the_container(berthd: Daemon) -> None:
    berthd.docker("run", "-d", "--name", "web1", "-p", "127.0.0.1::80", "-p", "18080:80",
                  "busybox", "sh", "-c", HTTPD)  # fmt: skip
    try:
        ephemeral = _host_port(berthd, "web1")
        assert ephemeral >= 1024
        assert (
            berthd.docker("port", "web1", "80").stdout.split("\n")[0].endswith(f":{ephemeral}")
            or f":{ephemeral}" in berthd.docker("port", "web1").stdout
        )
        assert _fetch(berthd, "127.0.0.1", 18080).startswith("hello-")
        assert _fetch(berthd, "127.0.0.1", ephemeral).startswith("hello-")
        gateway = _inspect(berthd, "container", "web1")["NetworkSettings"]["Gateway"]
        assert _fetch(berthd, gateway, 18080).startswith("hello-")  # DNAT, not the proxy
        assert "0.0.0.0:18080->80/tcp" in berthd.docker("ps", "--filter", "name=web1").stdout
        veths = _veths(berthd)
        taken = berthd.docker("run", "-d", "--name", "web2", "-p", "18080:80", "busybox",
                              "sleep", "60", check=False)  # fmt: skip
        assert taken.returncode == 125
        assert "port is already allocated" in taken.stderr
        assert _inspect(berthd, "container", "web2")["State"]["Running"] is False
        assert _veths(berthd) == veths  # the failed start left no veth
        berthd.docker("rm", "web2")
        assert _published_rules(berthd)
    finally:
        berthd.docker("rm", "-f", "web1", check=False)
    assert _fetch(berthd, "127.0.0.1", 18080) == ""
    assert not _published_rules(berthd)


def test_different_user_networks_cannot_reach_each_other(berthd: Daemon) -> None:
    berthd.docker("network", "create", "isle-a")
    berthd.docker("network", "create", "isle-b")
    try:
        berthd.docker("run", "-d", "--name", "on-b", "--network", "isle-b", "busybox", "sh",
                      "-c", "while true; do echo from-b | nc -l -p 7000; done")  # fmt: skip
        ip_b = _inspect(berthd, "container", "on-b")["NetworkSettings"]["Networks"]["isle-b"]
        ip_b = ip_b["IPAddress"]
        same = berthd.docker("run", "--rm", "--network", "isle-b", "busybox",
                             "nc", "-w", "3", ip_b, "7000")  # fmt: skip
        assert same.stdout == "from-b\n"
        other = berthd.docker("run", "--rm", "--network", "isle-a", "busybox",
                              "nc", "-w", "3", ip_b, "7000", check=False)  # fmt: skip
        assert other.stdout == "" and other.returncode != 0
        by_name = berthd.docker("run", "--rm", "--network", "isle-a", "busybox",
                                "nc", "-w", "3", "on-b", "7000", check=False)  # fmt: skip
        assert by_name.stdout == ""
    finally:
        berthd.docker("rm", "-f", "on-b", check=False)
        berthd.docker("network", "rm", "isle-a", "isle-b")


def test_restart_keeps_published_ports_then_removal_leaves_nothing() -> None:
    with own_berthd("berthd-ports-") as (d, relaunch):
        d.docker("network", "create", "front")
        d.docker("run", "-d", "--name", "site", "--network", "front", "--expose", "80", "-P",
                 "busybox", "sh", "-c", HTTPD)  # fmt: skip
        port = _host_port(d, "site")
        assert _fetch(d, "127.0.0.1", port).startswith("hello-")
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=20) == 0
        relaunch()
        assert _host_port(d, "site") == port
        assert _fetch(d, "127.0.0.1", port).startswith("hello-")
        d.docker("rm", "-f", "site")
        d.docker("network", "rm", "front")
        assert not _published_rules(d)
        _nothing_left(d)


def test_network_mtu_option(berthd: Daemon) -> None:
    """``-o com.docker.network.driver.mtu=N`` sizes both ends of every veth on the network; a
    bad number is refused at create."""
    bad = berthd.docker("network", "create", "-o", "com.docker.network.driver.mtu=big", "mtu-x",
                        check=False)  # fmt: skip
    assert bad.returncode != 0 and "invalid MTU number" in bad.stderr
    berthd.docker("network", "create", "-o", "com.docker.network.driver.mtu=9000", "jumbo")
    try:
        out = berthd.docker("run", "--rm", "--network", "jumbo", "busybox",
                            "cat", "/sys/class/net/eth0/mtu")  # fmt: skip
        assert out.stdout.strip() == "9000"
        plain = berthd.docker("run", "--rm", "busybox", "cat", "/sys/class/net/eth0/mtu")
        assert plain.stdout.strip() == "1500"
    finally:
        berthd.docker("network", "rm", "jumbo")


def test_stats_count_a_containers_network_io(berthd: Daemon) -> None:
    cid = berthd.docker(
        "run",
        "-d",
        "busybox",
        "sh",
        "-c",
        "ping -c 3 -i 0.2 $(ip route | awk '/default/ {print $3}'); sleep 30",
    )
    cid_text = cid.stdout.strip()  # fmt: skip
    try:
        time.sleep(1)
        net_io = berthd.docker("stats", "--no-stream", "--format", "{{.NetIO}}", cid_text).stdout
        assert net_io.strip() != "0B / 0B", net_io
        none = berthd.docker("run", "-d", "--network", "none", "busybox", "sleep", "30")
        try:
            quiet = berthd.docker("stats", "--no-stream", "--format", "{{.NetIO}}",
                                  none.stdout.strip()).stdout  # fmt: skip
            assert quiet.strip() == "0B / 0B"
        finally:
            berthd.docker("rm", "-f", none.stdout.strip())
    finally:
        berthd.docker("rm", "-f", cid_text)
