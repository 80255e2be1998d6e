"""``berth compose stop | start | restart | pull | rm``: the project's existing containers.

Rules (Docker Compose v2's behaviour, words and exit codes):
- A SERVICE that the project does not define is ``no such service: x`` (exit 1) before any
  change; given ``-p`` and no compose file, ``stop``, ``start``, ``restart`` and ``rm`` work
  from the containers' labels, as Compose's do: the services are those that have containers,
  ordered by their ``com.docker.compose.depends_on`` labels (conditions and ``restart``
  included).
- ``stop`` stops the selected services' containers (all the project's by default),
  dependents before their dependencies (the reverse of ``up``'s order), printing
  `` Container x  Stopping``/``Stopped`` as ``down`` does.
- ``start`` starts the selected services and what they depend on, in dependency order,
  waiting for each dependency's ``depends_on`` condition as ``up`` does; a service to start
  with no container at all is Compose's ``service "x" has no container to start``.
- ``restart`` restarts (``POST /containers/{id}/restart``) the selected services' containers,
  stopped ones included, and those of the services that depend on them with
  ``restart: true``, in dependency order (``Restarting``, then ``Started``).
- ``pull`` pulls each selected service's image through ``berth pull``'s own code, progress on
  stderr (none with ``-q``); a service with only ``build:`` has no image to pull, one with
  ``pull_policy`` ``never`` or ``build`` is skipped. A failed pull ends the command (exit 1)
  unless ``--ignore-pull-failures``; a service that can be built only gets Compose's
  warning to build it.
- ``rm`` removes the selected services' stopped containers (``-s``: stops them first;
  ``-v``: their anonymous volumes too). Without ``-f`` it asks "Are you sure? [yN]" on
  stdout and reads one line from stdin: anything but yes (an empty or closed stdin
  included) removes nothing and exits 0, as Compose's prompt does.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from berth.cli.client import ApiError
from berth.cli.common import CliError, Context, parser
from berth.cli.compose import plan
from berth.cli.compose import up as ops
from berth.cli.compose.commands import Options
from berth.cli.compose.commands import load as load_file
from berth.cli.compose.model import Dependency, Project, Service, dependency_order

Containers = list[dict[str, Any]]


def project_from_labels(name: str, containers: Containers) -> Project:
    """The project as its containers' labels describe it: one service per label value, with
    the image and ``depends_on`` they recorded, in dependency order."""
    services: dict[str, Service] = {}
    for container in containers:
        labels = container.get("Labels") or {}
        service = ops.service_of(container)
        if not service or service in services:
            continue
        depends = {}
        for item in filter(None, labels.get(plan.DEPENDS_ON, "").split(",")):
            dependency, _, rest = item.partition(":")
            condition, _, restart = rest.partition(":")
            depends[dependency] = Dependency(condition or "service_started", False,
                                             restart == "true")  # fmt: skip
        services[service] = Service(service, str(container.get("Image", "")), depends_on=depends)
    ordered = {s: services[s] for s in dependency_order(dict(sorted(services.items())))}
    return Project(name, "", (), ordered, {}, {})


def load(ctx: Context, options: Options, names: list[str]) -> Project:
    """The project (from the file, or from the labels given ``-p`` and no file), its SERVICE
    arguments checked against it."""
    project, from_labels = load_file(options, labels_fallback=True)
    if from_labels:
        project = project_from_labels(project.name, ops.project_containers(ctx, project.name))
    for name in names:
        project.service(name)
    return project


def _by_service(ctx: Context, project: Project, names: list[str]) -> dict[str, Containers]:
    """The project's containers (running or not) by service, in the file's dependency order
    (labels only: by service name); only the services in ``names`` when some are given."""
    found: dict[str, Containers] = {}
    for container in ops.project_containers(ctx, project.name):
        service = ops.service_of(container)
        if names and service not in names:
            continue
        if service not in project.services:
            continue  # an orphan: Compose's verbs leave it to --remove-orphans
        found.setdefault(service, []).append(container)
    return {name: found[name] for name in project.services if name in found}


def stop_services(ctx: Context, project: Project, names: list[str], timeout: int | None) -> None:
    """Stop the services' containers, dependents first."""
    for containers in reversed(list(_by_service(ctx, project, names).values())):
        for container in reversed(containers):
            ops.stop_container(ctx, container, timeout)


def with_restart_dependents(project: Project, names: list[str]) -> list[str]:
    """The services named and those depending on them with ``restart: true``, transitively,
    in dependency order."""
    wanted = set(names)
    grew = True
    while grew:
        grew = False
        for name, service in project.services.items():
            if name not in wanted and any(
                dep in wanted and spec.restart for dep, spec in service.depends_on.items()
            ):
                wanted.add(name)
                grew = True
    return [name for name in project.services if name in wanted]


def _wait_dependencies(
    ctx: Context, project: Project, service: str, by_service: dict[str, Containers],
    restart_only: bool = False,
) -> None:  # fmt: skip
    for dependency, spec in project.services[service].depends_on.items():
        if restart_only and not spec.restart:
            continue
        for container in by_service.get(dependency, []):
            ops.wait_for(ctx, container, spec.condition)


# ------------------------------------------------------------------ the verbs


