"""Bringing a project up and down against the daemon: images, networks, volumes, containers.

Rules:
- Everything goes through the CLI's HTTP client (``ctx.client``): this is client-side
  orchestration over the Docker Engine API, as Docker Compose is.
- Progress lines go to stderr as Compose prints them without a terminal
  (`` Container proj-web-1  Started``).
- ``up`` converges: networks and volumes that are missing are created (an existing one is
  used as it is); images are built when missing or with ``--build`` (never with
  ``--no-build``), pulled when missing; then, service by service in dependency order, it
  waits for the service's dependencies (``service_started``, ``service_healthy``,
  ``service_completed_successfully``), removes containers above the scale, recreates those
  whose config hash or image changed, creates the missing ones and starts them all.
  A dependency that fails (unhealthy, exited, or exited non-zero for completed) ends ``up``
  with an error naming the container.
- ``down`` stops the project's containers in reverse dependency order and removes them, then
  its networks; with ``volumes`` also its named volumes (external ones are never touched) and
  the containers' anonymous volumes; with ``rmi`` the services' images.
- Orphans (containers of the project whose service is no longer in the file) are reported,
  and removed with ``remove_orphans``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any

from berth.cli.client import ApiError
from berth.cli.common import CliError, Context
from berth.cli.compose import plan
from berth.cli.compose.loader import ComposeError
from berth.cli.compose.model import Project, Service

POLL = 0.2


def say(kind: str, name: str, status: str) -> None:
    sys.stderr.write(f" {kind} {name}  {status}\n")
    sys.stderr.flush()


def project_containers(
    ctx: Context, project: str, service: str | None = None, all: bool = True
) -> list[dict[str, Any]]:
    """The project's containers (one-off ones left out), by service then number."""
    query = {"all": all, "filters": plan.project_filter(project, service)}
    found = [
        c
        for c in ctx.client.get("/containers/json", query)
        if (c.get("Labels") or {}).get(plan.ONEOFF, "False") != "True"
    ]
    return sorted(found, key=lambda c: (service_of(c), number_of(c)))


def service_of(container: dict[str, Any]) -> str:
    return str((container.get("Labels") or {}).get(plan.SERVICE, ""))


def number_of(container: dict[str, Any]) -> int:
    try:
        return int((container.get("Labels") or {}).get(plan.NUMBER, "0"))
    except ValueError:
        return 0


def name_of(container: dict[str, Any]) -> str:
    names = container.get("Names") or [container["Id"][:12]]
    return str(names[0]).lstrip("/")


def image_id(ctx: Context, ref: str) -> str | None:
    try:
        doc = ctx.client.get(f"/images/{ref}/json")
    except ApiError as e:
        if e.status == 404:
            return None
        raise
    return str(doc["Id"])


def with_dependencies(project: Project, names: Iterable[str]) -> list[str]:
    """The services named and everything they depend on, in dependency order."""
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in wanted:
            continue
        wanted.add(project.service(name).name)
        pending.extend(d for d in project.services[name].depends_on if d in project.services)
    return [name for name in project.services if name in wanted]


# ------------------------------------------------------------------ images


def build_service(ctx: Context, project: Project, service: Service, options: list[str]) -> None:
    from berth.cli.images import cmd_build

    build = service.build
    assert build is not None
    argv = ["-t", service.image, "-f", build.dockerfile, *options]
    for key, value in build.args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in {**build.labels, plan.PROJECT: project.name,
                       plan.SERVICE: service.name}.items():  # fmt: skip
        argv += ["--label", f"{key}={value}"]
    if build.target:
        argv += ["--target", build.target]
    say("Service", service.name, "Building")
    cmd_build(ctx, [*argv, build.context])
    say("Service", service.name, "Built")


