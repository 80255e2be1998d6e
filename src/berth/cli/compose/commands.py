"""``berth compose [-f FILE]... [-p NAME] [--project-directory DIR] COMMAND``: the verbs.

Rules:
- Commands: ``up``, ``down``, ``ps``, ``logs``, ``exec``, ``build`` here, and ``stop``,
  ``start``, ``restart``, ``pull``, ``rm`` in ``lifecycle``, with Docker Compose's flags for
  each (the subset listed in their parsers); a bad flag is a usage error (125).
- The project is loaded (and fully validated) before any request is sent; ``down`` and
  ``ps`` given ``-p`` without a compose file work from the labels alone, as Compose's do.
- ``up`` without ``-d`` attaches: the containers' logs from this ``up`` on, prefixed and
  coloured (``logs.py``), until they all stop; Ctrl-C stops the project's containers
  ("Gracefully stopping...") and exits 130. ``up -d --wait`` returns once every container
  runs and those with a healthcheck are healthy.
- ``ps`` prints Compose's table (NAME IMAGE COMMAND SERVICE CREATED STATUS PORTS), running
  containers unless ``-a``; ``--services``, ``-q``, ``--format`` (``table``, ``json`` or a
  template), ``--status``.
- ``exec`` runs in container ``--index`` (1) of the service through ``berth exec``'s own
  code: stdin attached, a TTY when stdin is a terminal and ``-T`` is not given.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from berth.cli.common import CliError, Context, UsageError, is_terminal, parser
from berth.cli.compose import up as ops
from berth.cli.compose.loader import ComposeError
from berth.cli.compose.model import Project, check_project_name
from berth.cli.compose.normalize import load_project

USAGE = """Usage:  berth compose [OPTIONS] COMMAND

Define and run multi-container applications (a compose file's subset, over berthd's API)

Options:
  -f, --file stringArray        Compose configuration files
  -p, --project-name string     Project name
      --project-directory string  Alternate working directory of the compose project

Commands:
  build       Build or rebuild services
  down        Stop and remove containers, networks
  exec        Execute a command in a running container
  logs        View output from containers
  ps          List containers
  pull        Pull service images
  restart     Restart service containers
  rm          Removes stopped service containers
  start       Start services
  stop        Stop services
  up          Create and start containers
