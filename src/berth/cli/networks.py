"""Network verbs (``network create/ls/inspect/rm/prune/connect/disconnect``) and ``port``.

Rules:
- Requests are the docker CLI's: ``network create`` sends the whole create body the CLI
  sends (driver, IPAM with its subnet/range/gateway configs, options, labels, the flags), so
  berthd and dockerd see the same request; ``connect`` sends an ``EndpointConfig`` with the
  aliases, the addresses and the driver options.
- Output is the docker CLI's: ``create`` prints the ID; ``ls`` is sorted by name in natural
  order, IDs cut to 12 characters unless ``--no-trunc``; ``rm`` prints each name removed
  (``-f`` is quiet about a network that does not exist; after a failure, "exit status 1" as
  docker 28 prints it); ``prune`` prints "Deleted
  Networks:" and the names; ``port`` prints ``80/tcp -> 0.0.0.0:8080`` lines sorted in
  natural order, IPv6 addresses in brackets.
- Errors: the daemon's as ``Error response from daemon: …`` with exit 1; a flag the docker
  CLI rejects before sending anything is rejected here with its words, nothing sent.
- ``inspect`` prints the documents found as one JSON array (``[]`` when none), then one
  ``Error response from daemon: …`` line per name not found, and exits 1 if any was missing.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from typing import Any

from berth.cli.client import ApiError
from berth.cli.common import CliError, Context, filters_query, inspect_each, parser
from berth.cli.options import key_values
from berth.cli.render import go_time_text, natural_sorted, print_rows, short_id
from berth.cli.template import Record

LS_DEFAULT = "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}"
LS_HEADERS: dict[str, Any] = {
    "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv4": "IPV4",
    "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT",
    "Label": str,
}  # fmt: skip
PRUNE_WARNING = "WARNING! This will remove all custom networks not used by at least one container."


def _bool_text(value: Any) -> str:
    return "true" if value else "false"


def network_row(n: dict[str, Any], trunc: bool = True) -> Record:
    """One ``network ls`` row from a ``GET /networks`` entry."""
    labels = n.get("Labels") or {}
    return Record(
        ID=short_id(n.get("Id", "")) if trunc else n.get("Id", ""),
        Name=n.get("Name", ""),
        Driver=n.get("Driver", ""),
        Scope=n.get("Scope", ""),
        IPv4=_bool_text(n.get("EnableIPv4")),
        IPv6=_bool_text(n.get("EnableIPv6")),
        Internal=_bool_text(n.get("Internal")),
        Labels=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        CreatedAt=go_time_text(n.get("Created", "")),
        Label=lambda name: labels.get(name, ""),
    )


# ------------------------------------------------------------------ create


def _csv(values: list[str]) -> list[str]:
    """pflag's string slices: each value may carry several, comma-separated."""
    return [item for value in values for item in value.split(",") if item]


def _cidr(flag: str) -> Any:
    def parse(text: str) -> str:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid CIDR address: {text}") from None

    parse.__name__ = flag
    return parse


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid string being converted to IP address: {text}"
        ) from None


def _contains(subnet: str, address: str) -> bool:
    try:
        network = ipaddress.ip_network(subnet, strict=False)
    except ValueError:
        raise CliError(f"invalid subnet: invalid CIDR address: {subnet}") from None
    return ipaddress.ip_address(address.split("/", maxsplit=1)[0]) in network


def ipam_configs(
    subnets: list[str], ranges: list[str], gateways: list[str], aux: dict[str, str]
) -> list[dict[str, Any]]:
    """The IPAM ``Config`` list, each range, gateway and aux address under its subnet, with
    the docker CLI's checks (and words) before anything is sent."""
    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise CliError("every ip-range or gateway must have a corresponding subnet")
    configs: dict[str, dict[str, Any]] = {}
    for subnet in subnets:
        for other in configs:
            if _contains(subnet, other.split("/")[0]) or _contains(other, subnet.split("/")[0]):
                raise CliError("multiple overlapping subnet configuration is not supported")
        configs[subnet] = {"Subnet": subnet}
    for field, values in (("IPRange", ranges), ("Gateway", gateways)):
        what = "ranges" if field == "IPRange" else "gateways"
        for value in values:
            matched = [s for s in subnets if _contains(s, value)]
            if not matched:
                kind = "range" if field == "IPRange" else "gateway"
                raise CliError(f"no matching subnet for {kind} {value}")
            for subnet in matched:
                if field in configs[subnet]:
                    raise CliError(
                        f"cannot configure multiple {what} ({value}, {configs[subnet][field]}) "
                        f"{'on' if field == 'IPRange' else 'for'} the same subnet ({subnet})"
                    )
                configs[subnet][field] = value
    for key, address in aux.items():
        matched = [s for s in subnets if _contains(s, address)]
        if not matched:
            raise CliError(f"no matching subnet for aux-address {address}")
        for subnet in matched:
            configs[subnet].setdefault("AuxiliaryAddresses", {})[key] = address
    return list(configs.values())


