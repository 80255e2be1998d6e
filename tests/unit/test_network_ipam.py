"""IPAM and the container files of the networks, without a kernel: subnets, overlaps, static
addresses, Docker's MACs, hosts and resolv.conf as dockerd writes them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from berth.engine import network_files as files
from berth.engine import network_store as ipam
from berth.engine.api_errors import Forbidden
from berth.engine.network_store import Network
from berth.errors import Conflict, InvalidArgument


def _net(subnet: str, name: str = "n", **kw: object) -> Network:
    return Network("id" + name, name, "bridge", "", subnet, ipam.first_host(subnet), **kw)  # type: ignore[arg-type]


def test_pick_subnet_skips_networks_and_routes() -> None:
    assert ipam.pick_subnet([], []) == "172.17.0.0/16"
    assert ipam.pick_subnet([_net("172.17.0.0/16")], ["172.18.5.0/24"]) == "172.19.0.0/16"
    assert ipam.pick_subnet([], ["0.0.0.0/0"]) == "172.17.0.0/16"  # the default route is no pool
    every = [_net(f"172.{n}.0.0/16", str(n)) for n in range(17, 32)]
    assert ipam.pick_subnet(every, []) == "192.168.0.0/20"


def test_parse_ipam_and_overlap_use_dockers_words() -> None:
    assert ipam.parse_ipam([{"Subnet": "10.1.0.0/24"}]) == ("10.1.0.0/24", "", "", {})
    with pytest.raises(InvalidArgument, match="invalid pool request"):
        ipam.parse_ipam([{"Subnet": "10.1.0.5/24"}])
    with pytest.raises(InvalidArgument, match="no matching subnet for gateway"):
        ipam.parse_ipam([{"Subnet": "10.1.0.0/24", "Gateway": "10.2.0.1"}])
    with pytest.raises(Forbidden, match="Pool overlaps with other one on this address space"):
        ipam.check_overlap("10.1.0.0/16", [_net("10.1.2.0/24")])


def test_allocation_skips_reserved_and_taken_addresses() -> None:
    net = _net("10.3.0.0/29", aux_addresses={"r": "10.3.0.2"})
    assert ipam.allocate(net, {"10.3.0.3"}) == "10.3.0.4"
    with pytest.raises(Conflict, match="no available IPv4 addresses"):
        ipam.allocate(net, {"10.3.0.3", "10.3.0.4", "10.3.0.5", "10.3.0.6"})
    ranged = _net("10.4.0.0/24", ip_range="10.4.0.128/25")
    assert ipam.allocate(ranged, set()) == "10.4.0.129"
    with pytest.raises(InvalidArgument, match="no configured subnet or ip-range contain"):
        ipam.check_static(net, "10.9.0.1", set())
    with pytest.raises(Conflict, match="Address already in use"):
        ipam.check_static(net, "10.3.0.1", set())  # the gateway
    assert ipam.mac_of("172.17.0.2") == "02:42:ac:11:00:02"


def test_resolv_conf_and_hosts() -> None:
    host = files.ResolvConf.parse("nameserver 127.0.0.53\nsearch corp\noptions edns0\n")
    assert files.resolv_conf(host, embedded_dns=False) == (
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch corp\noptions edns0\n"
    )
    assert files.resolv_conf(host, embedded_dns=True) == (
        "nameserver 127.0.0.11\nsearch corp\noptions edns0 ndots:0\n"
    )
    assert files.resolv_conf(host, False, dns=["1.1.1.1"]).startswith("nameserver 1.1.1.1\n")
    text = files.hosts([("172.17.0.2", ["abc"])], ["db:10.0.0.9"])
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert text.endswith("10.0.0.9\tdb\n172.17.0.2\tabc\n")


def test_write_in_place_keeps_the_inode_and_leaves_the_same_text_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "hosts")
    files.write_in_place(path, "first line\nsecond\n")
    before = os.stat(path)
    os.utime(path, ns=(0, 0))  # a rewrite would move mtime
    files.write_in_place(path, "first line\nsecond\n")
    assert os.stat(path).st_mtime_ns == 0
    files.write_in_place(path, "first line\n")  # a prefix of what is there: rewritten
    after = os.stat(path)
    assert after.st_ino == before.st_ino and after.st_mtime_ns != 0
    assert Path(path).read_text() == "first line\n"
