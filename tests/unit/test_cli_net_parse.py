"""The network helpers of the CLI on their own: -p parsing, PORTS rendering, natural order,
Go's time text, the endpoint config. (test_cli_net_peer.py holds them against the docker CLI.)
"""

from __future__ import annotations

import pytest

from berth.cli.common import UsageError
from berth.cli.containers import displayable_ports
from berth.cli.networks import port_lines
from berth.cli.options import endpoints_config, publish_spec, published_ports
from berth.cli.render import go_time_text, natural_sorted


def test_publish_spec_forms() -> None:
    assert publish_spec("80") == [("80/tcp", {"HostIp": "", "HostPort": ""})]
    assert publish_spec("8080:80/UDP") == [("80/udp", {"HostIp": "", "HostPort": "8080"})]
    assert publish_spec("[::1]:5000-5001:6000-6001") == [
        ("6000/tcp", {"HostIp": "::1", "HostPort": "5000"}),
        ("6001/tcp", {"HostIp": "::1", "HostPort": "5001"}),
    ]
    assert publish_spec("8000-8010:80") == [("80/tcp", {"HostIp": "", "HostPort": "8000-8010"})]
    assert publish_spec("target=53,published=5353,protocol=udp") == [
        ("53/udp", {"HostIp": "", "HostPort": "5353"})
    ]
    for bad in ("", "abc", "1-2:3-5", "65536", "80/icmp", "[::1:80:80"):
        with pytest.raises(UsageError):
            publish_spec(bad)


def test_published_ports_merge_expose_and_bindings() -> None:
    exposed, bindings = published_ports(["80", "0.0.0.0:80:80"], ["80", "90-91/udp"])
    assert exposed == {"80/tcp": {}, "90/udp": {}, "91/udp": {}}
    assert bindings == {
        "80/tcp": [{"HostIp": "", "HostPort": ""}, {"HostIp": "0.0.0.0", "HostPort": "80"}]
    }


def test_endpoints_config() -> None:
    assert endpoints_config([], [], None, None) == {}
    assert endpoints_config(["n1"], [], None, None) == {}
    assert endpoints_config(["n1"], ["a"], "10.0.0.2", None) == {
        "n1": {"Aliases": ["a"], "IPAMConfig": {"IPv4Address": "10.0.0.2"}}
    }
    assert endpoints_config(["n1", "n2"], [], None, None) == {"n1": {}, "n2": {}}
    assert endpoints_config([], [], None, "fd00::2") == {
        "default": {"IPAMConfig": {"IPv6Address": "fd00::2"}}
    }
    for networks, aliases in ((["bridge"], ["a"]), (["n1", "n1"], []), (["n1", "host"], [])):
        with pytest.raises(UsageError):
            endpoints_config(networks, aliases, None, None)


def test_displayable_ports() -> None:
    ports = [
        {"PrivatePort": 3002, "Type": "tcp"}, {"PrivatePort": 3000, "Type": "tcp"},
        {"PrivatePort": 3001, "Type": "tcp"}, {"PrivatePort": 3005, "Type": "tcp"},
        {"IP": "::", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 53, "Type": "udp"},
        {"IP": "0.0.0.0", "PrivatePort": 54, "PublicPort": 54, "Type": "udp"},
    ]  # fmt: skip
    assert displayable_ports(ports) == (
        "3000-3002/tcp, 0.0.0.0:53-54->53-54/udp, 3005/tcp, [::]:8080->80/tcp"
    )
    assert displayable_ports([]) == ""


def test_natural_order_and_port_lines() -> None:
    assert natural_sorted(["net10", "net2", "Net1", "net02", "a", "1"]) == [
        "1", "Net1", "a", "net2", "net02", "net10",
    ]  # fmt: skip
    ports = {"80/tcp": [{"HostIp": "::", "HostPort": "80"}], "9/tcp": None,
             "10/udp": [{"HostIp": "0.0.0.0", "HostPort": "10"}]}  # fmt: skip
    assert port_lines(ports) == ["10/udp -> 0.0.0.0:10", "80/tcp -> [::]:80"]
    assert port_lines(ports, "80/tcp") == ["[::]:80"]
    assert port_lines(ports, "9/tcp") == []


def test_go_time_text() -> None:
    assert go_time_text("2026-11-26T21:50:07.1234567Z") == "2026-11-26 21:50:07.1234567 +0000 UTC"
    assert go_time_text("2026-11-26T21:50:07.000Z") == "2026-11-26 21:50:07 +0000 UTC"
    assert go_time_text("2026-11-26T21:50:07+01:00") == "2026-11-26 21:50:07 +0100 +0100"
    assert go_time_text("") == "0001-01-01 00:00:00 +0000 UTC"
