"""Container verbs other than run/create/start/exec: ps, lifecycle, logs, inspect, top, stats.

Rules:
- ``ps`` rows carry the docker CLI's field names (``.ID``, ``.Image``, ``.Command``,
  ``.CreatedAt``, ``.RunningFor``, ``.Ports``, ``.State``, ``.Status``, ``.Size``, ``.Names``,
  ``.Labels``, ``.Mounts``, ``.Networks``) and values (12-character IDs and a quoted command
  cut to 20 characters unless ``--no-trunc``); the default table is docker's.
- ``inspect`` tries a container, then an image (unless ``--type``); a name found as neither
  prints ``Error: No such object: NAME`` and the command exits 1, after printing the rest.
- ``logs`` asks the container's ``Config.Tty`` first, to know whether the stream is framed.
- Stats arithmetic lives in ``stats.py``; this module only fetches and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from berth.cli.client import ApiError
from berth.cli.common import CliError, Context, filters_query, for_each, parser
from berth.cli.render import ago, ellipsis, human_size, print_rows, short_id, unix_time_text
from berth.cli.streams import copy_output
from berth.cli.template import Record, Template

PS_DEFAULT = (
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
)
PS_HEADERS: dict[str, Any] = {
    "Label": lambda name: str(name).rsplit(".", 1)[-1].replace("-", " ").replace("_", " "),
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS",
    "Size": "SIZE", "Names": "NAMES", "Labels": "LABELS", "Mounts": "MOUNTS",
    "Networks": "NETWORKS", "LocalVolumes": "LOCAL VOLUMES",
}  # fmt: skip


def host_port(ip: str, port: object) -> str:
    """Go's net.JoinHostPort: an IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def displayable_ports(ports: list[dict[str, Any]]) -> str:
    """The PORTS column as docker renders it: sorted by private port, IP, public port, type;
    runs of consecutive ports published on the same port number (or not published) collapsed
    into ranges per IP and protocol (``0.0.0.0:7000-7001->7000-7001/udp``); mappings to
    another host port listed last (``[::]:8080->80/tcp``)."""
    ordered = sorted(
        ports or [],
        key=lambda p: (p.get("PrivatePort", 0), p.get("IP", ""), p.get("PublicPort", 0),
                       p.get("Type", "")),
    )  # fmt: skip
    groups: dict[str, list[int]] = {}  # type or ip/type -> [first, last], first seen first
    done: list[str] = []
    mappings: list[str] = []
    for port in ordered:
        private, kind, ip = port.get("PrivatePort", 0), port.get("Type", ""), port.get("IP", "")
        key = kind
        if ip:
            if port.get("PublicPort", 0) != private:
                mappings.append(f"{host_port(ip, port.get('PublicPort', 0))}->{private}/{kind}")
                continue
            key = f"{ip}/{kind}"
        group = groups.get(key)
        if group is None:
            groups[key] = [private, private]
        elif private == group[1] + 1:
            group[1] = private
        else:
            done.append(_port_group(key, *group))
            groups[key] = [private, private]
    done += [_port_group(key, *group) for key, group in groups.items()]
    return ", ".join(done + mappings)


def _port_group(key: str, first: int, last: int) -> str:
    ip, _, kind = key.rpartition("/")
    ports = str(first) if first == last else f"{first}-{last}"
    if ip:
        ports = f"{host_port(ip, ports)}->{ports}"
    return f"{ports}/{kind}"


def ps_row(c: dict[str, Any], trunc: bool = True, now: float | None = None) -> Record:
    """One ``docker ps`` row from a ``/containers/json`` entry."""
    names = [n.lstrip("/") for n in c.get("Names") or []]
    if trunc:
        names = [n for n in names if "/" not in n]
    command = c.get("Command", "")
    labels = c.get("Labels") or {}
    size = human_size(c.get("SizeRw") or 0)
    if c.get("SizeRootFs"):
        size += f" (virtual {human_size(c['SizeRootFs'])})"
    networks = (c.get("NetworkSettings") or {}).get("Networks") or {}
    image = c.get("Image", "") or "<no image>"
    if trunc and image.startswith("sha256:"):
        image = short_id(image)
    return Record(
        ID=short_id(c["Id"]) if trunc else c["Id"],
        Image=image,
        Command=json.dumps(ellipsis(command, 20) if trunc else command, ensure_ascii=False),
        CreatedAt=unix_time_text(c.get("Created", 0)),
        RunningFor=ago(c.get("Created", 0), now),
        Ports=displayable_ports(c.get("Ports") or []),
        State=c.get("State", ""),
        Status=c.get("Status", ""),
        Size=size,
        Names=",".join(names),
        Labels=",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        Mounts=",".join(m.get("Name") or m.get("Source", "") for m in c.get("Mounts") or []),
        Networks=",".join(sorted(networks)),
        LocalVolumes=str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
        Platform=(c.get("ImageManifestDescriptor") or {}).get("platform"),
        Label=lambda name: labels.get(name, ""),
    )