"""
COMMANDS = ("up", "down", "ps", "logs", "exec", "build", "stop", "start", "restart", "pull", "rm")
PS_FORMAT = (
    "table {{.Name}}\t{{.Image}}\t{{.Command}}\t{{.Service}}\t{{.RunningFor}}\t{{.Status}}"
    "\t{{.Ports}}"
)


class Options:
    def __init__(self) -> None:
        self.files: list[str] = []
        self.project_name: str | None = None
        self.project_directory: str | None = None


def split_options(argv: list[str]) -> tuple[Options, list[str]]:
    """The compose-wide options, then the command and its arguments."""
    options = Options()
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, eq, inline = arg.partition("=")
        if flag in ("-f", "--file", "-p", "--project-name", "--project-directory"):
            if eq:
                value = inline
                i += 1
            elif i + 1 < len(argv):
                value = argv[i + 1]
                i += 2
            else:
                raise UsageError(f"flag needs an argument: {arg}")
            if flag in ("-f", "--file"):
                options.files.append(value)
            elif flag in ("-p", "--project-name"):
                options.project_name = value
            else:
                options.project_directory = value
        elif arg.startswith("-f") and len(arg) > 2:
            options.files.append(arg[2:])
            i += 1
        elif arg.startswith("-p") and len(arg) > 2:
            options.project_name = arg[2:]
            i += 1
        elif arg.startswith("-") and arg not in ("-h", "--help"):
            raise UsageError(f"unknown flag: {arg}")
        else:
            break
    return options, argv[i:]


def load(options: Options, labels_fallback: bool = False) -> tuple[Project, bool]:
    """(the project, whether it came from labels only: ``-p`` and no compose file)."""
    try:
        return load_project(options.files, options.project_directory,
                            options.project_name), False  # fmt: skip
    except ComposeError as e:
        no_file = e.message.startswith("no configuration file provided")
        if not (labels_fallback and no_file and options.project_name):
            raise
    name = check_project_name(options.project_name, "-p/--project-name")
    return Project(name, "", (), {}, {}, {}), True


def cmd_compose(ctx: Context, argv: list[str]) -> int:
    options, rest = split_options(argv)
    if not rest or rest[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    command, args = rest[0], rest[1:]
    if command not in COMMANDS:
        raise UsageError(f"unknown compose command: {command!r} (one of {', '.join(COMMANDS)})")
    from berth.cli.compose import lifecycle

    handler = {"up": compose_up, "down": compose_down, "ps": compose_ps, "logs": compose_logs,
               "exec": compose_exec, "build": compose_build, "stop": lifecycle.compose_stop,
               "start": lifecycle.compose_start, "restart": lifecycle.compose_restart,
               "pull": lifecycle.compose_pull, "rm": lifecycle.compose_rm}[command]  # fmt: skip
    return handler(ctx, options, args)


# ------------------------------------------------------------------ up


def _scales(items: list[str]) -> dict[str, int]:
    result = {}
    for item in items:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise UsageError(f"invalid --scale {item!r}: expected SERVICE=NUMBER")
        result[name] = int(count)
    return result


def compose_up(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose up", "[OPTIONS] [SERVICE...]", "Create and start containers")
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("--build", action="store_true")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--force-recreate", action="store_true")
    p.add_argument("--remove-orphans", action="store_true")
    p.add_argument("--scale", action="append", default=[])
    p.add_argument("--wait", action="store_true")
    p.add_argument("--wait-timeout", type=float)
    p.add_argument("--no-color", action="store_true")
    p.add_argument("--no-log-prefix", action="store_true")
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    if a.build and a.no_build:
        raise UsageError("--build and --no-build are incompatible")
    project, _ = load(options)
    scales = _scales(a.scale)
    started_at = time.time()
    by_service = ops.up(ctx, project, a.services, scales, a.build, a.no_build,
                        a.remove_orphans, a.force_recreate)  # fmt: skip
    if a.wait:
        ops.wait_running(ctx, project, by_service, a.wait_timeout)
    if a.detach or a.wait:
        return 0
    return _attached(ctx, project, by_service, started_at, a)


def _attached(
    ctx: Context,
    project: Project,
    by_service: dict[str, list[dict[str, Any]]],
    since: float,
    a: Any,
) -> int:
    from berth.cli.compose.logs import LogFollower

    containers = {ops.name_of(c): c["Id"] for cs in by_service.values() for c in cs}
    if not containers:
        return 0
    sys.stdout.write(
        f"Attaching to {', '.join(c.removeprefix(project.name + '-') for c in containers)}\n"
    )
    sys.stdout.flush()
    query = {"stdout": True, "stderr": True, "follow": True, "since": f"{since - 1:.3f}"}
    colour = is_terminal(sys.stdout) and not a.no_color
    follower = LogFollower(ctx.client, containers, project.name, query, colour, a.no_log_prefix)

    def ended(name: str) -> None:
        from berth.cli.client import ApiError, Client

        client = Client(ctx.client.url)
        try:
            state = client.get(f"/containers/{containers[name]}/json").get("State") or {}
            if not state.get("Running"):
                short = name.removeprefix(project.name + "-")
                follower.say(name, f"{short} exited with code {state.get('ExitCode', 0)}")
        except ApiError:
            pass  # removed meanwhile
        finally:
            client.close()

    try:  # a line can be shown (and Ctrl-C typed) before start() returns
        follower.start(ended)
        follower.wait()
    except KeyboardInterrupt:
        sys.stderr.write("Gracefully stopping... (press Ctrl+C again to force)\n")
        for name in reversed(list(by_service)):
            for container in by_service[name]:
                ops.stop_container(ctx, container)
        return 130
    return 0


# ------------------------------------------------------------------ down, build


def compose_down(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose down", "[OPTIONS]", "Stop and remove containers, networks")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("--rmi", choices=["all", "local"])
    p.add_argument("--remove-orphans", action="store_true")
    p.add_argument("-t", "--timeout", type=int)
    a = p.parse_args(argv)
    project, from_labels = load(options, labels_fallback=True)
    ops.down(ctx, project, a.volumes, a.rmi, a.remove_orphans, from_labels, a.timeout)
    return 0


def compose_build(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose build", "[OPTIONS] [SERVICE...]", "Build or rebuild services")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--pull", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--build-arg", action="append", default=[])
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    project, _ = load(options)
    names = a.services or [n for n, s in project.services.items() if s.build is not None]
    extra = ["--no-cache"] * a.no_cache + ["--pull"] * a.pull + ["-q"] * a.quiet
    for arg in a.build_arg:
        extra += ["--build-arg", arg]
    for name in names:
        service = project.service(name)
        if service.build is None:
            continue  # an image-only service has nothing to build
        ops.build_service(ctx, project, service, extra)
    return 0


# ------------------------------------------------------------------ ps


def ps_rows(project: Project, containers: list[dict[str, Any]], trunc: bool) -> list[Any]:
    from berth.cli.containers import ps_row
    from berth.cli.template import Record

    rows = []
    for c in containers:
        row = ps_row(c, trunc=trunc)
        status = c.get("Status", "")
        health = ""
        for word in ("healthy", "unhealthy", "starting"):
            if f"({word})" in status or f"(health: {word})" in status:
                health = word
        labels = c.get("Labels") or {}
        rows.append(
            Record(
                **row,
                Name=ops.name_of(c),
                Service=ops.service_of(c),
                Project=labels.get("com.docker.compose.project", project.name),
                Health=health,
                ExitCode=_exit_code(status),
                Publishers=[
                    {
                        "URL": p.get("IP", ""),
                        "TargetPort": p.get("PrivatePort"),
                        "PublishedPort": p.get("PublicPort", 0),
                        "Protocol": p.get("Type", "tcp"),
                    }
                    for p in c.get("Ports") or []
                ],
            )
        )
    return rows


def _exit_code(status: str) -> int:
    if status.startswith("Exited ("):
        try:
            return int(status[len("Exited (") :].split(")", 1)[0])
        except ValueError:
            return 0
    return 0


def compose_ps(ctx: Context, options: Options, argv: list[str]) -> int:
    from berth.cli.containers import PS_HEADERS
    from berth.cli.render import print_rows

    p = parser("compose ps", "[OPTIONS] [SERVICE...]", "List containers")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--services", action="store_true")
    p.add_argument("--format", default="table")
    p.add_argument("--status", action="append", default=[])
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("services_selected", nargs="*", metavar="SERVICE")
    a = p.parse_args(argv)
    project, _ = load(options, labels_fallback=True)
    for name in a.services_selected:
        project.service(name) if project.services else None
    containers = ops.project_containers(ctx, project.name, all=a.all or bool(a.status))
    if a.services_selected:
        containers = [c for c in containers if ops.service_of(c) in a.services_selected]
    if a.status:
        containers = [c for c in containers if c.get("State") in a.status]
    if a.services:
        for name in dict.fromkeys(ops.service_of(c) for c in containers):
            sys.stdout.write(name + "\n")
        return 0
    rows = ps_rows(project, containers, not a.no_trunc)
    rows.sort(key=lambda r: r["Name"])
    if a.quiet:
        for row in rows:
            sys.stdout.write(row["ID"] + "\n")
        return 0
    if a.format == "json":  # Compose's: full IDs and the command as it is
        full = {c["Id"]: c for c in containers}
        for row in ps_rows(project, list(full.values()), trunc=False):
            data = {k: v for k, v in row.items() if not callable(v)}
            data["Command"] = full[data["ID"]].get("Command", "")
            sys.stdout.write(json.dumps(data) + "\n")
        return 0
    headers = {**PS_HEADERS, "Name": "NAME", "Service": "SERVICE", "Project": "PROJECT",
               "Health": "HEALTH", "ExitCode": "EXIT CODE"}  # fmt: skip
    fmt = PS_FORMAT if a.format in ("", "table") else a.format
    print_rows(rows, fmt, PS_FORMAT, headers)
    return 0


# ------------------------------------------------------------------ logs, exec


def compose_logs(ctx: Context, options: Options, argv: list[str]) -> int:
    from berth.cli.compose.logs import LogFollower
    from berth.cli.containers import since_value

    p = parser("compose logs", "[OPTIONS] [SERVICE...]", "View output from containers")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-t", "--timestamps", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("--since")
    p.add_argument("--until")
    p.add_argument("--no-color", action="store_true")
    p.add_argument("--no-log-prefix", action="store_true")
    p.add_argument("--index", type=int)
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    project, _ = load(options, labels_fallback=True)
    for name in a.services:
        if project.services:
            project.service(name)
    containers = ops.project_containers(ctx, project.name)
    if a.services:
        containers = [c for c in containers if ops.service_of(c) in a.services]
    if a.index is not None:
        containers = [c for c in containers if ops.number_of(c) == a.index]
    query = {
        "stdout": True, "stderr": True, "follow": a.follow, "timestamps": a.timestamps,
        "tail": a.tail, "since": since_value(a.since), "until": since_value(a.until),
    }  # fmt: skip
    colour = is_terminal(sys.stdout) and not a.no_color
    named = {ops.name_of(c): c["Id"] for c in containers}
    follower = LogFollower(ctx.client, named, project.name, query, colour, a.no_log_prefix)
    follower.start()
    follower.wait()
    return 0


def compose_exec(ctx: Context, options: Options, argv: list[str]) -> int:
    from berth.cli.run import cmd_exec

    p = parser("compose exec", "[OPTIONS] SERVICE COMMAND [ARGS...]",
               "Execute a command in a running container")  # fmt: skip
    p.add_argument("-d", "--detach", action="store_true")
    p.add_argument("-T", "--no-TTY", dest="no_tty", action="store_true")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-u", "--user")
    p.add_argument("-w", "--workdir")
    p.add_argument("--privileged", action="store_true")
    p.add_argument("--index", type=int, default=1)
    p.add_argument("service")
    p.add_argument("command", nargs="...")
    a = p.parse_args(argv)
    if not a.command:
        raise UsageError("exec requires a SERVICE and a COMMAND")
    project, _ = load(options)
    project.service(a.service)
    running = [
        c
        for c in ops.project_containers(ctx, project.name, a.service, all=False)
        if ops.number_of(c) == a.index
    ]
    if not running:
        which = "" if a.index == 1 else f" (container #{a.index})"
        raise CliError(f'service "{a.service}" is not running{which}', 1)
    flags = ["-i"]
    if not a.no_tty and is_terminal(sys.stdin) and not a.detach:
        flags.append("-t")
    if a.detach:
        flags.append("-d")
    if a.privileged:
        flags.append("--privileged")
    for item in a.env:
        flags += ["-e", item]
    if a.user:
        flags += ["-u", a.user]
    if a.workdir:
        flags += ["-w", a.workdir]
    return cmd_exec(ctx, [*flags, running[0]["Id"], *a.command])
