"""``run``/``create`` flags and the create request body they make.

Rules:
- Values are parsed as the docker CLI parses them: memory in binary units (``512m`` is
  512 MiB; a bare number is bytes), ``--cpus 1.5`` as NanoCpus, durations as Go's
  (``1m30s``, ``500ms``), ``--ulimit name=soft[:hard]``, ``--restart name[:max]``,
  ``--tmpfs path[:opts]``, ``-e K`` taking K's value from our own environment.
- A bad value is a ``UsageError`` naming the flag and the value (exit 125), before any
  request is sent, so nothing is created.
- ``create_body`` leaves out what was not asked for, so the daemon's defaults apply.
- Network flags become what the docker CLI sends: ``-p [ip:][hostPort:]containerPort[/proto]``
  (ranges map port to port; one container port with a host range keeps the range) fills
  ``HostConfig.PortBindings`` and ``ExposedPorts``; ``--expose`` ranges are expanded; the
  first ``--network`` is ``NetworkMode`` (else ``default``) and gets ``--network-alias``,
  ``--ip`` and ``--ip6`` in its ``NetworkingConfig.EndpointsConfig`` entry (a single network
  without them sends no entry); ``--dns`` must be an IP, ``--add-host`` is sent as
  ``name:ip``, each rejected with the docker CLI's words.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

from berth.cli.common import Parser, UsageError, parser

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
}
_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000,
}  # fmt: skip


def memory_bytes(text: str) -> int:
    """``512m`` → 536870912 (docker's RAMInBytes: binary units, optional ``b``)."""
    value = text.strip().lower()
    if value.endswith("b") and len(value) > 1 and value[-2] in "kmgtp":
        value = value[:-1]
    number, unit = value, ""
    if value and value[-1] in _MEMORY_UNITS:
        number, unit = value[:-1], value[-1]
    try:
        amount = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size: '{text}'") from None
    if amount < 0:
        raise argparse.ArgumentTypeError(f"invalid size: '{text}'")
    return int(amount * _MEMORY_UNITS[unit])


def cpus_to_nano(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"failed to parse {text} as a rational number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text}: must be positive")
    return round(value * 1e9)


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    rest = text.strip()
    if rest in ("0", ""):
        return 0
    total = 0.0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        j = i
        while j < len(rest) and not (rest[j].isdigit() or rest[j] == "."):
            j += 1
        number, unit = rest[:i], rest[i:j]
        if not number or unit not in _DURATION_UNITS:
            raise argparse.ArgumentTypeError(f'time: invalid duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        rest = rest[j:]
    return int(total)


def ulimit(text: str) -> dict[str, Any]:
    name, sep, values = text.partition("=")
    soft, _, hard = values.partition(":")
    try:
        soft_value = int(soft)
        hard_value = int(hard) if hard else soft_value
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid ulimit argument: {text}") from None
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"invalid ulimit argument: {text}")
    if soft_value > hard_value:
        raise argparse.ArgumentTypeError(
            f"ulimit soft limit must be less than or equal to hard limit: {soft_value} > "
            f"{hard_value}"
        )
    return {"Name": name, "Soft": soft_value, "Hard": hard_value}


def restart_policy(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise argparse.ArgumentTypeError(f"invalid restart policy {text}")
    if count and name != "on-failure":
        raise argparse.ArgumentTypeError(f"maximum retry count cannot be used with {name}")
    try:
        retries = int(count) if count else 0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"maximum retry count must be an integer: {text}"
        ) from None
    return {"Name": name, "MaximumRetryCount": retries}


def env_item(text: str) -> str | None:
    if "=" in text:
        return text
    value = os.environ.get(text)
    return None if value is None else f"{text}={value}"


def key_values(items: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def add_create_flags(p: Parser) -> None:
    add = p.add_argument
    add("--name")
    add("-e", "--env", action="append", default=[])
    add("--env-file", action="append", default=[])
    add("-w", "--workdir")
    add("-u", "--user")
    add("-h", "--hostname")
    add("--entrypoint")
    add("-l", "--label", action="append", default=[])
    add("-i", "--interactive", action="store_true")
    add("-t", "--tty", action="store_true")
    add("-m", "--memory", type=memory_bytes)
    add("--memory-swap", type=memory_bytes)
    add("--memory-reservation", type=memory_bytes)
    add("--cpus", type=cpus_to_nano)
    add("-c", "--cpu-shares", type=int)
    add("--cpuset-cpus")
    add("--cpuset-mems")
    add("--pids-limit", type=int)
    add("--ulimit", type=ulimit, action="append", default=[])
    add("--read-only", action="store_true")
    add("--tmpfs", action="append", default=[])
    add("-v", "--volume", action="append", default=[])
    add("--cap-add", action="append", default=[])
    add("--cap-drop", action="append", default=[])
    add("--privileged", action="store_true")
    add("--security-opt", action="append", default=[])
    add("--restart", type=restart_policy)
    add("--network", "--net", action="append", default=[])
    add("--network-alias", "--net-alias", action="append", default=[])
    add("--ip")
    add("--ip6")
    add("-p", "--publish", action="append", default=[])
    add("-P", "--publish-all", action="store_true")
    add("--expose", action="append", default=[])
    add("--dns", type=dns_address, action="append", default=[])
    add("--dns-search", type=dns_search, action="append", default=[])
    add("--dns-option", "--dns-opt", action="append", default=[])
    add("--add-host", type=extra_host, action="append", default=[])
    add("--stop-signal")
    add("--stop-timeout", type=int)
    add("--init", action="store_true")
    add("--oom-kill-disable", action="store_true")
    add("--shm-size", type=memory_bytes)
    add("--sysctl", action="append", default=[])
    add("--health-cmd")
    add("--health-interval", type=parse_duration)
    add("--health-timeout", type=parse_duration)
    add("--health-retries", type=int)
    add("--health-start-period", type=parse_duration)
    add("--no-healthcheck", action="store_true")
    add("--pull", choices=["missing", "always", "never"], default="missing")
    add("--platform")
    add("image")
    add("command", nargs=argparse.REMAINDER)


def create_parser(verb: str) -> Parser:
    p = parser(verb, "[OPTIONS] IMAGE [COMMAND] [ARG...]", add_help=False)  # -h is --hostname
    p.add_argument("--help", action="help")
    return p


def _env_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise UsageError(f"open {path}: {e.strerror}") from e
    return [item for line in lines if line and not line.startswith("#") if (item := env_item(line))]


def _healthcheck(a: argparse.Namespace) -> dict[str, Any] | None:
    if a.no_healthcheck:
        return {"Test": ["NONE"]}
    fields = {
        "Interval": a.health_interval,
        "Timeout": a.health_timeout,
        "Retries": a.health_retries,
        "StartPeriod": a.health_start_period,
    }
    check: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if a.health_cmd is not None:
        check["Test"] = ["CMD-SHELL", a.health_cmd]
    return check or None


def _tmpfs(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        path, _, opts = item.partition(":")
        if not path.startswith("/"):
            raise UsageError(f"invalid tmpfs path {path!r}: it must be absolute")
        result[path] = opts
    return result


def create_body(
    a: argparse.Namespace, console_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The ``POST /containers/create`` body for the parsed run/create flags."""
    env = [item for f in a.env_file for item in _env_file(f)]
    env += [item for e in a.env if (item := env_item(e))]
    exposed, bindings = published_ports(a.publish, a.expose)
    endpoints = endpoints_config(a.network, a.network_alias, a.ip, a.ip6)
    host: dict[str, Any] = {
        "Memory": a.memory,
        "MemorySwap": a.memory_swap,
        "MemoryReservation": a.memory_reservation,
        "NanoCpus": a.cpus,
        "CpuShares": a.cpu_shares,
        "CpusetCpus": a.cpuset_cpus,
        "CpusetMems": a.cpuset_mems,
        "PidsLimit": a.pids_limit,
        "Ulimits": a.ulimit or None,
        "ReadonlyRootfs": a.read_only or None,
        "Tmpfs": _tmpfs(a.tmpfs) or None,
        "Binds": a.volume or None,
        "CapAdd": a.cap_add or None,
        "CapDrop": a.cap_drop or None,
        "Privileged": a.privileged or None,
        "SecurityOpt": a.security_opt or None,
        "RestartPolicy": a.restart,
        "AutoRemove": getattr(a, "rm", False) or None,
        "NetworkMode": (a.network or ["default"])[0] if a.network or endpoints else None,
        "PortBindings": bindings or None,
        "PublishAllPorts": a.publish_all or None,
        "Dns": a.dns or None,
        "DnsSearch": a.dns_search or None,
        "DnsOptions": a.dns_option or None,
        "ExtraHosts": a.add_host or None,
        "Init": a.init or None,
        "OomKillDisable": a.oom_kill_disable or None,
        "ShmSize": a.shm_size,
        "Sysctls": key_values(a.sysctl) or None,
        "ConsoleSize": list(console_size) if console_size else None,
    }
    if host["AutoRemove"] and host["RestartPolicy"] and host["RestartPolicy"]["Name"] != "no":
        raise UsageError("Conflicting options: --restart and --rm")
    attach_stdin = a.interactive and not getattr(a, "detach", False)
    body: dict[str, Any] = {
        "Image": a.image,
        "Cmd": a.command or None,
        "Env": env or None,
        "WorkingDir": a.workdir,
        "User": a.user,
        "Hostname": a.hostname,
        "Labels": key_values(a.label) or None,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        "StdinOnce": attach_stdin,
        "AttachStdin": attach_stdin,
        "AttachStdout": not getattr(a, "detach", False),
        "AttachStderr": not getattr(a, "detach", False),
        "StopSignal": a.stop_signal,
        "StopTimeout": a.stop_timeout,
        "Healthcheck": _healthcheck(a),
        "ExposedPorts": exposed or None,
        "HostConfig": {k: v for k, v in host.items() if v is not None},
        "NetworkingConfig": {"EndpointsConfig": endpoints} if endpoints else None,
    }
    if a.entrypoint is not None:
        body["Entrypoint"] = [a.entrypoint]  # [""] resets the image's, as docker sends it
    return {k: v for k, v in body.items() if v is not None}


# ------------------------------------------------------------------ network flags

_PROTOCOLS = ("tcp", "udp", "sctp")
_DOMAIN = re.compile(
    r"^(:?(([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])\.)*"
    r"([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9\-]*[A-Za-z0-9]))$"
)
_NOT_USER_DEFINED = ("default", "bridge", "host", "none")


def dns_address(text: str) -> str:
    """``--dns``: an IP address, in its canonical form."""
    import ipaddress  # here: run and create only pay for it when a flag needs it

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"IP address is not correctly formatted: {text}") from None


def dns_search(text: str) -> str:
    value = text.strip(" ")
    if value != "." and (not _DOMAIN.match(value) or len(value) > 255):
        raise argparse.ArgumentTypeError(f"{value} is not a valid domain")
    return value


def extra_host(text: str) -> str:
    """``--add-host name:ip`` or ``name=ip`` (an IPv6 address may be in brackets), sent as
    ``name:ip``; ``host-gateway`` is passed on for the daemon to resolve."""
    import ipaddress  # here: run and create only pay for it when a flag needs it

    name, sep, address = text.partition("=")
    if not sep:
        name, sep, address = text.partition(":")
    if not sep or not name or ":" in name:
        raise argparse.ArgumentTypeError(f'bad format for add-host: "{text}"')
    if address != "host-gateway":
        if len(address) > 2 and address[0] == "[" and address[-1] == "]":
            address = address[1:-1]
        try:
            ipaddress.ip_address(address.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f'invalid IP address in add-host: "{address}"'
            ) from None
    return f"{name}:{address}"


def port_range(text: str) -> tuple[int, int]:
    """nat.ParsePortRange: ``80`` or ``8000-8010``; ValueError with Go's words."""
    if not text:
        raise ValueError("empty string specified for ports")
    first, dash, last = text.partition("-")
    start = _uint16(first)
    end = _uint16(last.split("-")[0]) if dash else start
    if end < start:
        raise ValueError(f"invalid range specified for port: {text}")
    return start, end


def _uint16(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f'strconv.ParseUint: parsing "{text}": invalid syntax')
    if int(text) > 65535:
        raise ValueError(f'strconv.ParseUint: parsing "{text}": value out of range')
    return int(text)


def _proto_port(text: str) -> tuple[str, str]:
    """nat.SplitProtoPort: ``80/udp`` → (udp, 80); no protocol is tcp."""
    parts = text.split("/")
    if not text or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _long_publish(spec: str) -> str:
    """``target=80,published=8080,protocol=udp`` as ``8080:80/udp`` (what the CLI does)."""
    params = {"protocol": "tcp"}
    for param in spec.split(","):
        key, sep, value = param.partition("=")
        if not sep or not key:
            raise UsageError(
                f"invalid publish opts format (should be name=value but got '{param}')"
            )
        params[key] = value
    return f"{params.get('published', '')}:{params.get('target', '')}/{params['protocol']}"


def publish_spec(spec: str) -> list[tuple[str, dict[str, str]]]:
    """One ``-p`` value as (``port/proto``, binding) pairs, as nat.ParsePortSpec makes them."""
    import ipaddress  # here: run and create only pay for it when a flag needs it

    if "=" in spec:
        spec = _long_publish(spec)
    parts = spec.split(":")
    container = parts[-1]
    host_port = parts[-2] if len(parts) > 1 else ""
    ip = ":".join(parts[:-2])
    proto, container = _proto_port(container)
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise UsageError(f"invalid IP address {ip}: missing ']' in address")
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(f"invalid IP address: {ip}") from None
    if not container:
        raise UsageError(f"no port specified: {spec}<empty>")
    try:
        start, end = port_range(container)
    except ValueError:
        raise UsageError(f"invalid containerPort: {container}") from None
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = port_range(host_port)
        except ValueError:
            raise UsageError(f"invalid hostPort: {host_port}") from None
        if end - start != host_end - host_start and end != start:
            raise UsageError(
                f"invalid ranges specified for container and host Ports: {container} and "
                f"{host_port}"
            )
    if proto.lower() not in _PROTOCOLS:
        raise UsageError(f"invalid proto: {proto}")
    result = []
    for i in range(end - start + 1):
        host = str(host_start + i) if host_port else ""
        if start == end and host_start != host_end:
            host = f"{host}-{host_end}"
        result.append((f"{start + i}/{proto.lower()}", {"HostIp": ip, "HostPort": host}))
    return result


def published_ports(
    publish: list[str], expose: list[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, str]]]]:
    """(``ExposedPorts``, ``HostConfig.PortBindings``) from ``-p`` and ``--expose``."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for spec in publish:
        for port, binding in publish_spec(spec):
            exposed[port] = {}
            bindings.setdefault(port, []).append(binding)
    for item in expose:
        if ":" in item:
            raise UsageError(f"invalid port format for --expose: {item}")
        proto, port = _proto_port(item)
        try:
            start, end = port_range(port)
        except ValueError as e:
            raise UsageError(f"invalid range format for --expose: {item}, error: {e}") from None
        for number in range(start, end + 1):
            exposed.setdefault(f"{number}/{proto}", {})
    return dict(sorted(exposed.items())), dict(sorted(bindings.items()))


def is_user_defined(network: str) -> bool:
    return network not in _NOT_USER_DEFINED and not network.startswith("container:")


def endpoints_config(
    networks: list[str], aliases: list[str], ipv4: str | None, ipv6: str | None
) -> dict[str, dict[str, Any]]:
    """``NetworkingConfig.EndpointsConfig``: the first network (``default`` when none is
    named) carries the aliases and addresses; a lone network with nothing to carry is left
    out, as the docker CLI leaves it."""
    first: dict[str, Any] = {}
    if aliases:
        first["Aliases"] = list(aliases)
    addresses = {"IPv4Address": ipv4, "IPv6Address": ipv6}
    if ipv4 or ipv6:
        first["IPAMConfig"] = {k: v for k, v in addresses.items() if v}
    names = networks or ["default"]
    if aliases and not is_user_defined(names[0]):
        raise UsageError("network-scoped aliases are only supported for user-defined networks")
    if len(set(names)) != len(names):
        repeated = next(n for n in names if names.count(n) > 1)
        raise UsageError(f'network "{repeated}" is specified multiple times')
    if len(names) > 1 and len({is_user_defined(n) for n in names}) > 1:
        raise UsageError(
            "conflicting options: cannot attach both user-defined and non-user-defined "
            "network-modes"
        )
    endpoints: dict[str, dict[str, Any]] = {name: {} for name in names}
    endpoints[names[0]] = first
    if len(names) == 1 and not first:
        return {}
    return endpoints