def create_request(a: argparse.Namespace) -> dict[str, Any]:
    """The ``POST /networks/create`` body for the parsed flags, as the docker CLI sends it."""
    configs = ipam_configs(_csv(a.subnet), a.ip_range, a.gateway, key_values(a.aux_address))
    body: dict[str, Any] = {
        "Driver": a.driver,
        "Scope": a.scope,
        "IPAM": {"Driver": a.ipam_driver, "Options": key_values(a.ipam_opt), "Config": configs},
        "Internal": a.internal,
        "Attachable": a.attachable,
        "Ingress": a.ingress,
        "ConfigOnly": a.config_only,
        "ConfigFrom": {"Network": a.config_from} if a.config_from else None,
        "Options": key_values(a.opt),
        "Labels": key_values(a.label),
        "Name": a.name,
        "CheckDuplicate": True,
    }
    if a.ipv6 is not None:
        body["EnableIPv6"] = a.ipv6
    return body


def _bool_flag(argv: list[str], flag: str) -> tuple[list[str], bool | None]:
    """A Go boolean flag (``--ipv6``, ``--ipv6=false``; never a separate value): the other
    arguments, and the flag's value or None when it is not given."""
    value: bool | None = None
    rest = []
    for arg in argv:
        name, sep, text = arg.partition("=")
        if name != flag:
            rest.append(arg)
        elif not sep or text.lower() in ("1", "t", "true"):
            value = True
        elif text.lower() in ("0", "f", "false"):
            value = False
        else:
            raise CliError(
                f'invalid argument "{text}" for "{flag}" flag: strconv.ParseBool: parsing '
                f'"{text}": invalid syntax',
                125,
            )
    return rest, value


def cmd_network_create(ctx: Context, argv: list[str]) -> int:
    p = parser("network create", "[OPTIONS] NETWORK", "Create a network")
    add = p.add_argument
    add("-d", "--driver", default="bridge")
    add("-o", "--opt", action="append", default=[])
    add("--label", action="append", default=[])
    add("--internal", action="store_true")
    add("--attachable", action="store_true")
    add("--ingress", action="store_true")
    add("--scope", default="")
    add("--config-only", action="store_true")
    add("--config-from", default="")
    add("--ipam-driver", default="default")
    add("--ipam-opt", action="append", default=[])
    add("--subnet", action="append", default=[])
    add("--ip-range", action="append", default=[], type=_cidr("ip-range"))
    add("--gateway", action="append", default=[], type=_ip)
    add("--aux-address", action="append", default=[])
    add("name", metavar="NETWORK")
    argv, ipv6 = _bool_flag(argv, "--ipv6")
    a = p.parse_args(argv)
    a.ipv6 = ipv6
    result = ctx.client.post("/networks/create", body=create_request(a)) or {}
    sys.stdout.write(f"{result.get('Id', '')}\n")
    return 0


# ------------------------------------------------------------------ ls, inspect, rm, prune


def cmd_network_ls(ctx: Context, argv: list[str]) -> int:
    p = parser("network ls", "[OPTIONS]", "List networks")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("-f", "--filter", action="append", default=[])
    a = p.parse_args(argv)
    networks = ctx.client.get("/networks", {"filters": filters_query(a.filter)}) or []
    rows = [network_row(n, not a.no_trunc) for n in natural_sorted(networks, _name)]
    fmt = "{{.ID}}" if a.quiet and a.format in ("", "table") else a.format
    print_rows(rows, fmt, LS_DEFAULT, LS_HEADERS)
    return 0


def _name(item: dict[str, Any]) -> str:
    return str(item.get("Name", ""))


def cmd_network_inspect(ctx: Context, argv: list[str]) -> int:
    p = parser("network inspect", "[OPTIONS] NETWORK [NETWORK...]")
    p.add_argument("-f", "--format", default="")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    a = p.parse_args(argv)
    return inspect_each(
        a.names, lambda n: ctx.client.get(f"/networks/{n}", {"verbose": a.verbose}), a.format
    )