def ensure_images(
    ctx: Context, project: Project, names: list[str], build: bool, no_build: bool
) -> dict[str, str]:
    """Service name -> the image id it will run (building and pulling what is needed)."""
    from berth.cli.registry_client import pull_image

    ids: dict[str, str] = {}
    for name in names:
        service = project.services[name]
        current = image_id(ctx, service.image)
        wants_build = service.build is not None and (
            build or current is None or service.pull_policy == "build"
        )
        if wants_build and not no_build:
            build_service(ctx, project, service, [])
            current = image_id(ctx, service.image)
        elif current is None or service.pull_policy == "always":
            if service.build is not None and no_build and current is None:
                raise ComposeError(
                    f'service "{name}" has no image {service.image} and --no-build was given'
                )
            if service.pull_policy == "never" and current is None:
                raise ComposeError(f"service {name}: image {service.image} not found locally "
                                   "and pull_policy is never")  # fmt: skip
            say("Image", service.image, "Pulling")
            try:
                pull_image(ctx, service.image, sys.stderr)
            except ApiError as e:
                raise CliError(f"Error response from daemon: {e.message}", 1) from e
            say("Image", service.image, "Pulled")
            current = image_id(ctx, service.image)
        if current is None:
            raise ComposeError(f"service {name}: image {service.image} is still missing")
        ids[name] = current
    return ids


# ------------------------------------------------------------------ networks and volumes


def _exists(ctx: Context, path: str) -> bool:
    """Whether the daemon has the object at ``path`` (a GET answered 404: no)."""
    try:
        ctx.client.get(path)
    except ApiError as e:
        if e.status != 404:
            raise
        return False
    return True


def ensure_networks(ctx: Context, project: Project, names: list[str]) -> None:
    used = {key for name in names for key in project.services[name].networks}
    for key, network in project.networks.items():
        if key not in used:
            continue
        if _exists(ctx, f"/networks/{network.name}"):
            continue
        if network.external:
            raise ComposeError(
                f"network {network.name} declared as external, but could not be found"
            )
        say("Network", network.name, "Creating")
        try:
            ctx.client.post("/networks/create", body=plan.network_body(project, key))
        except ApiError as e:
            if e.status != 404:
                raise
            raise CliError(
                f"Error response from daemon: {e.message} (POST /networks/create): this daemon "
                "has no networks API, which compose needs for the project's networks",
                1,
            ) from e
        say("Network", network.name, "Created")


def ensure_volumes(ctx: Context, project: Project, names: list[str]) -> None:
    used = {
        m.source
        for name in names
        for m in project.services[name].volumes
        if m.type == "volume" and m.source
    }
    for key, volume in project.volumes.items():
        if key not in used:
            continue
        if _exists(ctx, f"/volumes/{volume.name}"):
            continue
        if volume.external:
            raise ComposeError(f'external volume "{volume.name}" not found')
        say("Volume", f'"{volume.name}"', "Creating")
        ctx.client.post("/volumes/create", body=plan.volume_body(project, key))
        say("Volume", f'"{volume.name}"', "Created")


# ------------------------------------------------------------------ containers


def inspect(ctx: Context, ident: str) -> dict[str, Any]:
    doc: dict[str, Any] = ctx.client.get(f"/containers/{ident}/json")
    return doc


def wait_for(ctx: Context, container: dict[str, Any], condition: str) -> None:
    """Block until ``container`` meets a depends_on condition; a ComposeError if it cannot."""
    name = name_of(container)
    if condition == "service_started":
        return
    say("Container", name, "Waiting")
    while True:
        state = inspect(ctx, container["Id"]).get("State") or {}
        status = state.get("Status", "")
        if condition == "service_completed_successfully":
            if status == "exited":
                code = state.get("ExitCode", 0)
                if code != 0:
                    raise ComposeError(
                        f"service {service_of(container)} didn't complete successfully: exit {code}"
                    )
                say("Container", name, "Exited")
                return
        else:
            health = (state.get("Health") or {}).get("Status")
            if health is None and status == "running":
                raise ComposeError(f"container {name} has no healthcheck configured")
            if health == "healthy":
                say("Container", name, "Healthy")
                return
            if health == "unhealthy":
                raise ComposeError(f"dependency failed to start: container {name} is unhealthy")
            if status in ("exited", "dead"):
                raise ComposeError(
                    f"dependency failed to start: container {name} exited "
                    f"({state.get('ExitCode', 0)})"
                )
        time.sleep(POLL)


