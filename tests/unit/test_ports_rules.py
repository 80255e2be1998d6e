"""Published ports without the kernel: parsing and checking a create request as dockerd does,
host port booking, the API renderings, and the nftables table rendered from a desired state."""

from __future__ import annotations

from pathlib import Path

import pytest

from berth.engine.firewall import DnatRule, render
from berth.engine.network_hooks import NetworkView
from berth.engine.ports import (
    Binding,
    PortAllocator,
    PortProto,
    PortRequest,
    PublishedPorts,
    already_allocated,
    publication,
    read_ephemeral_range,
)
from berth.errors import Conflict, InvalidArgument


def _bindings(**ports: object) -> dict[str, object]:
    return {"PortBindings": ports}


def test_bindings_and_exposed_ports_are_read_as_dockerd_reads_them() -> None:
    pub = publication(
        {"ExposedPorts": {"53/udp": {}, "90": {}, "7000-7001/tcp": {}}},
        {
            "PortBindings": {
                "80/tcp": [{"HostIp": "", "HostPort": "8080"}, {"HostIp": "127.0.0.1"}],
                "443": [{"HostPort": "9000-9010"}],
                "81/tcp": None,
            }
        },
    )
    assert [str(p) for p in pub.exposed] == [
        "53/udp", "80/tcp", "81/tcp", "90/tcp", "443/tcp", "7000/tcp", "7001/tcp"
    ]  # fmt: skip
    assert pub.requests == (
        PortRequest(PortProto(80), "0.0.0.0", 8080, 8080),
        PortRequest(PortProto(80), "127.0.0.1", 0, 0),
        PortRequest(PortProto(443), "0.0.0.0", 9000, 9010),
    )
    assert not pub.requests[0].dynamic and pub.requests[1].dynamic and pub.requests[2].dynamic


def test_publish_all_covers_every_exposed_port_without_a_binding() -> None:
    pub = publication(
        {"ExposedPorts": {"80/tcp": {}, "53/udp": {}}},
        {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}, "PublishAllPorts": True},
    )
    assert [(str(r.target), r.host_port_start) for r in pub.requests] == [
        ("53/udp", 0),
        ("80/tcp", 8080),
    ]
    assert publication({}, {"PublishAllPorts": True}).requests == ()


@pytest.mark.parametrize(
    ("host_config", "message"),
    [
        (_bindings(**{"abc/tcp": []}), 'invalid port specification: "abc"'),
        (_bindings(**{"70000/tcp": []}), 'invalid port specification: "70000"'),
        (_bindings(**{"0/tcp": []}), 'invalid port specification: "0"'),
        (_bindings(**{"80-81/tcp": []}), 'invalid port specification: "80-81"'),
        (_bindings(**{"80/sctpx": []}), "invalid proto: sctpx"),
        (_bindings(**{"80/tcp": [{"HostPort": "x"}]}), 'invalid port specification: "x"'),
        (_bindings(**{"80/tcp": [{"HostPort": "90-80"}]}), 'invalid port specification: "90-80"'),
        (_bindings(**{"80/tcp": [{"HostPort": "65536"}]}), 'invalid port specification: "65536"'),
        (_bindings(**{"80/tcp": [{"HostIp": "1.2.3"}]}), "invalid IP address: 1.2.3"),
        (_bindings(**{"80/tcp": "8080"}), "PortBindings[80/tcp] must be a list of bindings"),
        ({"PortBindings": ["80"]}, "PortBindings must be an object, not list"),
    ],
)
def test_bad_input_is_refused_with_dockerds_words(
    host_config: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument) as e:
        publication({}, host_config)
    assert str(e.value) == message


def test_bad_exposed_ports_are_refused_too() -> None:
    with pytest.raises(InvalidArgument, match='invalid port specification: "x"'):
        publication({"ExposedPorts": {"x/tcp": {}}}, {})
    with pytest.raises(InvalidArgument, match="invalid proto: icmp"):
        publication({"ExposedPorts": {"1/icmp": {}}}, {})