def cmd_ps(ctx: Context, argv: list[str]) -> int:
    p = parser("ps", "[OPTIONS]", "List containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append")
    p.add_argument("--format", default="")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-n", "--last", type=int, default=-1)
    p.add_argument("-l", "--latest", action="store_true")
    p.add_argument("-s", "--size", action="store_true")
    a = p.parse_args(argv)
    limit = 1 if a.latest else a.last
    query = {
        "all": a.all or limit > 0,
        "limit": limit if limit > 0 else None,
        "size": a.size or "{{.Size}}" in a.format,
        "filters": filters_query(a.filter),
    }
    containers = ctx.client.get("/containers/json", query)
    rows = [ps_row(c, trunc=not a.no_trunc) for c in containers]
    fmt = a.format
    if a.quiet:
        fmt = "{{.ID}}"
    elif a.size and not fmt:
        fmt = PS_DEFAULT + "\t{{.Size}}"
    print_rows(rows, fmt, PS_DEFAULT, PS_HEADERS)
    return 0


def _simple(verb: str, usage: str, **options: Any) -> Any:
    p = parser(verb, usage)
    p.add_argument("containers", nargs="+", metavar="CONTAINER")
    for flag, kwargs in options.items():
        p.add_argument(*flag.split("|"), **kwargs)
    return p


def _stop_or_restart(ctx: Context, verb: str, argv: list[str]) -> int:
    p = _simple(verb, "[OPTIONS] CONTAINER [CONTAINER...]",
                **{"-t|--time|--timeout": {"type": int, "dest": "time"},
                   "-s|--signal": {"default": None}})  # fmt: skip
    a = p.parse_args(argv)
    query = {"t": a.time, "signal": a.signal}
    return for_each(a.containers, lambda c: ctx.client.post(f"/containers/{c}/{verb}", query))


def cmd_stop(ctx: Context, argv: list[str]) -> int:
    return _stop_or_restart(ctx, "stop", argv)


def cmd_restart(ctx: Context, argv: list[str]) -> int:
    return _stop_or_restart(ctx, "restart", argv)


def cmd_kill(ctx: Context, argv: list[str]) -> int:
    p = _simple("kill", "[OPTIONS] CONTAINER [CONTAINER...]",
                **{"-s|--signal": {"default": None}})  # fmt: skip
    a = p.parse_args(argv)
    query = {"signal": a.signal}
    return for_each(a.containers, lambda c: ctx.client.post(f"/containers/{c}/kill", query))


def cmd_rm(ctx: Context, argv: list[str]) -> int:
    p = _simple("rm", "[OPTIONS] CONTAINER [CONTAINER...]",
                **{"-f|--force": {"action": "store_true"},
                   "-v|--volumes": {"action": "store_true"},
                   "-l|--link": {"action": "store_true"}})  # fmt: skip
    a = p.parse_args(argv)
    query = {"force": a.force, "v": a.volumes, "link": a.link}
    return for_each(a.containers, lambda c: ctx.client.call("DELETE", f"/containers/{c}", query))


def cmd_pause(ctx: Context, argv: list[str]) -> int:
    a = _simple("pause", "CONTAINER [CONTAINER...]").parse_args(argv)
    return for_each(a.containers, lambda c: ctx.client.post(f"/containers/{c}/pause"))


def cmd_unpause(ctx: Context, argv: list[str]) -> int:
    a = _simple("unpause", "CONTAINER [CONTAINER...]").parse_args(argv)
    return for_each(a.containers, lambda c: ctx.client.post(f"/containers/{c}/unpause"))


def cmd_wait(ctx: Context, argv: list[str]) -> int:
    a = _simple("wait", "CONTAINER [CONTAINER...]").parse_args(argv)

    def wait(name: str) -> None:
        result = ctx.client.stream("POST", f"/containers/{name}/wait").json() or {}
        sys.stdout.write(f"{result.get('StatusCode', -1)}\n")

    return for_each(a.containers, wait, print_name=False)


def cmd_rename(ctx: Context, argv: list[str]) -> int:
    p = parser("rename", "CONTAINER NEW_NAME")
    p.add_argument("container")
    p.add_argument("name")
    a = p.parse_args(argv)
    if not a.name.strip():
        raise CliError("Error: new name cannot be blank", 1)
    ctx.client.post(f"/containers/{a.container}/rename", {"name": a.name})
    return 0