def stop_container(ctx: Context, container: dict[str, Any], timeout: int | None = None) -> None:
    """``POST /containers/{id}/stop`` between Compose's Stopping and Stopped lines (``timeout``
    None: the container's own stop timeout)."""
    name = name_of(container)
    say("Container", name, "Stopping")
    ctx.client.post(f"/containers/{container['Id']}/stop", {"t": timeout})
    say("Container", name, "Stopped")


def remove_container(
    ctx: Context, container: dict[str, Any], volumes: bool = False, timeout: int | None = None
) -> None:
    name = name_of(container)
    if container.get("State") in ("running", "restarting", "paused"):
        stop_container(ctx, container, timeout)
    say("Container", name, "Removing")
    ctx.client.call("DELETE", f"/containers/{container['Id']}", {"force": True, "v": volumes})
    say("Container", name, "Removed")


def create_container(
    ctx: Context, project: Project, service: Service, number: int, image: str
) -> dict[str, Any]:
    name = plan.container_name(project, service, number)
    say("Container", name, "Creating")
    body = plan.create_body(project, service, number, image)
    created = ctx.client.post("/containers/create", {"name": name}, body)
    for connect in plan.extra_networks(project, service, number):
        network = connect.pop("Network")
        ctx.client.post(f"/networks/{network}/connect", body={"Container": created["Id"],
                                                              **connect})  # fmt: skip
    say("Container", name, "Created")
    return {"Id": created["Id"], "Names": [f"/{name}"], "State": "created",
            "Labels": body["Labels"]}  # fmt: skip


def must_recreate(container: dict[str, Any], service: Service, image: str) -> bool:
    labels = container.get("Labels") or {}
    if labels.get(plan.CONFIG_HASH) != plan.config_hash(service):
        return True
    running_image = container.get("ImageID") or labels.get(plan.IMAGE)
    return bool(running_image) and running_image != image


def converge_service(
    ctx: Context,
    project: Project,
    service: Service,
    image: str,
    scale: int,
    force_recreate: bool = False,
) -> list[dict[str, Any]]:
    """The service's containers after making them match the model (created, not started)."""
    existing = [c for c in project_containers(ctx, project.name, service.name)]
    if service.container_name and scale > 1:
        raise ComposeError(
            f'service "{service.name}" has container_name set and cannot be scaled to {scale}'
        )
    kept: dict[int, dict[str, Any]] = {}
    for container in existing:
        number = number_of(container)
        if number > scale or number in kept or number < 1:
            remove_container(ctx, container)
        elif force_recreate or must_recreate(container, service, image):
            say("Container", name_of(container), "Recreate")
            remove_container(ctx, container)
        else:
            kept[number] = container
            say("Container", name_of(container), "Running" if container.get("State") == "running"
                else "Created")  # fmt: skip
    for number in range(1, scale + 1):
        if number not in kept:
            kept[number] = create_container(ctx, project, service, number, image)
    return [kept[n] for n in sorted(kept)]


def start_containers(ctx: Context, containers: list[dict[str, Any]]) -> None:
    for container in containers:
        if container.get("State") == "running":
            continue
        name = name_of(container)
        say("Container", name, "Starting")
        ctx.client.post(f"/containers/{container['Id']}/start")
        say("Container", name, "Started")