def test_ipv6_host_addresses_are_normalized() -> None:
    pub = publication({}, _bindings(**{"80/tcp": [{"HostIp": "[::1]", "HostPort": "1"}]}))
    assert pub.requests[0].host_ip == "::1"


def test_the_allocator_books_per_protocol_and_address() -> None:
    a = PortAllocator((100, 103))
    assert a.take("c1", "tcp", "0.0.0.0", 8080)
    assert not a.take("c2", "tcp", "127.0.0.1", 8080)  # 0.0.0.0 covers every address
    assert a.take("c2", "udp", "0.0.0.0", 8080)
    assert a.take("c2", "tcp", "127.0.0.1", 8081)
    assert a.take("c3", "tcp", "127.0.0.2", 8081)  # two specific addresses do not overlap
    assert not a.take("c3", "tcp", "0.0.0.0", 8081)
    a.release("c2")
    assert a.is_free("udp", "0.0.0.0", 8080) and not a.is_free("tcp", "0.0.0.0", 8080)
    a.give_back("c1", "tcp", "0.0.0.0", 8080)
    assert a.is_free("tcp", "0.0.0.0", 8080)


def test_ephemeral_ports_go_round_robin_from_the_last_one_given() -> None:
    a = PortAllocator((100, 103))
    any_port = PortRequest(PortProto(80), "0.0.0.0", 0, 0)
    assert list(a.candidates(any_port)) == [100, 101, 102, 103]
    assert a.take("c", "tcp", "0.0.0.0", 101)
    assert list(a.candidates(any_port)) == [102, 103, 100, 101]
    ranged = PortRequest(PortProto(80), "0.0.0.0", 9000, 9002)
    assert list(a.candidates(ranged)) == [9000, 9001, 9002]
    fixed = PortRequest(PortProto(80), "0.0.0.0", 8080, 8080)
    assert list(a.candidates(fixed)) == [8080]
    # the port a container had before a daemon restart comes first, if the request allows it
    assert list(a.candidates(any_port, preferred=103))[:2] == [103, 102]
    assert list(a.candidates(ranged, preferred=9001)) == [9001, 9000, 9001, 9002]
    assert list(a.candidates(ranged, preferred=500)) == [9000, 9001, 9002]
    assert list(a.candidates(fixed, preferred=9001)) == [8080]


