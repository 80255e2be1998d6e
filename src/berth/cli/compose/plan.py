"""From the model to Docker Engine API bodies: names, labels, config hash, create requests.

Rules:
- Pure functions of the model: no request is sent here, so every body is unit-tested.
- Labels as Docker Compose sets them (``com.docker.compose.*``): on containers project,
  service, container-number, oneoff, project.working_dir, project.config_files, config-hash,
  depends_on, image and version; on networks and volumes the key in the file, project and
  version. Other tools (``docker compose ps``) find our containers by them.
- ``config_hash`` is the sha256 of the service's normalised definition without what does not
  change a container (scale, depends_on, build, pull_policy): a container is recreated when
  its label differs, or when the image it runs is not the one the service's name now
  resolves to.
- The first network is joined at create (``NetworkingConfig``, one endpoint, as API 1.43
  allows); the others are connected before start. Aliases are the service name, the
  container name and the file's aliases.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from berth.cli.compose.model import Mount, Project, Service

LABEL = "com.docker.compose"
PROJECT = f"{LABEL}.project"
SERVICE = f"{LABEL}.service"
NUMBER = f"{LABEL}.container-number"
ONEOFF = f"{LABEL}.oneoff"
CONFIG_HASH = f"{LABEL}.config-hash"
WORKING_DIR = f"{LABEL}.project.working_dir"
CONFIG_FILES = f"{LABEL}.project.config_files"
DEPENDS_ON = f"{LABEL}.depends_on"
IMAGE = f"{LABEL}.image"
VERSION = f"{LABEL}.version"
NETWORK = f"{LABEL}.network"
VOLUME = f"{LABEL}.volume"
# The Docker Compose release whose names and labels this follows.
COMPOSE_VERSION = "2.29.7"


def container_name(project: Project, service: Service, number: int) -> str:
    if service.container_name:
        return service.container_name
    return f"{project.name}-{service.name}-{number}"


def config_hash(service: Service) -> str:
    data = dataclasses.asdict(service)
    for key in ("scale", "depends_on", "build", "pull_policy"):
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()


def project_filter(project: str, service: str | None = None) -> dict[str, dict[str, bool]]:
    """The ``filters`` query value that lists a project's (or one service's) objects."""
    labels = {f"{PROJECT}={project}": True}
    if service:
        labels[f"{SERVICE}={service}"] = True
    return {"label": labels}


def container_labels(
    project: Project, service: Service, number: int, image_id: str
) -> dict[str, str]:
    depends = ",".join(
        f"{name}:{dep.condition}:{str(dep.restart).lower()}"
        for name, dep in service.depends_on.items()
    )
    return {
        **service.labels,
        PROJECT: project.name,
        SERVICE: service.name,
        NUMBER: str(number),
        ONEOFF: "False",
        WORKING_DIR: project.working_dir,
        CONFIG_FILES: ",".join(project.config_files),
        CONFIG_HASH: config_hash(service),
        DEPENDS_ON: depends,
        IMAGE: image_id,
        VERSION: COMPOSE_VERSION,
    }


def network_body(project: Project, key: str) -> dict[str, Any]:
    network = project.networks[key]
    body: dict[str, Any] = {
        "Name": network.name,
        "CheckDuplicate": True,
        "Labels": {**network.labels, NETWORK: key, PROJECT: project.name, VERSION: COMPOSE_VERSION},
    }
    if network.driver:
        body["Driver"] = network.driver
    if network.internal:
        body["Internal"] = True
    if network.attachable:
        body["Attachable"] = True
    return body


def volume_body(project: Project, key: str) -> dict[str, Any]:
    volume = project.volumes[key]
    body: dict[str, Any] = {
        "Name": volume.name,
        "Labels": {**volume.labels, VOLUME: key, PROJECT: project.name, VERSION: COMPOSE_VERSION},
    }
    if volume.driver:
        body["Driver"] = volume.driver
    return body


def _mounts(project: Project, mounts: tuple[Mount, ...]) -> tuple[list[str], list[dict[str, Any]]]:
    """(``Binds`` for binds that may create their source, ``Mounts`` for the rest)."""
    binds: list[str] = []
    others: list[dict[str, Any]] = []
    for m in mounts:
        if m.type == "bind" and m.create_host_path:
            binds.append(f"{m.source}:{m.target}" + (":ro" if m.read_only else ""))
            continue
        entry: dict[str, Any] = {"Type": m.type, "Target": m.target}
        if m.type == "volume" and m.source:
            entry["Source"] = project.volumes[m.source].name
        elif m.type == "bind":
            entry["Source"] = m.source
        if m.read_only:
            entry["ReadOnly"] = True
        others.append(entry)
    return binds, others


def _port_bindings(service: Service) -> tuple[dict[str, Any], dict[str, list[dict[str, str]]]]:
    exposed: dict[str, Any] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in service.ports:
        key = f"{port.target}/{port.protocol}"
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": port.published})
    for text in service.expose:
        number, _, protocol = text.partition("/")
        exposed.setdefault(f"{number}/{protocol or 'tcp'}", {})
    return exposed, bindings


def _restart_policy(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    return {"Name": name, "MaximumRetryCount": int(count or 0)}


def _healthcheck(service: Service) -> dict[str, Any] | None:
    check = service.healthcheck
    if check is None:
        return None
    body: dict[str, Any] = {"Test": list(check.test)} if check.test else {}
    for key, value in (
        ("Interval", check.interval), ("Timeout", check.timeout),
        ("StartPeriod", check.start_period), ("StartInterval", check.start_interval),
        ("Retries", check.retries),
    ):  # fmt: skip
        if value is not None:
            body[key] = value
    return body


def network_mode(project: Project, service: Service, first_network: str | None) -> str:
    """``HostConfig.NetworkMode``: the first network's name, or the file's ``network_mode``
    with ``service:NAME`` as the container of that service it means."""
    mode = service.network_mode
    if mode is None:
        return project.networks[first_network].name if first_network else "none"
    if mode.startswith("service:"):
        other = project.services[mode.removeprefix("service:")]
        return f"container:{container_name(project, other, 1)}"
    return mode


def aliases(project: Project, service: Service, number: int, key: str) -> list[str]:
    names = [service.name, container_name(project, service, number)]
    return list(dict.fromkeys([*names, *service.networks.get(key, ())]))


def create_body(project: Project, service: Service, number: int, image_id: str) -> dict[str, Any]:
    """The ``POST /containers/create`` body of container ``number`` of ``service``."""
    binds, mounts = _mounts(project, service.volumes)
    exposed, bindings = _port_bindings(service)
    network_keys = list(service.networks)
    first = network_keys[0] if network_keys else None
    host: dict[str, Any] = {
        "Binds": binds or None,
        "Mounts": mounts or None,
        "PortBindings": bindings or None,
        "RestartPolicy": _restart_policy(service.restart),
        "Memory": service.memory,
        "MemoryReservation": service.memory_reservation,
        "MemorySwap": service.memory_swap,
        "NanoCpus": service.nano_cpus,
        "CpuShares": service.cpu_shares,
        "PidsLimit": service.pids_limit,
        "CapAdd": list(service.cap_add) or None,
        "CapDrop": list(service.cap_drop) or None,
        "ReadonlyRootfs": service.read_only or None,
        "Tmpfs": dict(t.partition(":")[::2] for t in service.tmpfs) or None,
        "Privileged": service.privileged or None,
        "ExtraHosts": list(service.extra_hosts) or None,
        "ShmSize": service.shm_size,
        "Sysctls": dict(service.sysctls) or None,
        "Init": service.init,
        "NetworkMode": network_mode(project, service, first),
    }
    body: dict[str, Any] = {
        "Image": service.image,
        "Cmd": list(service.command) if service.command is not None else None,
        "Entrypoint": list(service.entrypoint) if service.entrypoint is not None else None,
        "Env": [f"{k}={v}" for k, v in service.environment.items()] or None,
        "ExposedPorts": exposed or None,
        "Labels": container_labels(project, service, number, image_id),
        "WorkingDir": service.working_dir,
        "User": service.user,
        "Hostname": service.hostname,
        "Tty": service.tty,
        "OpenStdin": service.stdin_open,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "StopSignal": service.stop_signal,
        "StopTimeout": service.stop_grace_period,
        "Healthcheck": _healthcheck(service),
        "HostConfig": {k: v for k, v in host.items() if v is not None},
    }
    if first is not None:
        endpoint = {"Aliases": aliases(project, service, number, first)}
        body["NetworkingConfig"] = {"EndpointsConfig": {project.networks[first].name: endpoint}}
    return {k: v for k, v in body.items() if v is not None}


def extra_networks(project: Project, service: Service, number: int) -> list[dict[str, Any]]:
    """``POST /networks/{id}/connect`` bodies for the networks after the first, with the
    network's name under ``Network``."""
    result = []
    for key in list(service.networks)[1:]:
        result.append(
            {
                "Network": project.networks[key].name,
                "EndpointConfig": {"Aliases": aliases(project, service, number, key)},
            }
        )
    return result
