"""The compose project as data: services, networks and volumes, validated and normalised.

Rules:
- Frozen dataclasses, one normalised form for each of Compose's syntaxes (``normalize.py``
  reads the files into them): durations in nanoseconds, sizes in bytes, CPU counts as
  NanoCpus, paths absolute.
- Names as Compose makes them: the project name from ``-p``, else ``COMPOSE_PROJECT_NAME``,
  else the top-level ``name``, else the project directory's name, normalised (lower case,
  only ``[a-z0-9_-]``, starting with a letter or digit); networks ``<project>_<key>`` (the
  ``default`` one always exists when a service uses it), volumes ``<project>_<key>``, built
  images ``<project>-<service>``, containers ``<project>-<service>-<n>``; ``name:`` and
  ``external`` override them.
- ``dependency_order`` puts each service after what it depends on; a cycle or an undefined
  required dependency is a ``ComposeError`` naming the services.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from berth.cli.compose.loader import ComposeError

_PROJECT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class Port:
    target: int
    published: str = ""  # "" lets the daemon pick; "8080" or a range "8080-8081"
    host_ip: str = ""
    protocol: str = "tcp"


@dataclass(frozen=True)
class Mount:
    type: str  # volume | bind | tmpfs
    target: str
    source: str = ""  # a volume's key in the file ("" for an anonymous one), a bind's path
    read_only: bool = False
    create_host_path: bool = True


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval: int | None = None  # nanoseconds
    timeout: int | None = None
    start_period: int | None = None
    start_interval: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class Build:
    context: str  # absolute
    dockerfile: str = "Dockerfile"
    args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dependency:
    condition: str = "service_started"
    required: bool = True
    restart: bool = False


@dataclass(frozen=True)
class Service:
    name: str
    image: str  # what to run: the file's image, or <project>-<service> for a build
    build: Build | None = None
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    expose: tuple[str, ...] = ()
    volumes: tuple[Mount, ...] = ()
    networks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # key -> aliases
    network_mode: str | None = None  # none, host, bridge, container:NAME or service:NAME
    depends_on: Mapping[str, Dependency] = field(default_factory=dict)
    healthcheck: Healthcheck | None = None
    restart: str = "no"
    memory: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    pids_limit: int | None = None
    scale: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    container_name: str | None = None
    working_dir: str | None = None
    user: str | None = None
    hostname: str | None = None
    tty: bool = False
    stdin_open: bool = False
    init: bool | None = None
    stop_signal: str | None = None
    stop_grace_period: int | None = None  # seconds
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    read_only: bool = False
    tmpfs: tuple[str, ...] = ()
    privileged: bool = False
    extra_hosts: tuple[str, ...] = ()
    shm_size: int | None = None
    sysctls: Mapping[str, str] = field(default_factory=dict)
    pull_policy: str = "missing"


@dataclass(frozen=True)
class Network:
    key: str
    name: str
    external: bool = False
    driver: str | None = None
    internal: bool = False
    attachable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Volume:
    key: str
    name: str
    external: bool = False
    driver: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Project:
    name: str
    working_dir: str
    config_files: tuple[str, ...]
    services: Mapping[str, Service]
    networks: Mapping[str, Network]
    volumes: Mapping[str, Volume]

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise ComposeError(f"no such service: {name}") from None


# ------------------------------------------------------------------ names


def normalize_project_name(text: str) -> str:
    """What Compose makes of a directory name: lower case, ``[a-z0-9_-]`` only, no leading
    ``_``/``-``."""
    lowered = re.sub(r"[^a-z0-9_-]", "", text.lower())
    return lowered.lstrip("_-")


def check_project_name(name: str, source: str) -> str:
    if not _PROJECT_NAME.fullmatch(name):
        raise ComposeError(
            f'{source}: "{name}" is not a valid project name: it must contain only characters '
            "from [a-z0-9_-] and start with [a-z0-9]"
        )
    return name


def project_name(
    flag: str | None, variables: Mapping[str, str], document: Mapping[str, Any], working_dir: str
) -> str:
    if flag:
        return check_project_name(flag, "-p/--project-name")
    if variables.get("COMPOSE_PROJECT_NAME"):
        return check_project_name(variables["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME")
    if isinstance(document.get("name"), str) and document["name"]:
        return check_project_name(document["name"], "the top-level name")
    name = normalize_project_name(os.path.basename(working_dir.rstrip("/")))
    if not name:
        raise ComposeError(
            f"project name from the directory {working_dir!r} is empty once normalised: "
            "use -p/--project-name"
        )
    return name


def dependency_order(services: Mapping[str, Service]) -> list[str]:
    """Services with each one after what it depends on (file order otherwise); a cycle or a
    dependency on an undeclared service is a ``ComposeError``."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join([*chain[chain.index(name) :], name])
            raise ComposeError(f"dependency cycle detected: {cycle}")
        state[name] = "visiting"
        for dependency, spec in services[name].depends_on.items():
            if dependency not in services:
                if not spec.required:
                    continue
                raise ComposeError(
                    f'service "{name}" depends on undefined service "{dependency}": invalid '
                    "compose project"
                )
            visit(dependency, [*chain, name])
        state[name] = "done"
        order.append(name)

    for name in services:
        visit(name, [])
    return order
