"""Published ports, the create-time side: parse and check what a container asks for, pick host
ports, and render what inspect and ``/containers/json`` show.

What is asked (as dockerd reads it):
- ``Config.ExposedPorts`` ``{"80/tcp": {}}``, ``HostConfig.PortBindings``
  ``{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`` and ``HostConfig.PublishAllPorts``.
  A key without a protocol is tcp; tcp and udp are served. A key of ``PortBindings`` is exposed
  too. ``HostPort`` is one port, a range ``"8000-8010"`` (one port picked in it), or
  ``""``/``"0"`` (one picked from the ephemeral range); ``HostIp`` ``""`` is ``0.0.0.0``.
  ``PublishAllPorts`` publishes every exposed port that has no binding on an ephemeral port.
- Bad input is ``InvalidArgument`` with dockerd's (or the docker CLI's) text:
  ``invalid port specification: "x"``, ``invalid proto: x``, ``invalid IP address: x``.

Host ports (``PortAllocator``, one per daemon):
- The ephemeral range is ``/proc/sys/net/ipv4/ip_local_port_range`` of berthd's namespace (as
  dockerd's portallocator reads it), searched round-robin per protocol from the last port given.
- A port is taken per (protocol, host IP, port); ``0.0.0.0`` takes the port on every address.
  A port berthd already gave is ``Conflict`` with dockerd's text ("driver failed programming
  external connectivity on endpoint NAME (ID): Bind for 0.0.0.0:8080 failed: port is already
  allocated"). The allocator only books; the proxy's listener is what holds the port in the
  kernel (``portproxy``), and ``bind_failed`` words the error when another process has it.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from berth.errors import Conflict, InvalidArgument

PROTOCOLS = ("tcp", "udp")
ANY_IPV4 = "0.0.0.0"
DEFAULT_EPHEMERAL = (49153, 60999)  # dockerd's fallback when the sysctl cannot be read
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


@dataclass(frozen=True, order=True)
class PortProto:
    """A container port: ``80/tcp``."""

    port: int
    proto: str = "tcp"

    def __str__(self) -> str:
        return f"{self.port}/{self.proto}"


@dataclass(frozen=True)
class PortRequest:
    """One binding asked for: a host port (0 = any) or range on a host IP, to a container port."""

    target: PortProto
    host_ip: str  # normalized: "0.0.0.0" for ""
    host_port_start: int  # 0: any ephemeral port
    host_port_end: int

    @property
    def dynamic(self) -> bool:
        return self.host_port_start != self.host_port_end or self.host_port_start == 0


@dataclass(frozen=True)
class Binding:
    """A binding with its host port chosen."""

    target: PortProto
    host_ip: str
    host_port: int

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}"


@dataclass(frozen=True)
class Publication:
    """What a container exposes and publishes (sorted), from its create request."""

    exposed: tuple[PortProto, ...] = ()
    requests: tuple[PortRequest, ...] = ()


@dataclass(frozen=True)
class PublishedPorts:
    """What a running container shows: its exposed ports and the bindings it holds."""

    exposed: tuple[PortProto, ...] = ()
    bindings: tuple[Binding, ...] = ()

    def inspect_json(self) -> dict[str, list[dict[str, str]] | None]:
        """``NetworkSettings.Ports`` of inspect: ``{"80/tcp": [{"HostIp", "HostPort"}],
        "81/tcp": null}`` (dockerd 28's shape)."""
        out: dict[str, list[dict[str, str]] | None] = {str(p): None for p in self.exposed}
        for b in self.bindings:
            entries = out.get(str(b.target)) or []
            entries.append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
            out[str(b.target)] = entries
        return out

    @staticmethod
    def from_inspect_json(data: Mapping[str, Any] | None) -> PublishedPorts:
        """Back from ``inspect_json`` (what a container record keeps across restarts)."""
        exposed: list[PortProto] = []
        bindings: list[Binding] = []
        for key, entries in (data or {}).items():
            target = parse_port_key(str(key))
            exposed.append(target)
            for entry in entries or ():
                port = int(str(entry.get("HostPort") or 0))
                bindings.append(Binding(target, _host_ip(str(entry.get("HostIp") or "")), port))
        return PublishedPorts(tuple(sorted(exposed)), tuple(bindings))

    def list_json(self) -> list[dict[str, Any]]:
        """``Ports`` of ``/containers/json``: one row per binding, one per exposed-only port."""
        rows: list[dict[str, Any]] = []
        bound = {b.target for b in self.bindings}
        for b in sorted(self.bindings, key=lambda b: (b.target, b.host_ip, b.host_port)):
            rows.append(
                {
                    "IP": b.host_ip,
                    "PrivatePort": b.target.port,
                    "PublicPort": b.host_port,
                    "Type": b.target.proto,
                }
            )
        for p in self.exposed:
            if p not in bound:
                rows.append({"PrivatePort": p.port, "Type": p.proto})
        return rows


# --------------------------------------------------------------------------- parsing


def _bad_spec(text: str) -> InvalidArgument:
    return InvalidArgument(f"invalid port specification: {_go_quote(text)}")


def _go_quote(text: str) -> str:
    """Go's %q for the texts we quote (plain ASCII in practice; escapes the rest)."""
    body = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in body) + '"'


