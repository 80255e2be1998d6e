"""Reading compose files into the model: ``load_project`` and one reader per service field.

Rules:
- ``load_project`` is the one entry point: files → ``.env`` → interpolation → merge
  (``loader.py``) → validation → the frozen dataclasses of ``model.py``. Short and long
  syntaxes become one form (ports, volumes, depends_on, healthcheck, env_file, build),
  relative paths absolute (from the project directory).
- The subset is Compose's common one (see ``SERVICE_KEYS``); any other key, and any value of
  the wrong type, is a ``ComposeError`` naming the file, the service and the field, e.g.
  ``compose.yaml: services.web.ports[0]: invalid port "80:x"``. ``x-`` extension keys are
  allowed and ignored everywhere, ``version`` is accepted and ignored, as Compose does.
- Every reference is checked: a service's network, named volume or dependency must be
  declared.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from berth.cli.compose.fields import Fields
from berth.cli.compose.loader import (
    ComposeError,
    Merged,
    environment,
    find_files,
    load_documents,
    parse_env_file,
    type_name,
    where,
)
from berth.cli.compose.model import (
    Build,
    Dependency,
    Healthcheck,
    Mount,
    Network,
    Port,
    Project,
    Service,
    Volume,
    dependency_order,
    project_name,
)

TOP_LEVEL_KEYS = frozenset({"version", "name", "services", "networks", "volumes"})
SERVICE_KEYS = frozenset({
    "image", "build", "command", "entrypoint", "environment", "env_file", "ports", "expose",
    "volumes", "networks", "depends_on", "healthcheck", "restart", "deploy", "mem_limit",
    "mem_reservation", "memswap_limit", "cpus", "cpu_shares", "pids_limit", "scale", "labels",
    "container_name", "working_dir", "user", "hostname", "tty", "stdin_open", "init",
    "stop_signal", "stop_grace_period", "cap_add", "cap_drop", "read_only", "tmpfs",
    "privileged", "extra_hosts", "shm_size", "sysctls", "pull_policy", "network_mode",
})  # fmt: skip
NETWORK_KEYS = frozenset({"name", "driver", "external", "labels", "internal", "attachable"})
VOLUME_KEYS = frozenset({"name", "driver", "external", "labels"})
CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
_SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")


# ------------------------------------------------------------------ services


def _ports(f: Fields) -> tuple[Port, ...]:
    items = f.get("ports", (list,), [])
    ports: list[Port] = []
    for i, item in enumerate(items):
        key = f"ports[{i}]"
        if isinstance(item, dict):
            pf = Fields(item, f"{f.path}.{key}", f.merged, f.section)
            target = pf.integer("target")
            if target is None:
                raise f.error(key, "a long-syntax port needs target")
            protocol = pf.string("protocol", "tcp") or "tcp"
            published = pf.string("published", "") or ""
            ports.append(Port(target, published, pf.string("host_ip", "") or "", protocol))
            continue
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise f.error(key, f"must be a string or a mapping, not {type_name(item)}")
        ports.extend(parse_port(str(item), lambda problem, k=key: f.error(k, problem)))
    return tuple(ports)


def parse_port(text: str, error: Any) -> list[Port]:
    """``[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`` → ports (one per target)."""
    spec, _, protocol = text.partition("/")
    protocol = protocol or "tcp"
    if protocol not in ("tcp", "udp", "sctp"):
        raise error(f'invalid protocol "{protocol}" in port "{text}"')
    host_ip = ""
    if spec.startswith("["):  # [::1]:8080:80
        end = spec.find("]")
        host_ip, spec = spec[1:end], spec[end + 2 :]
    parts = spec.split(":")
    if len(parts) == 3:
        host_ip, published, target = parts
    elif len(parts) == 2:
        published, target = parts
    elif len(parts) == 1:
        published, target = "", parts[0]
    else:
        raise error(f'invalid port "{text}"')
    targets = _port_range(target)
    publishes = _port_range(published) if published else None
    if targets is None or (published and publishes is None):
        raise error(f'invalid port "{text}"')
    if publishes is not None and len(targets) > 1 and len(publishes) not in (1, len(targets)):
        raise error(f'invalid port "{text}": the ranges differ in size')
    result = []
    for i, port in enumerate(targets):
        if publishes is None:
            host = ""
        elif len(publishes) == 1 and len(targets) == 1:
            host = str(publishes[0])
        elif len(publishes) == 1 or len(targets) == 1:
            host = published  # one port within a host range: the daemon picks
        else:
            host = str(publishes[i])
        result.append(Port(port, host, host_ip, protocol))
    return result


def _port_range(text: str) -> list[int] | None:
    first, sep, last = text.partition("-")
    if not first.isdigit() or (sep and not last.isdigit()):
        return None
    low, high = int(first), int(last) if sep else int(first)
    if not (0 < low <= high <= 65535):
        return None
    return list(range(low, high + 1))


def _volumes(f: Fields, project: Mapping[str, Any], working_dir: str) -> tuple[Mount, ...]:
    items = f.get("volumes", (list,), [])
    mounts: list[Mount] = []
    declared = project.get("volumes") or {}
    for i, item in enumerate(items):
        key = f"volumes[{i}]"
        if isinstance(item, dict):
            mf = Fields(item, f"{f.path}.{key}", f.merged, f.section)
            kind = mf.string("type", "volume") or "volume"
            target = mf.string("target") or ""
            source = mf.string("source", "") or ""
            bind = mf.get("bind", (dict,), {})
            create = bool(bind.get("create_host_path", False))
            mount = Mount(kind, target, source, mf.boolean("read_only"), create)
        elif isinstance(item, str):
            mount = parse_volume(item, lambda problem, k=key: f.error(k, problem))
        else:
            raise f.error(key, f"must be a string or a mapping, not {type_name(item)}")
        if mount.type not in ("volume", "bind", "tmpfs"):
            raise f.error(key, f'unsupported volume type "{mount.type}"')
        if not mount.target.startswith("/"):
            raise f.error(key, f'the target "{mount.target}" must be an absolute path')
        if mount.type == "bind":
            if not mount.source:
                raise f.error(key, "a bind mount needs a source")
            source = os.path.normpath(os.path.join(working_dir, os.path.expanduser(mount.source)))
            mount = Mount("bind", mount.target, source, mount.read_only, mount.create_host_path)
        if mount.type == "volume" and mount.source and mount.source not in declared:
            raise f.error(
                key, f'service "{f.path.split(".")[-1]}" refers to undefined volume '
                f"{mount.source}: declare it under the top-level volumes"
            )  # fmt: skip
        mounts.append(mount)
    return tuple(mounts)


def parse_volume(text: str, error: Any) -> Mount:
    """``[SOURCE:]TARGET[:MODE]``: a source starting with ``.``, ``/`` or ``~`` is a bind."""
    parts = text.split(":")
    mode = ""
    if len(parts) == 3:
        source, target, mode = parts
    elif len(parts) == 2:
        source, target = parts
    elif len(parts) == 1:
        source, target = "", parts[0]
    else:
        raise error(f'invalid volume "{text}"')
    options = set(mode.split(",")) - {""}
    if not options <= {"ro", "rw", "z", "Z", "nocopy"}:
        raise error(f'invalid mode "{mode}" in volume "{text}"')
    read_only = "ro" in options
    if source.startswith((".", "/", "~")):
        return Mount("bind", target, source, read_only, True)
    return Mount("volume", target, source, read_only)


def _networks(f: Fields, project: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    value = f.get("networks", (list, dict))
    declared = project.get("networks") or {}
    if value is None:
        return {"default": ()}
    result: dict[str, tuple[str, ...]] = {}
    entries = {name: None for name in value} if isinstance(value, list) else value
    for name, options in entries.items():
        if not isinstance(name, str):
            raise f.error("networks", f"a network name must be a string, not {type_name(name)}")
        if name != "default" and name not in declared:
            raise f.error(
                f"networks.{name}", f'service "{f.path.split(".")[-1]}" refers to undefined '
                f"network {name}: declare it under the top-level networks"
            )  # fmt: skip
        aliases: tuple[str, ...] = ()
        if options is not None:
            if not isinstance(options, dict):
                raise f.error(f"networks.{name}", f"must be a mapping, not {type_name(options)}")
            nf = Fields(options, f"{f.path}.networks.{name}", f.merged, f.section)
            aliases = nf.strings("aliases")
        result[name] = aliases
    return result


def _network_mode(f: Fields) -> str | None:
    mode = f.string("network_mode")
    if mode is None:
        return None
    if f.data.get("networks") is not None:
        raise f.error("network_mode", "cannot be combined with networks")
    kind, sep, target = mode.partition(":")
    if not (mode in ("none", "host", "bridge", "default") or
            (kind in ("container", "service") and sep and target)):  # fmt: skip
        raise f.error("network_mode", f'invalid network mode "{mode}": none, host, bridge, '
                      "container:NAME or service:NAME")  # fmt: skip
    return mode


def _depends_on(f: Fields) -> dict[str, Dependency]:
    value = f.get("depends_on", (list, dict))
    mode = f.string("network_mode") or ""
    if mode.startswith("service:"):  # sharing a service's network namespace needs it started
        implied = {mode.removeprefix("service:"): Dependency()}
        return {**implied, **_declared_depends_on(f, value)}
    return _declared_depends_on(f, value)


def _declared_depends_on(f: Fields, value: Any) -> dict[str, Dependency]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(name): Dependency() for name in f.strings("depends_on")}
    result = {}
    for name, given in value.items():
        options = {} if given is None else given
        if not isinstance(options, dict):
            raise f.error(f"depends_on.{name}", f"must be a mapping, not {type_name(options)}")
        df = Fields(options, f"{f.path}.depends_on.{name}", f.merged, f.section)
        condition = df.string("condition", "service_started") or "service_started"
        if condition not in CONDITIONS:
            raise df.error("condition", f'invalid condition "{condition}": one of '
                           + ", ".join(CONDITIONS))  # fmt: skip
        result[str(name)] = Dependency(
            condition, df.boolean("required", True), df.boolean("restart", False)
        )
    return result


def _healthcheck(f: Fields) -> Healthcheck | None:
    value = f.get("healthcheck", (dict,))
    if value is None:
        return None
    hf = Fields(value, f"{f.path}.healthcheck", f.merged, f.section)
    unknown = set(value) - {"test", "interval", "timeout", "retries", "start_period",
                            "start_interval", "disable"}  # fmt: skip
    if unknown:
        raise hf.error(sorted(unknown)[0], "unknown healthcheck option")
    if hf.boolean("disable"):
        return Healthcheck(("NONE",))
    test = hf.get("test", (str, list))
    if isinstance(test, str):
        command: tuple[str, ...] = ("CMD-SHELL", test)
    elif test:
        command = hf.strings("test")
        if command[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise hf.error("test", f'must start with "CMD", "CMD-SHELL" or "NONE", not '
                           f'"{command[0]}"')  # fmt: skip
    else:
        command = ()
    return Healthcheck(
        command, hf.duration("interval"), hf.duration("timeout"), hf.duration("start_period"),
        hf.duration("start_interval"), hf.integer("retries"),
    )  # fmt: skip


def _build(f: Fields, working_dir: str) -> Build | None:
    value = f.get("build", (str, dict))
    if value is None:
        return None
    if isinstance(value, str):
        return Build(os.path.normpath(os.path.join(working_dir, value)))
    bf = Fields(value, f"{f.path}.build", f.merged, f.section)
    context = os.path.normpath(os.path.join(working_dir, bf.string("context", ".") or "."))
    return Build(
        context, bf.string("dockerfile", "Dockerfile") or "Dockerfile", bf.mapping("args"),
        bf.string("target"), bf.mapping("labels"),
    )  # fmt: skip


def _environment(f: Fields, working_dir: str, shell: Mapping[str, str]) -> dict[str, str]:
    env: dict[str, str] = {}
    files = f.get("env_file", (str, list))
    entries = [files] if isinstance(files, str) else files or []
    for i, entry in enumerate(entries):
        path, required = entry, True
        if isinstance(entry, dict):
            path, required = entry.get("path"), bool(entry.get("required", True))
        if not isinstance(path, str):
            raise f.error(f"env_file[{i}]", "must be a path or a mapping with path")
        full = os.path.join(working_dir, path)
        for key, text in parse_env_file(full, required).items():
            if text is not None:
                env[key] = text
            elif key in shell:
                env[key] = shell[key]
    raw = f.get("environment", (dict, list))
    bare = set()
    if isinstance(raw, list):
        bare = {item for item in raw if isinstance(item, str) and "=" not in item}
    elif isinstance(raw, dict):
        bare = {str(k) for k, v in raw.items() if v is None}
    for key, text in f.mapping("environment").items():
        if key in bare:
            if key in shell:
                env[key] = shell[key]
            continue  # unset in the shell: left out, as Compose does
        env[key] = text
    return env


def _restart(f: Fields) -> str:
    value = f.data.get("restart")
    if value is False:  # YAML 1.1 reads an unquoted no as false
        return "no"
    text = f.string("restart", "no") or "no"
    name, _, count = text.partition(":")
    if name not in RESTART_POLICIES or (count and (name != "on-failure" or not count.isdigit())):
        raise f.error("restart", f'invalid restart policy "{text}": one of '
                      + ", ".join(RESTART_POLICIES) + " (on-failure[:max-retries])")  # fmt: skip
    return text


def _limits(f: Fields) -> dict[str, Any]:
    """mem_limit/cpus/pids_limit, or deploy.resources.limits (which win, as in Compose)."""
    limits: dict[str, Any] = {
        "memory": f.size("mem_limit"),
        "nano_cpus": f.cpus("cpus"),
        "pids_limit": f.integer("pids_limit"),
        "memory_reservation": f.size("mem_reservation"),
    }
    deploy = f.get("deploy", (dict,))
    if deploy is None:
        return limits
    df = Fields(deploy, f"{f.path}.deploy", f.merged, f.section)
    unknown = set(deploy) - {"resources", "replicas", "restart_policy", "labels", "mode"}
    if unknown:
        raise df.error(sorted(unknown)[0], "not supported by berth compose")
    resources = df.get("resources", (dict,), {})
    rf = Fields(resources, f"{df.path}.resources", f.merged, f.section)
    wanted = rf.get("limits", (dict,), {})
    lf = Fields(wanted, f"{rf.path}.limits", f.merged, f.section)
    unknown = set(wanted) - {"cpus", "memory", "pids"}
    if unknown:
        raise lf.error(sorted(unknown)[0], "not supported by berth compose")
    reservations = rf.get("reservations", (dict,), {})
    resf = Fields(reservations, f"{rf.path}.reservations", f.merged, f.section)
    for key, value in (
        ("memory", lf.size("memory")), ("nano_cpus", lf.cpus("cpus")),
        ("pids_limit", lf.integer("pids")), ("memory_reservation", resf.size("memory")),
    ):  # fmt: skip
        if value is not None:
            limits[key] = value
    limits["replicas"] = df.integer("replicas")
    return limits


def load_service(
    name: str, data: Any, merged: Merged, project: str, working_dir: str, shell: Mapping[str, str]
) -> Service:
    section = f"services.{name}"
    if not _SERVICE_NAME.fullmatch(name):
        raise ComposeError(f"{where(merged.origin_of(section), section)}: invalid service name")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ComposeError(
            f"{where(merged.origin_of(section), section)}: must be a mapping, not {type_name(data)}"
        )
    f = Fields(data, section, merged, section)
    for key in data:
        if not (str(key) in SERVICE_KEYS or str(key).startswith("x-")):
            raise f.error(str(key), "unknown or unsupported service option")
    image = f.string("image")
    build = _build(f, working_dir)
    if image is None and build is None:
        raise f.error("", "has neither an image nor a build context specified")
    limits = _limits(f)
    replicas = limits.pop("replicas", None)
    scale = f.integer("scale")
    if scale is None:
        scale = 1 if replicas is None else replicas
    if scale < 0:
        raise f.error("scale", f"must be 0 or more, not {scale}")
    pull_policy = f.string("pull_policy", "missing") or "missing"
    if pull_policy not in ("always", "never", "missing", "if_not_present", "build"):
        raise f.error("pull_policy", f'invalid pull policy "{pull_policy}"')
    stop_grace = f.duration("stop_grace_period")
    network_mode = _network_mode(f)
    return Service(
        name=name,
        image=image or f"{project}-{name}",
        build=build,
        command=f.command("command"),
        entrypoint=f.command("entrypoint"),
        environment=_environment(f, working_dir, shell),
        ports=_ports(f),
        expose=f.strings("expose"),
        volumes=_volumes(f, merged.document, working_dir),
        networks={} if network_mode else _networks(f, merged.document),
        network_mode=network_mode,
        depends_on=_depends_on(f),
        healthcheck=_healthcheck(f),
        restart=_restart(f),
        memory_swap=f.size("memswap_limit"),
        cpu_shares=f.integer("cpu_shares"),
        scale=scale,
        labels=f.mapping("labels"),
        container_name=f.string("container_name"),
        working_dir=f.string("working_dir"),
        user=f.string("user"),
        hostname=f.string("hostname"),
        tty=f.boolean("tty"),
        stdin_open=f.boolean("stdin_open"),
        init=f.get("init", (bool,)),
        stop_signal=f.string("stop_signal"),
        stop_grace_period=None if stop_grace is None else stop_grace // 1_000_000_000,
        cap_add=f.strings("cap_add"),
        cap_drop=f.strings("cap_drop"),
        read_only=f.boolean("read_only"),
        tmpfs=f.strings("tmpfs"),
        privileged=f.boolean("privileged"),
        extra_hosts=f.strings("extra_hosts"),
        shm_size=f.size("shm_size"),
        sysctls=f.mapping("sysctls"),
        pull_policy=pull_policy,
        **limits,
    )


# ------------------------------------------------------------------ networks and volumes


def _resources(
    section: str, merged: Merged, project: str, keys: frozenset[str]
) -> dict[str, dict[str, Any]]:
    raw = merged.document.get(section) or {}
    if not isinstance(raw, dict):
        file = merged.origin_of(section)
        raise ComposeError(f"{where(file, section)}: must be a mapping, not {type_name(raw)}")
    result = {}
    for key, given in raw.items():
        path = f"{section}.{key}"
        value = given or {}
        if not isinstance(value, dict):
            raise ComposeError(f"{where(merged.origin_of(path), path)}: must be a mapping")
        f = Fields(value, path, merged, path)
        for option in value:
            if not (option in keys or str(option).startswith("x-")):
                raise f.error(str(option), "unknown or unsupported option")
        external = f.get("external", (bool, dict), False)
        name = f.string("name")
        if isinstance(external, dict):  # the old external: {name: x} form
            name = external.get("name") or name
            external = True
        result[str(key)] = {
            "key": str(key),
            "name": name or (str(key) if external else f"{project}_{key}"),
            "external": bool(external),
            "driver": f.string("driver"),
            "labels": f.mapping("labels"),
            **({"internal": f.boolean("internal"), "attachable": f.boolean("attachable")}
               if section == "networks" else {}),
        }  # fmt: skip
    return result


# ------------------------------------------------------------------ the project


def load_project(
    files: list[str],
    project_directory: str | None = None,
    name: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Project:
    """The project the files describe (see the module rules)."""
    paths, working_dir = find_files(files, project_directory)
    shell = dict(os.environ if environ is None else environ)
    variables = environment(working_dir, shell)
    merged = load_documents(paths, variables)
    for key in merged.document:
        if key not in TOP_LEVEL_KEYS and not str(key).startswith("x-"):
            where_from = merged.origin_of(str(key))
            if key in ("configs", "secrets", "include", "models"):
                raise ComposeError(f"{where_from}: {key}: not supported by berth compose")
            raise ComposeError(f"{where_from}: additional property {key} is not allowed")
    project = project_name(name, variables, merged.document, working_dir)
    services_raw = merged.document.get("services") or {}
    if not isinstance(services_raw, dict):
        raise ComposeError(f"{merged.origin_of('services')}: services must be a mapping")
    if not services_raw:
        raise ComposeError(f"{', '.join(paths)}: no service is defined")
    services = {
        str(key): load_service(str(key), value, merged, project, working_dir, variables)
        for key, value in services_raw.items()
    }
    networks = {
        key: Network(**spec)
        for key, spec in _resources("networks", merged, project, NETWORK_KEYS).items()
    }
    if any("default" in s.networks for s in services.values()) and "default" not in networks:
        networks = {"default": Network("default", f"{project}_default"), **networks}
    volumes = {
        key: Volume(**spec)
        for key, spec in _resources("volumes", merged, project, VOLUME_KEYS).items()
    }
    ordered = {name: services[name] for name in dependency_order(services)}
    return Project(project, working_dir, tuple(paths), ordered, networks, volumes)