def cmd_update(ctx: Context, argv: list[str]) -> int:
    from berth.cli.options import cpus_to_nano, memory_bytes, restart_policy

    p = _simple("update", "[OPTIONS] CONTAINER [CONTAINER...]",
                **{"-m|--memory": {"type": memory_bytes},
                   "--memory-swap": {"type": memory_bytes},
                   "--memory-reservation": {"type": memory_bytes},
                   "--cpus": {"type": cpus_to_nano},
                   "-c|--cpu-shares": {"type": int},
                   "--cpuset-cpus": {}, "--cpuset-mems": {},
                   "--cpu-period": {"type": int}, "--cpu-quota": {"type": int},
                   "--pids-limit": {"type": int}, "--blkio-weight": {"type": int},
                   "--restart": {"type": restart_policy}})  # fmt: skip
    a = p.parse_args(argv)
    body = {
        key: value
        for key, value in {
            "Memory": a.memory, "MemorySwap": a.memory_swap,
            "MemoryReservation": a.memory_reservation, "NanoCpus": a.cpus,
            "CpuShares": a.cpu_shares, "CpusetCpus": a.cpuset_cpus, "CpusetMems": a.cpuset_mems,
            "CpuPeriod": a.cpu_period, "CpuQuota": a.cpu_quota, "PidsLimit": a.pids_limit,
            "BlkioWeight": a.blkio_weight, "RestartPolicy": a.restart,
        }.items()
        if value is not None
    }  # fmt: skip
    if not body:
        raise CliError("You must provide one or more flags when using this command.", 1)
    return for_each(a.containers, lambda c: ctx.client.post(f"/containers/{c}/update", body=body))


# ------------------------------------------------------------------ logs


def since_value(text: str | None, now: float | None = None) -> str | None:
    """``--since``/``--until`` as unix seconds: a timestamp, a duration (``10m``) or seconds."""
    if not text:
        return None
    from berth.cli.options import parse_duration
    from berth.cli.render import parse_rfc3339

    if text.replace(".", "", 1).isdigit():
        return text
    if text[-1] in "smhµun" and text[0].isdigit():
        seconds = parse_duration(text) / 1e9
        return f"{(now or time.time()) - seconds:.9f}".rstrip("0").rstrip(".")
    try:
        if "T" not in text:
            text += "T00:00:00Z"
        elif not (text.endswith("Z") or "+" in text[10:] or "-" in text[10:]):
            text += "Z"
        return f"{parse_rfc3339(text):.9f}".rstrip("0").rstrip(".")
    except ValueError as e:
        raise CliError(f'invalid value for "since": {text!r}: {e}', 125) from e


def cmd_logs(ctx: Context, argv: list[str]) -> int:
    p = parser("logs", "[OPTIONS] CONTAINER", "Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--details", action="store_true")
    p.add_argument("container")
    a = p.parse_args(argv)
    doc = ctx.client.get(f"/containers/{a.container}/json")
    query = {
        "stdout": True,
        "stderr": True,
        "follow": a.follow,
        "timestamps": a.timestamps,
        "tail": a.tail,
        "since": since_value(a.since),
        "until": since_value(a.until),
        "details": a.details,
    }
    response = ctx.client.stream("GET", f"/containers/{doc['Id']}/logs", query)
    copy_output(response.read_some, bool((doc.get("Config") or {}).get("Tty")))
    return 0


# ------------------------------------------------------------------ inspect


def inspect_one(ctx: Context, name: str, kind: str | None, size: bool = False) -> Any:
    """The container's (or image's) document, or None if neither exists."""
    kinds = [kind] if kind else ["container", "image"]
    for k in kinds:
        container = k == "container"
        path = f"/containers/{name}/json" if container else f"/images/{name}/json"
        try:
            return ctx.client.get(path, {"size": size} if container else None)
        except ApiError as e:
            if e.status != 404:
                raise
    return None


def cmd_inspect(ctx: Context, argv: list[str]) -> int:
    p = parser("inspect", "[OPTIONS] NAME|ID [NAME|ID...]")
    p.add_argument("-f", "--format", default="")
    p.add_argument("--type", choices=["container", "image"])
    p.add_argument("-s", "--size", action="store_true")
    p.add_argument("names", nargs="+", metavar="NAME")
    a = p.parse_args(argv)
    template = Template(a.format) if a.format else None
    found: list[Any] = []
    missing: list[str] = []
    for name in a.names:
        doc = inspect_one(ctx, name, a.type, a.size)
        if doc is None:
            missing.append(name)
        elif template is not None:
            sys.stdout.write(template.render(doc) + "\n")
        else:
            found.append(doc)
    if template is None:
        sys.stdout.write(json.dumps(found, indent=4, ensure_ascii=False) + "\n")
    for name in missing:
        sys.stderr.write(f"Error: No such {a.type or 'object'}: {name}\n")
    return 1 if missing else 0


# ------------------------------------------------------------------ top and stats


def cmd_top(ctx: Context, argv: list[str]) -> int:
    from berth.cli.render import align

    p = parser("top", "CONTAINER [ps OPTIONS]")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)  # -o pid,comm and the like
    a = p.parse_args(argv)
    query = {"ps_args": " ".join(a.ps_args) or None}
    doc = ctx.client.get(f"/containers/{a.container}/top", query)
    lines = ["\t".join(doc.get("Titles") or [])]
    lines += ["\t".join(row) for row in doc.get("Processes") or []]
    sys.stdout.write(align(lines, min_width=20))
    return 0


def cmd_stats(ctx: Context, argv: list[str]) -> int:
    from berth.cli import stats

    p = parser("stats", "[OPTIONS] [CONTAINER...]")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("containers", nargs="*")
    a = p.parse_args(argv)
    return stats.show(ctx, a.containers, a.all, not a.no_stream, a.format, a.no_trunc)