def up(
    ctx: Context,
    project: Project,
    selected: list[str],
    scales: dict[str, int],
    build: bool = False,
    no_build: bool = False,
    remove_orphans: bool = False,
    force_recreate: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """Converge the selected services (and their dependencies); their containers, by
    service."""
    names = with_dependencies(project, selected or list(project.services))
    for name in scales:
        project.service(name)
    handle_orphans(ctx, project, remove_orphans)
    images = ensure_images(ctx, project, names, build, no_build)
    ensure_networks(ctx, project, names)
    ensure_volumes(ctx, project, names)
    result: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        service = project.services[name]
        for dependency, spec in service.depends_on.items():
            if dependency not in result:
                continue  # not required and not defined
            for container in result[dependency]:
                wait_for(ctx, container, spec.condition)
        scale = scales.get(name, service.scale)
        containers = converge_service(ctx, project, service, images[name], scale, force_recreate)
        start_containers(ctx, containers)
        result[name] = containers
    return result


def wait_running(ctx: Context, project: Project, by_service: dict[str, list[dict[str, Any]]],
                 timeout: float | None) -> None:  # fmt: skip
    """``up --wait``: every container running, and healthy when it has a healthcheck."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for name, containers in by_service.items():
        healthcheck = project.services[name].healthcheck
        for container in containers:
            cname = name_of(container)
            say("Container", cname, "Waiting")
            while True:
                state = inspect(ctx, container["Id"]).get("State") or {}
                health = (state.get("Health") or {}).get("Status")
                if state.get("Status") in ("exited", "dead"):
                    raise ComposeError(f"container {cname} exited ({state.get('ExitCode', 0)})")
                if health == "unhealthy":
                    raise ComposeError(f"container {cname} is unhealthy")
                if state.get("Running") and (
                    health == "healthy"
                    or health is None
                    or (healthcheck is not None and healthcheck.test == ("NONE",))
                ):
                    say("Container", cname, "Healthy" if health == "healthy" else "Running")
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise ComposeError(f"timeout waiting for container {cname}")
                time.sleep(POLL)


def handle_orphans(ctx: Context, project: Project, remove: bool) -> None:
    orphans = [
        c for c in project_containers(ctx, project.name) if service_of(c) not in project.services
    ]
    if not orphans:
        return
    if remove:
        for container in orphans:
            remove_container(ctx, container)
        return
    names = ", ".join(name_of(c) for c in orphans)
    sys.stderr.write(
        f"WARN[0000] Found orphan containers ([{names}]) for this project. If you removed or "
        "renamed this service in your compose file, you can run this command with the "
        "--remove-orphans flag to clean it up.\n"
    )


# ------------------------------------------------------------------ down


def down(
    ctx: Context,
    project: Project,
    volumes: bool = False,
    rmi: str | None = None,
    remove_orphans: bool = False,
    from_labels_only: bool = False,
    timeout: int | None = None,
) -> None:
    """Stop and remove the project's containers, then networks (and volumes, images)."""
    containers = project_containers(ctx, project.name)
    order = {name: i for i, name in enumerate(project.services)}
    mine = [c for c in containers if from_labels_only or service_of(c) in project.services]
    orphans = [c for c in containers if c not in mine]
    if orphans and not remove_orphans:
        names = ", ".join(name_of(c) for c in orphans)
        sys.stderr.write(
            f"WARN[0000] Found orphan containers ([{names}]) for this project. If you removed "
            "or renamed this service in your compose file, you can run this command with the "
            "--remove-orphans flag to clean it up.\n"
        )
    doomed = mine + (orphans if remove_orphans else [])
    doomed.sort(key=lambda c: (-order.get(service_of(c), len(order)), -number_of(c)))
    for container in doomed:
        remove_container(ctx, container, volumes, timeout)
    filters = plan.project_filter(project.name)
    networks = {n.name for n in project.networks.values() if not n.external}
    try:
        listed = ctx.client.get("/networks", {"filters": filters}) or []
    except ApiError as e:
        if e.status != 404:
            raise
        listed = []  # a daemon without the networks API has none of ours
    networks |= {str(n["Name"]) for n in listed}
    for name in sorted(networks):
        _remove("Network", name, f"/networks/{name}", ctx)
    if volumes:
        doomed_volumes = {v.name for v in project.volumes.values() if not v.external}
        if from_labels_only:
            listed_volumes = ctx.client.get("/volumes", {"filters": filters}) or {}
            doomed_volumes |= {str(v["Name"]) for v in listed_volumes.get("Volumes") or []}
        for name in sorted(doomed_volumes):
            _remove("Volume", name, f"/volumes/{name}", ctx)
    if rmi:
        images = {s.image for s in project.services.values() if rmi == "all" or s.build is not None}
        for image in sorted(images):
            _remove("Image", image, f"/images/{image}", ctx)


def _remove(kind: str, name: str, path: str, ctx: Context) -> None:
    try:
        ctx.client.get(path if kind != "Image" else f"{path}/json")
    except ApiError as e:
        if e.status == 404:
            return
        raise
    say(kind, name, "Removing")
    ctx.client.call("DELETE", path)
    say(kind, name, "Removed")