def compose_stop(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose stop", "[OPTIONS] [SERVICE...]", "Stop services")
    p.add_argument("-t", "--timeout", type=int)
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    stop_services(ctx, load(ctx, options, a.services), a.services, a.timeout)
    return 0


def compose_start(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose start", "[SERVICE...]", "Start services")
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    project = load(ctx, options, a.services)
    names = ops.with_dependencies(project, a.services or list(project.services))
    by_service = _by_service(ctx, project, names)
    for name in names:
        containers = by_service.get(name, [])
        if not containers:
            if project.services[name].scale == 0:
                continue
            raise CliError(f'service "{name}" has no container to start', 1)
        _wait_dependencies(ctx, project, name, by_service)
        ops.start_containers(ctx, containers)
    return 0


def compose_restart(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose restart", "[OPTIONS] [SERVICE...]", "Restart service containers")
    p.add_argument("-t", "--timeout", type=int)
    p.add_argument("--no-deps", action="store_true")
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    project = load(ctx, options, a.services)
    names = a.services
    if names and not a.no_deps:
        names = with_restart_dependents(project, names)
    by_service = _by_service(ctx, project, names)
    for name, containers in by_service.items():
        _wait_dependencies(ctx, project, name, by_service, restart_only=True)
        for container in containers:
            cname = ops.name_of(container)
            ops.say("Container", cname, "Restarting")
            ctx.client.post(f"/containers/{container['Id']}/restart", {"t": a.timeout})
            ops.say("Container", cname, "Started")
    return 0


def _pull_line(service: str, status: str) -> None:
    sys.stderr.write(f" {service} {status}\n")
    sys.stderr.flush()


def compose_pull(ctx: Context, options: Options, argv: list[str]) -> int:
    from berth.cli.registry_client import pull_image

    p = parser("compose pull", "[OPTIONS] [SERVICE...]", "Pull service images")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--ignore-pull-failures", action="store_true")
    p.add_argument("--ignore-buildable", action="store_true")
    p.add_argument("--include-deps", action="store_true")
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    project, _ = load_file(options)
    names = a.services or list(project.services)
    if a.include_deps:
        names = ops.with_dependencies(project, names)
    else:
        names = [project.service(name).name for name in names]
    say = (lambda service, status: None) if a.quiet else _pull_line
    pulled_by: dict[str, str] = {}
    must_build: list[str] = []
    failure: CliError | None = None
    quiet = open(os.devnull, "w") if a.quiet else None  # noqa: SIM115
    with quiet or contextlib.nullcontext(sys.stderr) as out:
        for name in names:
            service = project.services[name]
            if service.build is not None and service.image == f"{project.name}-{name}":
                say(name, "Skipped - No image to be pulled")
                continue
            if service.pull_policy in ("never", "build"):
                say(name, "Skipped")
                continue
            if service.build is not None and a.ignore_buildable:
                say(name, "Skipped - Image can be built")
                continue
            if service.image in pulled_by:
                say(name, f"Skipped - Image is already being pulled by {pulled_by[service.image]}")
                continue
            pulled_by[service.image] = name
            say(name, "Pulling")
            try:
                pull_image(ctx, service.image, out)
            except (ApiError, CliError) as e:
                daemon = "Error response from daemon: " if isinstance(e, ApiError) else ""
                if service.build is not None:
                    say(name, "Warning")
                    must_build.append(name)
                    continue
                say(name, "Error")
                failure = failure or CliError(daemon + e.message, 1)
                if not a.ignore_pull_failures:
                    break
                continue
            say(name, "Pulled")
        out.flush()
    if must_build:
        sys.stderr.write("WARNING: Some service image(s) must be built from source by running:\n"
                         f"    docker compose build {' '.join(must_build)}\n")  # fmt: skip
    if failure is not None and not a.ignore_pull_failures:
        raise failure
    return 0


def _confirmed(message: str) -> bool:
    sys.stdout.write(f"{message}\nAre you sure? [yN] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower()
    if not answer:
        sys.stdout.write("\n")
    return answer in ("y", "yes", "true", "1")


def compose_rm(ctx: Context, options: Options, argv: list[str]) -> int:
    p = parser("compose rm", "[OPTIONS] [SERVICE...]", "Removes stopped service containers")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("-s", "--stop", action="store_true")
    p.add_argument("-v", "--volumes", action="store_true")
    p.add_argument("services", nargs="*")
    a = p.parse_args(argv)
    project = load(ctx, options, a.services)
    names = a.services
    if a.stop:
        stop_services(ctx, project, names, None)
    stopped: Containers = []
    for containers in _by_service(ctx, project, names).values():
        for container in containers:
            try:  # the listing's State may be stale: Compose inspects each one
                state = ops.inspect(ctx, container["Id"]).get("State") or {}
            except ApiError as e:
                if e.status == 404:
                    continue  # gone meanwhile (--rm)
                raise
            if not state.get("Running"):
                stopped.append({**container, "State": state.get("Status", "exited")})
    if not stopped:
        sys.stderr.write("No stopped containers\n")
        return 0
    message = f"Going to remove {', '.join(ops.name_of(c) for c in stopped)}"
    if a.force:
        sys.stdout.write(message + "\n")
    elif not _confirmed(message):
        return 0
    for container in stopped:
        ops.remove_container(ctx, container, a.volumes)
    return 0