def test_the_ephemeral_range_file_is_read_or_dockerds_default_used(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("32768\t60999\n")
    assert read_ephemeral_range(str(f)) == (32768, 60999)
    f.write_text("garbage")
    assert read_ephemeral_range(str(f)) == (49153, 60999)
    assert read_ephemeral_range(str(tmp_path / "missing")) == (49153, 60999)


def test_the_taken_port_error_is_dockerds() -> None:
    err = already_allocated("web", "abc123", Binding(PortProto(80), "0.0.0.0", 8080))
    assert isinstance(err, Conflict)
    assert str(err) == (
        "driver failed programming external connectivity on endpoint web (abc123): "
        "Bind for 0.0.0.0:8080 failed: port is already allocated"
    )


def test_renderings_for_inspect_and_the_container_list() -> None:
    ports = PublishedPorts(
        exposed=(PortProto(80), PortProto(81), PortProto(53, "udp")),
        bindings=(
            Binding(PortProto(80), "0.0.0.0", 8080),
            Binding(PortProto(80), "127.0.0.1", 8081),
            Binding(PortProto(53, "udp"), "0.0.0.0", 40000),
        ),
    )
    assert ports.inspect_json() == {
        "80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": "8080"},
            {"HostIp": "127.0.0.1", "HostPort": "8081"},
        ],
        "81/tcp": None,
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": "40000"}],
    }
    assert ports.list_json() == [
        {"IP": "0.0.0.0", "PrivatePort": 53, "PublicPort": 40000, "Type": "udp"},
        {"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
        {"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8081, "Type": "tcp"},
        {"PrivatePort": 81, "Type": "tcp"},
    ]
    assert PublishedPorts().inspect_json() == {} and PublishedPorts().list_json() == []
    back = PublishedPorts.from_inspect_json(ports.inspect_json())
    assert back.exposed == tuple(sorted(ports.exposed))
    assert sorted(back.bindings, key=str) == sorted(ports.bindings, key=str)


NET1 = NetworkView("a", "one", "br-one", "172.18.0.0/16", "172.18.0.1")
NET2 = NetworkView("b", "two", "br-two", "172.19.0.5/16", "172.19.0.1", masquerade=False)
NET3 = NetworkView("c", "three", "br-three", "172.20.0.0/16", "172.20.0.1", internal=True)


def test_the_table_is_rendered_from_the_desired_state() -> None:
    rules = [
        DnatRule("tcp", "0.0.0.0", 8080, "172.18.0.2", 80),
        DnatRule("udp", "10.0.0.1", 53, "172.18.0.2", 53),
        DnatRule("tcp", "127.0.0.1", 8081, "172.18.0.2", 81),  # loopback: DNAT without proxy
        DnatRule("tcp", "::", 8082, "172.18.0.2", 82),  # IPv6: the proxy's alone
    ]
    proxied = [line.strip() for line in render([NET1], rules).splitlines()]  # the default
    assert not any(":81" in line for line in proxied)  # loopback: the userland proxy's
    assert "ip daddr != 127.0.0.0/8 fib daddr type local jump publish" in proxied
    assert not any("127.0.0.0/8 oifname" in line for line in proxied)
    text = render([NET3, NET1, NET2], rules, userland_proxy=False)
    lines = [line.strip() for line in text.splitlines()]
    assert "ip saddr != 172.18.0.2 tcp dport 8080 dnat to 172.18.0.2:80" in lines
    assert "ip saddr != 172.18.0.2 ip daddr 10.0.0.1 udp dport 53 dnat to 172.18.0.2:53" in lines
    assert "ip saddr != 172.18.0.2 ip daddr 127.0.0.1 tcp dport 8081 dnat to 172.18.0.2:81" in lines
    assert not any(":82" in line for line in lines)
    assert "fib daddr type local jump publish" in lines  # output: loopback included
    assert 'ip saddr 127.0.0.0/8 oifname "br-one" masquerade' in lines
    assert 'ip saddr 172.18.0.0/16 oifname != "br-one" masquerade' in lines
    assert not any("172.19.0.0/16 oifname !=" in line for line in lines)  # masquerade off
    assert not any("172.20.0.0/16 oifname !=" in line for line in lines)  # internal
    assert 'ct status dnat ip saddr 172.19.0.0/16 oifname "br-two" masquerade' in lines
    assert 'iifname "br-three" oifname != "br-three" drop' in lines
    assert 'oifname "br-three" iifname != "br-three" drop' in lines
    assert 'iifname "br-one" oifname { "br-three", "br-two" } drop' in lines
    # internal drops come before the published-port exception, isolation after it
    assert (
        lines.index('iifname "br-three" oifname != "br-three" drop')
        < lines.index("ct status dnat accept")
        < lines.index('iifname "br-one" oifname { "br-three", "br-two" } drop')
    )
    assert render([], []) == ""
    assert "ct status dnat accept" not in render([NET1], [])  # one network: nothing to isolate


@pytest.mark.parametrize(
    ("networks", "rules"),
    [
        ([NetworkView("x", "x", 'br"; flush ruleset', "10.0.0.0/8", "10.0.0.1")], []),
        ([NET1], [DnatRule("tcp", "0.0.0.0", 0, "172.18.0.2", 80)]),
        ([NET1], [DnatRule("icmp", "0.0.0.0", 1, "172.18.0.2", 80)]),
        ([NET1], [DnatRule("tcp", "0.0.0.0", 1, "172.18.0.2; flush ruleset", 80)]),
    ],
)
def test_nothing_unchecked_reaches_a_rule(
    networks: list[NetworkView], rules: list[DnatRule]
) -> None:
    with pytest.raises((InvalidArgument, ValueError)):
        render(networks, rules)