def _port_number(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii() or int(text) > 65535:
        raise _bad_spec(whole)
    return int(text)


def _port_range(text: str) -> tuple[int, int]:
    """``"80"`` or ``"80-90"`` -> (start, end); a bad one is dockerd's text."""
    if "-" not in text:
        n = _port_number(text, text)
        return n, n
    start_text, _, end_text = text.partition("-")
    start, end = _port_number(start_text, text), _port_number(end_text, text)
    if end < start:
        raise _bad_spec(text)
    return start, end


def split_proto(key: str) -> tuple[str, str]:
    """``"80/udp"`` -> ("80", "udp"); no protocol is tcp (nat.SplitProtoPort)."""
    port, sep, proto = key.partition("/")
    if not sep or not proto:
        return port, "tcp"
    return port, proto.lower()


def _check_proto(proto: str) -> None:
    if proto not in PROTOCOLS:
        raise InvalidArgument(f"invalid proto: {proto}")


def parse_port_key(key: str) -> PortProto:
    """A ``PortBindings`` key: one container port (not 0) and its protocol."""
    port_text, proto = split_proto(key)
    port = _port_number(port_text, port_text)
    if port == 0:
        raise _bad_spec(port_text)
    _check_proto(proto)
    return PortProto(port, proto)


def parse_exposed_key(key: str) -> list[PortProto]:
    """An ``ExposedPorts`` key; a range (as some image builders leave one) is expanded."""
    port_text, proto = split_proto(key)
    start, end = _port_range(port_text)
    if start == 0:
        raise _bad_spec(port_text)
    _check_proto(proto)
    return [PortProto(p, proto) for p in range(start, end + 1)]


def _host_ip(text: str) -> str:
    if text in ("", ANY_IPV4):
        return ANY_IPV4
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        raise InvalidArgument(f"invalid IP address: {text}") from None


def _host_ports(text: str) -> tuple[int, int]:
    if text in ("", "0"):
        return 0, 0
    port_text, _ = split_proto(text)  # dockerd splits a "/proto" off HostPort too
    return _port_range(port_text)


def _mapping(value: Any, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"{field} must be an object, not {type(value).__name__}")
    return value


def publication(config: Mapping[str, Any], host_config: Mapping[str, Any]) -> Publication:
    """What a create request exposes and publishes; ``InvalidArgument`` on bad input.
    Called at create (to refuse early) and again when the sandbox is ready."""
    exposed: set[PortProto] = set()
    for key in _mapping(config.get("ExposedPorts"), "ExposedPorts"):
        exposed.update(parse_exposed_key(str(key)))
    requests: list[PortRequest] = []
    bound: set[PortProto] = set()
    for key, entries in _mapping(host_config.get("PortBindings"), "PortBindings").items():
        target = parse_port_key(str(key))
        exposed.add(target)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise InvalidArgument(f"PortBindings[{key}] must be a list of bindings")
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise InvalidArgument(f"PortBindings[{key}] must be a list of bindings")
            start, end = _host_ports(str(entry.get("HostPort") or ""))
            host_ip = _host_ip(str(entry.get("HostIp") or ""))
            requests.append(PortRequest(target, host_ip, start, end))
            bound.add(target)
    if host_config.get("PublishAllPorts"):
        for target in exposed - bound:
            requests.append(PortRequest(target, ANY_IPV4, 0, 0))
    requests.sort(key=lambda r: (r.target, r.host_ip, r.host_port_start))
    return Publication(tuple(sorted(exposed)), tuple(requests))


# --------------------------------------------------------------------------- host ports


def read_ephemeral_range(path: str = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral port range of the caller's network namespace."""
    try:
        with open(path) as f:
            low, high = (int(x) for x in f.read().split()[:2])
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    if not 0 < low <= high <= 65535:
        return DEFAULT_EPHEMERAL
    return low, high


def already_allocated(name: str, owner_id: str, binding: Binding) -> Conflict:
    return Conflict(
        f"driver failed programming external connectivity on endpoint {name} ({owner_id}): "
        f"Bind for {binding} failed: port is already allocated"
    )


def bind_failed(name: str, owner_id: str, binding: Binding, to: str, reason: str) -> Conflict:
    """Another process holds the port (the kernel refused the listener's bind)."""
    return Conflict(
        f"driver failed programming external connectivity on endpoint {name} ({owner_id}): "
        f"failed to bind host port for {binding}:{to}:{binding.target}: {reason}"
    )


def _overlaps(a: str, b: str) -> bool:
    """Whether two listeners' addresses clash: the same one, or the unspecified address of the
    same family (the proxy's IPv6 listeners are IPv6-only)."""
    if a == b:
        return True
    ipv6 = ":" in a, ":" in b
    if ipv6[0] != ipv6[1]:
        return False
    return a in (ANY_IPV4, "::") or b in (ANY_IPV4, "::")


class PortAllocator:
    """Host ports berthd gave out, by owner (a container id). Thread-safe."""

    def __init__(self, ephemeral: tuple[int, int] | None = None) -> None:
        self.ephemeral = ephemeral or read_ephemeral_range()
        self._lock = threading.Lock()
        self._taken: dict[tuple[str, int], list[tuple[str, str]]] = {}  # -> [(host_ip, owner)]
        self._next: dict[str, int] = {}

    def is_free(self, proto: str, host_ip: str, port: int) -> bool:
        with self._lock:
            return self._free(proto, host_ip, port)

    def _free(self, proto: str, host_ip: str, port: int) -> bool:
        return not any(_overlaps(ip, host_ip) for ip, _ in self._taken.get((proto, port), ()))

    def candidates(self, request: PortRequest, preferred: int = 0) -> Iterator[int]:
        """Ports to try for a request, in order: the fixed one, or ``preferred`` (the port the
        container had before a daemon restart) when the request allows it, then each port of
        its range (the ephemeral range round-robin from the last port given)."""
        if not request.dynamic:
            yield request.host_port_start
            return
        low, high = (
            (request.host_port_start, request.host_port_end)
            if request.host_port_start
            else self.ephemeral
        )
        if preferred and low <= preferred <= high:
            yield preferred
        if request.host_port_start:
            yield from range(low, high + 1)
            return
        with self._lock:
            start = self._next.get(request.target.proto, low)
        if not low <= start <= high:
            start = low
        yield from range(start, high + 1)
        yield from range(low, start)

    def take(self, owner: str, proto: str, host_ip: str, port: int) -> bool:
        """Book a port; False if berthd already gave it (or an overlapping address's)."""
        with self._lock:
            if not self._free(proto, host_ip, port):
                return False
            self._taken.setdefault((proto, port), []).append((host_ip, owner))
            low, high = self.ephemeral
            if low <= port <= high:
                self._next[proto] = port + 1 if port < high else low
            return True

    def give_back(self, owner: str, proto: str, host_ip: str, port: int) -> None:
        with self._lock:
            holders = self._taken.get((proto, port), [])
            if (host_ip, owner) in holders:
                holders.remove((host_ip, owner))
            if not holders:
                self._taken.pop((proto, port), None)

    def release(self, owner: str) -> None:
        """Every port of one owner."""
        with self._lock:
            for key in list(self._taken):
                kept = [h for h in self._taken[key] if h[1] != owner]
                if kept:
                    self._taken[key] = kept
                else:
                    del self._taken[key]