def cmd_network_rm(ctx: Context, argv: list[str]) -> int:
    p = parser("network rm", "NETWORK [NETWORK...]")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+", metavar="NETWORK")
    a = p.parse_args(argv)
    failed = False
    for name in a.names:
        try:
            ctx.client.call("DELETE", f"/networks/{name}")
        except ApiError as e:
            if not (a.force and e.status == 404):
                sys.stderr.write(f"Error response from daemon: {e.message}\n")
                failed = True
            continue
        sys.stdout.write(f"{name}\n")
    if failed:
        raise CliError("exit status 1")  # what docker 28 prints last, as its StatusError
    return 0


def cmd_network_prune(ctx: Context, argv: list[str]) -> int:
    from berth.cli.prune import confirmed

    p = parser("network prune", "[OPTIONS]")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    a = p.parse_args(argv)
    if not confirmed(PRUNE_WARNING, a.force):
        return 0
    result = ctx.client.post("/networks/prune", {"filters": filters_query(a.filter)}) or {}
    deleted = result.get("NetworksDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Networks:\n" + "".join(f"{n}\n" for n in deleted) + "\n")
    return 0


# ------------------------------------------------------------------ connect, disconnect


def cmd_network_connect(ctx: Context, argv: list[str]) -> int:
    p = parser("network connect", "[OPTIONS] NETWORK CONTAINER")
    p.add_argument("--ip", type=_ip)
    p.add_argument("--ip6", type=_ip)
    p.add_argument("--alias", action="append", default=[])
    p.add_argument("--link", action="append", default=[])
    p.add_argument("--link-local-ip", action="append", default=[], type=_ip)
    p.add_argument("--driver-opt", action="append", default=[])
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    a = p.parse_args(argv)
    driver_opts: dict[str, str] = {}
    for item in _csv(a.driver_opt):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError("invalid key/value pair format in driver options")
        driver_opts[key.strip()] = value.strip()
    addresses = {"IPv4Address": a.ip, "IPv6Address": a.ip6, "LinkLocalIPs": a.link_local_ip}
    endpoint = {
        "IPAMConfig": {k: v for k, v in addresses.items() if v},
        "Links": a.link or None,
        "Aliases": _csv(a.alias),
        "DriverOpts": driver_opts,
    }
    body = {"Container": a.container, "EndpointConfig": endpoint}
    ctx.client.post(f"/networks/{a.network}/connect", body=body)
    return 0


def cmd_network_disconnect(ctx: Context, argv: list[str]) -> int:
    p = parser("network disconnect", "[OPTIONS] NETWORK CONTAINER")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("container", metavar="CONTAINER")
    a = p.parse_args(argv)
    body = {"Container": a.container, "Force": a.force}
    ctx.client.post(f"/networks/{a.network}/disconnect", body=body)
    return 0


# ------------------------------------------------------------------ port


def port_lines(ports: dict[str, Any] | None, wanted: str | None = None) -> list[str]:
    """``docker port``'s lines from ``NetworkSettings.Ports``; with ``wanted``
    (``80``, ``80/udp``) only that port's host addresses."""
    from berth.cli.containers import host_port

    if wanted is not None:
        frontends = (ports or {}).get(wanted) or []
        lines = [host_port(f.get("HostIp", ""), f.get("HostPort", "")) for f in frontends]
    else:
        lines = [
            f"{private} -> {host_port(f.get('HostIp', ''), f.get('HostPort', ''))}"
            for private, frontends in (ports or {}).items()
            for f in frontends or []
        ]
    return natural_sorted(lines)


def cmd_port(ctx: Context, argv: list[str]) -> int:
    p = parser("port", "CONTAINER [PRIVATE_PORT[/PROTO]]")
    p.add_argument("container")
    p.add_argument("port", nargs="?")
    a = p.parse_args(argv)
    doc = ctx.client.get(f"/containers/{a.container}/json")
    ports = (doc.get("NetworkSettings") or {}).get("Ports")
    wanted = None
    if a.port is not None:
        number, _, proto = a.port.partition("/")
        if not number.isdigit() or int(number) > 65535:
            reason = "value out of range" if number.isdigit() else "invalid syntax"
            raise CliError(
                f'Error: invalid port ({number}): strconv.ParseUint: parsing "{number}": {reason}'
            )
        wanted = f"{number}/{proto or 'tcp'}"
    lines = port_lines(ports, wanted)
    if wanted is not None and not lines:
        raise CliError(f"Error: No public port '{a.port}' published for {a.container}")
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0
