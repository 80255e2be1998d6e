"""engine.dns packet building and parsing, without sockets."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from berth.engine.dns import (
    answers,
    client_limit,
    local_answer,
    lookup_name,
    nameservers,
    parse_query,
    render,
    reply,
    valid_upstreams,
    with_id,
)


def query(name: str = "web", rdtype: str = "A", **kw: object) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]


def test_parse_query_drops_garbage_and_responses() -> None:
    assert parse_query(b"") is None
    assert parse_query(b"\x00\x01\x02") is None  # shorter than a header
    assert parse_query(b"\x12\x34" + b"\xff" * 40) is None
    q = query()
    assert parse_query(q.to_wire()) == q
    assert parse_query(dns.message.make_response(q).to_wire()) is None  # QR set
    cut = q.to_wire()[:-3]  # the question ends early
    assert parse_query(cut) is None


def test_client_limit_follows_edns_with_512_as_the_floor() -> None:
    assert client_limit(query(), tcp=False) == 512
    assert client_limit(query(use_edns=0, payload=1232), tcp=False) == 1232
    assert client_limit(query(use_edns=0, payload=100), tcp=False) == 512
    assert client_limit(query(), tcp=True) == 65535


def test_lookup_name_is_lower_case_without_the_final_dot() -> None:
    assert lookup_name(dns.name.from_text("Web.AppNet.")) == "web.appnet"
    assert lookup_name(dns.name.from_text("web", origin=None)) == "web"
    assert lookup_name(dns.name.root) is None


def test_a_answer_keeps_the_question_case_and_ttl_600() -> None:
    q = query("WeB", use_edns=0, payload=1232)
    response = local_answer(q, ["172.18.0.2", "fd00::2"])
    assert response is not None
    assert response.id == q.id and response.flags & dns.flags.QR and response.flags & dns.flags.RA
    assert response.flags & dns.flags.RD  # copied from the query
    (rrset,) = response.answer
    assert rrset.name.to_text() == "WeB." and rrset.ttl == 600
    assert [rd.to_text() for rd in rrset] == ["172.18.0.2"]
    assert response.edns == 0  # EDNS answered with EDNS


def test_aaaa_for_an_ipv4_only_name_is_noerror_with_no_answer() -> None:
    response = local_answer(query("web", "AAAA"), ["172.18.0.2"])
    assert response is not None and response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    both = local_answer(query("web", "AAAA"), ["172.18.0.2", "fd00::2"])
    assert both is not None and [rd.to_text() for rd in both.answer[0]] == ["fd00::2"]


def test_mx_of_a_known_name_is_empty_and_other_types_are_forwarded() -> None:
    mx = local_answer(query("web", "MX"), ["172.18.0.2"])
    assert mx is not None and mx.rcode() == dns.rcode.NOERROR and not mx.answer
    for rdtype in ("TXT", "PTR", "SRV", "ANY", "SOA"):
        assert local_answer(query("web", rdtype), ["172.18.0.2"]) is None
    chaos = query("web", "A")
    chaos.question[0].rdclass = dns.rdataclass.CH
    assert local_answer(chaos, ["172.18.0.2"]) is None


def test_unknown_or_addressless_names_are_forwarded() -> None:
    """dockerd holds no record for a name without an address: it forwards such a name."""
    assert local_answer(query(), None) is None
    assert local_answer(query(), []) is None


def test_addresses_are_shuffled_for_round_robin() -> None:
    addresses = [f"172.18.0.{i}" for i in range(2, 8)]
    orders = set()
    for _ in range(30):
        response = local_answer(query(), list(addresses))
        assert response is not None
        orders.add(tuple(rd.to_text() for rd in response.answer[0]))
    assert len(orders) > 1 and all(sorted(o) == sorted(addresses) for o in orders)


def test_a_bad_address_from_the_records_raises() -> None:
    with pytest.raises(ValueError):
        local_answer(query(), ["not-an-address"])


def test_render_truncates_to_the_clients_size() -> None:
    many = [f"10.0.{i // 250}.{i % 250}" for i in range(100)]
    q = query("many")
    response = local_answer(q, many)
    assert response is not None
    small = render(response, client_limit(q, tcp=False))
    assert len(small) <= 512
    cut = dns.message.from_wire(small)
    assert cut.flags & dns.flags.TC and cut.id == q.id and cut.question == q.question
    whole = dns.message.from_wire(render(response, client_limit(q, tcp=True)))
    assert not whole.flags & dns.flags.TC and len(whole.answer[0]) == 100


def test_error_replies() -> None:
    q = query()
    servfail = dns.message.from_wire(render(reply(q, dns.rcode.SERVFAIL), 512))
    assert servfail.rcode() == dns.rcode.SERVFAIL and servfail.id == q.id
    assert servfail.question == q.question and not servfail.answer
    q.set_opcode(dns.opcode.NOTIFY)
    notimp = dns.message.from_wire(render(reply(q, dns.rcode.NOTIMP), 512))
    assert notimp.rcode() == dns.rcode.NOTIMP and notimp.opcode() == dns.opcode.NOTIFY


def test_with_id_rewrites_only_the_id() -> None:
    wire = query().to_wire()
    changed = with_id(wire, 0xBEEF)
    assert changed[:2] == b"\xbe\xef" and changed[2:] == wire[2:]


def test_answers_accepts_only_our_id_and_question() -> None:
    q = query("example.test")
    sent = with_id(q.to_wire(), 4242)
    upstream = dns.message.make_response(dns.message.from_wire(sent))
    upstream.answer.append(dns.rrset.from_text("example.test.", 30, "IN", "A", "192.0.2.1"))
    assert answers(upstream.to_wire(), q, 4242)
    assert not answers(upstream.to_wire(), q, 4243)  # another id
    other = dns.message.make_response(dns.message.from_wire(with_id(query("x").to_wire(), 4242)))
    assert not answers(other.to_wire(), q, 4242)  # another question
    assert not answers(sent, q, 4242)  # the query itself: QR unset
    assert not answers(b"\x10\x92junk", q, 4242)
    formerr = dns.message.Message(id=4242)
    formerr.flags = dns.flags.QR
    formerr.set_rcode(dns.rcode.FORMERR)
    assert answers(formerr.to_wire(), q, 4242)  # an error may come without the question
    formerr.set_rcode(dns.rcode.NOERROR)
    assert not answers(formerr.to_wire(), q, 4242)
    mixed_case = dns.message.make_response(
        dns.message.from_wire(with_id(query("EXAMPLE.test").to_wire(), 4242))
    )
    assert answers(mixed_case.to_wire(), q, 4242)  # names compare without case


def test_upstreams_are_ip_addresses_asked_on_port_53() -> None:
    texts = ["10.0.0.1", " fd00::53 ", "fe80::1%eth0", "dns.example", "10.0.0.1:5353", "", "1.2.3"]
    assert valid_upstreams(texts, "test") == ["10.0.0.1", "fd00::53", "fe80::1%eth0"]


def test_nameservers_of_a_resolv_conf() -> None:
    text = (
        "# generated\nsearch example.com\nnameserver 10.255.255.53\n; old\n"
        "nameserver\tfd00::1 \noptions ndots:2 timeout:1\n  nameserver 127.0.0.53\n"
        "#nameserver 9.9.9.9\nnameservers 1.1.1.1\n"
    )
    assert nameservers(text) == ["10.255.255.53", "fd00::1", "127.0.0.53"]
    assert nameservers("") == []
