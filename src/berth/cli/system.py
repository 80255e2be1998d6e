"""System verbs: version, info, events, system df, and ``daemon`` (start berthd).

Rules:
- ``version`` and ``info`` print the client's part even when the daemon cannot be reached,
  then fail with the daemon's error (as the docker CLI does); ``-f`` renders
  ``{"Client": …, "Server": …}`` (version) or the ``/info`` document.
- ``events`` streams until interrupted (or until ``--until``), one line per event:
  ``TIME TYPE ACTION ID (k=v, …)`` with the time in RFC 3339 nanoseconds, local time zone.
- ``daemon`` runs the ``berthd`` beside our interpreter, serving the socket our ``-H`` (or
  ``BERTH_HOST``) names unless a berthd ``--host`` is given: in the foreground it replaces
  this process (exec); with ``--background`` it starts it detached (own session, stdin from
  /dev/null, output appended to ``--log-file``, default ``/var/log/berthd.log``), waits until
  its socket answers ``/_ping`` (up to 30 s), then prints its pid, socket and log.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import berth
from berth.cli.client import API_VERSION, Client, DaemonUnreachable
from berth.cli.common import CliError, Context, UsageError, filters_query, parser
from berth.cli.render import human_size, print_rows
from berth.cli.template import Template

DEFAULT_LOG_FILE = "/var/log/berthd.log"
DAEMON_START_TIMEOUT = 30.0


def client_version() -> str:
    return berth.__version__


def _client_doc() -> dict[str, Any]:
    return {
        "Platform": {"Name": "Berth"},
        "Version": client_version(),
        "ApiVersion": API_VERSION,
        "GoVersion": f"python{sys.version.split()[0]}",
        "Os": "linux",
        "Arch": os.uname().machine.replace("x86_64", "amd64").replace("aarch64", "arm64"),
    }


def cmd_version(ctx: Context, argv: list[str]) -> int:
    p = parser("version", "[OPTIONS]")
    p.add_argument("-f", "--format", default="")
    a = p.parse_args(argv)
    client = _client_doc()
    server = None
    error: Exception | None = None
    try:
        server = ctx.client.get("/version")
        client["ApiVersion"] = ctx.client.version
    except DaemonUnreachable as e:
        error = e
    if a.format:
        sys.stdout.write(Template(a.format).render({"Client": client, "Server": server}) + "\n")
    else:
        lines = ["Client:", f" Version:           {client['Version']}",
                 f" API version:       {client['ApiVersion']}",
                 f" Python version:    {client['GoVersion'].removeprefix('python')}",
                 f" OS/Arch:           {client['Os']}/{client['Arch']}"]  # fmt: skip
        if server:
            lines += ["", f"Server: {(server.get('Platform') or {}).get('Name', '')}"]
            for component in server.get("Components") or []:
                lines.append(f" {component.get('Name')}:")
                lines.append(f"  Version:          {component.get('Version')}")
                for key, value in sorted((component.get("Details") or {}).items()):
                    if value:
                        lines.append(f"  {key + ':':<17} {value}")
        sys.stdout.write("\n".join(lines) + "\n")
    if error is not None:
        raise error
    return 0


INFO_FACTS = (
    ("Logging Driver", "LoggingDriver"), ("Cgroup Driver", "CgroupDriver"),
    ("Cgroup Version", "CgroupVersion"), ("Default Runtime", "DefaultRuntime"),
    ("Kernel Version", "KernelVersion"), ("Operating System", "OperatingSystem"),
    ("OSType", "OSType"), ("Architecture", "Architecture"), ("CPUs", "NCPU"),
    ("Name", "Name"), ("ID", "ID"), ("Docker Root Dir", "DockerRootDir"),
)  # fmt: skip


def cmd_info(ctx: Context, argv: list[str]) -> int:
    p = parser("info", "[OPTIONS]")
    p.add_argument("-f", "--format", default="")
    a = p.parse_args(argv)
    info = ctx.client.get("/info")
    if a.format:
        sys.stdout.write(Template(a.format).render(info) + "\n")
        return 0
    out = [
        "Client:", f" Version:    {client_version()}", " Context:    default",
        f" Debug Mode: {str(ctx.debug).lower()}", "", "Server:",
        f" Containers: {info.get('Containers', 0)}",
        f"  Running: {info.get('ContainersRunning', 0)}",
        f"  Paused: {info.get('ContainersPaused', 0)}",
        f"  Stopped: {info.get('ContainersStopped', 0)}",
        f" Images: {info.get('Images', 0)}",
        f" Server Version: {info.get('ServerVersion', '')}",
        f" Storage Driver: {info.get('Driver', '')}",
    ]  # fmt: skip
    out += [f"  {k}: {v}" for k, v in info.get("DriverStatus") or []]
    facts = [f" {label}: {info[key]}" for label, key in INFO_FACTS if key in info]
    out += facts[:3]  # the logging and cgroup lines come before the plugins, as docker's do
    plugins = info.get("Plugins") or {}
    if plugins:
        out.append(" Plugins:")
        out += [f"  {kind}: {' '.join(names)}" for kind, names in plugins.items() if names]
    if info.get("Runtimes"):
        out.append(f" Runtimes: {' '.join(sorted(info['Runtimes']))}")
    out += facts[3:]
    if "MemTotal" in info:
        from berth.cli.render import binary_size

        out.append(f" Total Memory: {binary_size(info['MemTotal'])}")
    security = info.get("SecurityOptions") or []
    if security:
        out.append(" Security Options:")
        out += [f"  {s.removeprefix('name=')}" for s in security]
    sys.stdout.write("\n".join(out) + "\n")
    for warning in info.get("Warnings") or []:
        sys.stderr.write(f"{warning}\n")
    return 0


# ------------------------------------------------------------------ events


def event_line(event: dict[str, Any]) -> str:
    nanos = int(event.get("timeNano") or int(event.get("time", 0)) * 1_000_000_000)
    seconds, fraction = divmod(nanos, 1_000_000_000)
    local = time.localtime(seconds)
    zone = time.strftime("%z", local)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{fraction:09d}"
    stamp += "Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}"
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(attributes.items()))
    kind = event.get("Type", "")
    action = event.get("Action", "")
    line = f"{stamp} {kind} {action} {actor.get('ID', '')}"
    return line + (f" ({attrs})" if attrs else "")


def cmd_events(ctx: Context, argv: list[str]) -> int:
    from berth.cli.containers import since_value

    p = parser("events", "[OPTIONS]")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    p.add_argument("--since")
    p.add_argument("--until")
    a = p.parse_args(argv)
    query = {
        "since": since_value(a.since),
        "until": since_value(a.until),
        "filters": filters_query(a.filter),
    }
    template = Template(a.format) if a.format else None
    response = ctx.client.stream("GET", "/events", query)
    for event in response.json_lines():
        line = template.render(event) if template else event_line(event)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return 0


# ------------------------------------------------------------------ system df

DF_DEFAULT = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_HEADERS = {"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE",
              "Reclaimable": "RECLAIMABLE"}  # fmt: skip


def _reclaimable(amount: float, total: float) -> str:
    text = human_size(amount, 4)
    if total > 0:
        text += f" ({int(amount * 100 / total)}%)"
    return text


def df_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from berth.cli.template import Record

    images = doc.get("Images") or []
    layers = doc.get("LayersSize") or 0
    active_images = [i for i in images if (i.get("Containers") or 0) > 0]
    used = sum(i.get("Size", 0) - max(i.get("SharedSize", 0), 0) for i in active_images)
    containers = doc.get("Containers") or []
    running = [c for c in containers if c.get("State") == "running"]
    csize = sum(c.get("SizeRw") or 0 for c in containers)
    volumes = doc.get("Volumes") or []
    vsizes = [((v.get("UsageData") or {}).get("Size") or 0, v) for v in volumes]
    vtotal = sum(max(s, 0) for s, _ in vsizes)
    vactive = [v for _, v in vsizes if ((v.get("UsageData") or {}).get("RefCount") or 0) > 0]
    cache = doc.get("BuildCache") or []
    ctotal = sum(c.get("Size") or 0 for c in cache)
    cfree = sum(c.get("Size") or 0 for c in cache if not c.get("InUse"))
    rows = [
        ("Images", len(images), len(active_images), layers, max(layers - used, 0)),
        ("Containers", len(containers), len(running), csize,
         sum(c.get("SizeRw") or 0 for c in containers if c.get("State") != "running")),
        ("Local Volumes", len(volumes), len(vactive), vtotal,
         sum(max(s, 0) for s, v in vsizes if v not in vactive)),
        ("Build Cache", len(cache), sum(1 for c in cache if c.get("InUse")), ctotal, cfree),
    ]  # fmt: skip
    return [
        Record(
            Type=kind,
            TotalCount=str(total),
            Active=str(active),
            Size=human_size(size, 4),
            Reclaimable=_reclaimable(free, size),
        )
        for kind, total, active, size, free in rows
    ]


def cmd_system(ctx: Context, argv: list[str]) -> int:
    """``system df`` (the other ``system`` forms are mapped to their verbs by main)."""
    if not argv or argv[0] != "df":
        raise UsageError("Usage: berth system COMMAND (df, info, events, prune)")
    p = parser("system df", "[OPTIONS]")
    p.add_argument("--format", default="")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv[1:])
    print_rows(df_rows(ctx.client.get("/system/df")), a.format, DF_DEFAULT, DF_HEADERS)
    return 0


# ------------------------------------------------------------------ daemon


def _option_value(args: list[str], names: tuple[str, ...], default: str) -> str:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


def berthd_path() -> str:
    return os.path.join(os.path.dirname(sys.executable), "berthd")


def cmd_daemon(ctx: Context, argv: list[str]) -> int:
    background = False
    log_file = DEFAULT_LOG_FILE
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in ("-b", "--background"):
            background = True
        elif argv[i] == "--log-file" and i + 1 < len(argv):
            log_file = argv[i + 1]
            i += 1
        elif argv[i].startswith("--log-file="):
            log_file = argv[i].split("=", 1)[1]
        elif argv[i] in ("-h", "--help"):
            sys.stdout.write(
                "Usage: berth daemon [--background [--log-file PATH]] [berthd flags]\n"
                "berthd flags: --data-root DIR --host unix://PATH --cgroup-parent NAME --debug\n"
            )
            return 0
        else:
            rest.append(argv[i])
        i += 1
    berthd = berthd_path()
    if not os.access(berthd, os.X_OK):
        raise CliError(f"berthd not found at {berthd}", 1)
    host = _option_value(rest, ("--host", "-H"), ctx.client.url)
    if not any(arg in ("--host", "-H") or arg.startswith("--host=") for arg in rest):
        rest = ["--host", host, *rest]  # the socket our -H/BERTH_HOST names, if berthd's is not
    if not background:
        sys.stdout.flush()
        os.execv(berthd, [berthd, *rest])
    return _start_background(berthd, rest, host, log_file)


def _start_background(berthd: str, args: list[str], host: str, log_file: str) -> int:
    import subprocess

    os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [berthd, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    client = Client(host)
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                raise CliError(f"berthd exited with status {proc.returncode}; see {log_file}", 1)
            try:
                if client.ping().status == 200:
                    break
            except (DaemonUnreachable, OSError):
                client.close()
            if time.monotonic() > deadline:
                raise CliError(f"berthd did not answer on {host} in 30 s; see {log_file}", 1)
            time.sleep(0.05)
    finally:
        client.close()
    sys.stdout.write(f"berthd started (pid {proc.pid}) on {host}; log: {log_file}\n")
    return 0
