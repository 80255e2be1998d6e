"""``/version``, ``/info`` and ``/system/df``: what the daemon and the host are, from real values.

Rules: every number is read from the host or the stores when asked (nothing cached but the
cgroup layout, which does not change under a running daemon); fields Berth has no use for get
the value dockerd gives when the feature is off, so the CLI's ``docker info`` prints cleanly.
Containers and volumes come from their managers; build cache is empty until that slice exists.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import platform
import threading
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web

import berth
from berth.engine import api, api_registry, api_volumes
from berth.engine.stats import machine_memory
from berth.errors import BerthError
from berth.runtime import cgroups

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}
DF_TYPES = ("container", "image", "volume", "build-cache")


def go_arch() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    key, eq, text = line.strip().partition("=")
                    if eq:
                        out[key] = text.strip().strip('"')
            return out
        except OSError:
            continue
    return out


@functools.cache
def cgroup_facts() -> dict[str, Any]:
    """Cgroup version and which limits the host can enforce (dockerd's sysinfo)."""
    try:
        layout = cgroups.detect()
    except BerthError as e:
        return {"version": "", "warnings": [f"WARNING: no cgroups: {e.message}"], "has": set()}
    has: set[str] = set()
    warnings: list[str] = []
    for h in layout.hierarchies:
        has.update(h.controllers)
        if "memory" in h.controllers:
            base = h.mountpoint
            swap = "memory.memsw.limit_in_bytes" if h.version == 1 else ""
            if h.version == 2 or os.path.exists(os.path.join(base, swap)):
                has.add("swap")
    if "swap" not in has and "memory" in has:
        warnings.append("WARNING: No swap limit support")
    # dockerd says "1" for v1 and hybrid hosts: v1 controls the limits there.
    version = "2" if layout.mode == "v2" else "1"
    return {"version": version, "warnings": warnings, "has": has}


def _kernel() -> str:
    return os.uname().release


# --------------------------------------------------------------------------- /version


async def version(request: web.Request) -> web.StreamResponse:
    return api.json_response(version_document())


def version_document() -> dict[str, Any]:
    kernel = _kernel()
    details = {
        "ApiVersion": api.API_VERSION,
        "Arch": go_arch(),
        "BuildTime": "",
        "Experimental": "false",
        "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}",
        "KernelVersion": kernel,
        "MinAPIVersion": api.MIN_API_VERSION,
        "Os": "linux",
    }
    return {
        "Platform": {"Name": "Berth"},
        "Components": [
            {"Name": "Engine", "Version": berth.__version__, "Details": details},
            {
                "Name": "berth-runtime",
                "Version": berth.__version__,
                "Details": {"GitCommit": ""},
            },
        ],
        "Version": berth.__version__,
        "ApiVersion": api.API_VERSION,
        "MinAPIVersion": api.MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": details["GoVersion"],
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel,
        "Experimental": False,
        "BuildTime": "",
    }


# --------------------------------------------------------------------------- /info


async def info(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    images = await asyncio.to_thread(state.images.list)
    doc = info_document(state, len(images))
    insecure: tuple[str, ...] = request.app.get(api_registry.INSECURE_REGISTRIES, ())
    doc["RegistryConfig"] = registry_config(insecure)
    return api.json_response(doc)


def registry_config(insecure: Iterable[str]) -> dict[str, Any]:
    """``/info``'s RegistryConfig as dockerd fills it from ``--insecure-registry``: CIDRs in
    InsecureRegistryCIDRs (loopback always), host names as index configs that are not secure."""
    cidrs = ["127.0.0.0/8", "::1/128"]
    indexes: dict[str, Any] = {
        "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True, "Official": True}
    }
    for entry in insecure:
        try:
            network = str(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            indexes[entry] = {"Name": entry, "Mirrors": [], "Secure": False, "Official": False}
            continue
        if network not in cidrs:
            cidrs.insert(len(cidrs) - 2, network)
    return {
        "AllowNondistributableArtifactsCIDRs": None,
        "AllowNondistributableArtifactsHostnames": None,
        "InsecureRegistryCIDRs": cidrs,
        "IndexConfigs": indexes,
        "Mirrors": None,
    }


def _driver(state: api.Engine) -> tuple[str, list[list[str]]]:
    mode = state.images.snapshots.mode
    name = "overlayfs" if mode == "overlay" else "native"
    return name, [["Snapshotter", mode], ["Root Dir", state.images.snapshots.root]]


def info_document(state: api.Engine, image_count: int) -> dict[str, Any]:
    facts = cgroup_facts()
    has: set[str] = facts["has"]
    release = _os_release()
    driver, driver_status = _driver(state)
    try:
        nfd = len(os.listdir("/proc/self/fd"))
    except OSError:
        nfd = 0
    try:
        ncpu = len(os.sched_getaffinity(0))
    except OSError:
        ncpu = os.cpu_count() or 1
    env = os.environ
    security = ["name=seccomp,profile=builtin"]
    if facts["version"] == "2":
        security.append("name=cgroupns")
    return {
        "ID": state.engine_id,
        **state.containers.counts(),
        "Images": image_count,
        "Driver": driver,
        "DriverStatus": driver_status,
        "Plugins": {
            "Volume": ["local"],
            "Network": ["bridge", "host", "none"],
            "Authorization": None,
            "Log": ["json-file"],
        },
        "MemoryLimit": "memory" in has,
        "SwapLimit": "swap" in has,
        "KernelMemory": False,
        "KernelMemoryTCP": False,
        "CpuCfsPeriod": "cpu" in has,
        "CpuCfsQuota": "cpu" in has,
        "CPUShares": "cpu" in has,
        "CPUSet": "cpuset" in has,
        "PidsLimit": "pids" in has,
        "OomKillDisable": facts["version"] == "1" and "memory" in has,
        "IPv4Forwarding": True,
        "BridgeNfIptables": False,
        "BridgeNfIp6tables": False,
        "Debug": state.debug,
        "NFd": nfd,
        "NGoroutines": threading.active_count() + len(asyncio.all_tasks()),
        "SystemTime": _rfc3339_now(),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": facts["version"],
        "NEventsListener": 0,
        "KernelVersion": _kernel(),
        "OperatingSystem": release.get("PRETTY_NAME", "Linux"),
        "OSVersion": release.get("VERSION_ID", ""),
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": registry_config(()),
        "NCPU": ncpu,
        "MemTotal": machine_memory(),
        "GenericResources": None,
        "DockerRootDir": state.paths.data_root,
        "HttpProxy": env.get("HTTP_PROXY", env.get("http_proxy", "")),
        "HttpsProxy": env.get("HTTPS_PROXY", env.get("https_proxy", "")),
        "NoProxy": env.get("NO_PROXY", env.get("no_proxy", "")),
        "Name": api.hostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": berth.__version__,
        "Runtimes": {"berth": {"path": "berth-runtime"}},
        "DefaultRuntime": "berth",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": False,
            "Error": "",
            "RemoteManagers": None,
        },
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""},
        "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""},
        "SecurityOptions": security,
        "DefaultAddressPools": [],
        "Warnings": list(facts["warnings"]),
    }


def _rfc3339_now() -> str:
    now = time.time()
    local = time.localtime(now)
    offset = time.strftime("%z", local)
    zone = f"{offset[:3]}:{offset[3:]}" if offset not in ("+0000", "") else "Z"
    fraction = f"{now % 1:.9f}"[1:]
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + fraction + zone


# --------------------------------------------------------------------------- /system/df


async def system_df(request: web.Request) -> web.StreamResponse:
    state = api.engine(request)
    wanted = request.query.getall("type", [])
    for kind in wanted:
        if kind not in DF_TYPES:
            raise api_invalid_type(kind)
    usage, rows = await asyncio.to_thread(lambda: (state.images.disk_usage(), state.images.list()))
    volumes = await asyncio.to_thread(api_volumes.disk_rows, request)
    shared = {u.id: u.shared_size for u in usage.images}
    images = []
    for row in rows:
        doc = row.to_json()
        doc["SharedSize"] = shared.get(row.id, row.shared_size)
        doc["Containers"] = 1 if state.containers.image_in_use(row.id) else 0
        images.append(doc)
    out: dict[str, Any] = {
        "LayersSize": usage.total_size,
        "Images": images,
        "Containers": state.containers.disk_rows(),
        "Volumes": volumes,
        "BuildCache": [],
    }
    if wanted:
        keep = {
            "image": ("LayersSize", "Images"),
            "container": ("Containers",),
            "volume": ("Volumes",),
            "build-cache": ("BuildCache",),
        }
        names = {name for kind in wanted for name in keep[kind]}
        out = {k: v for k, v in out.items() if k in names}
    return api.json_response(out)


def api_invalid_type(kind: str) -> BerthError:
    from berth.errors import InvalidArgument

    return InvalidArgument(f"unknown object type: {kind}")


ROUTES: list[api.Route] = [
    ("GET", "/version", version),
    ("GET", "/info", info),
    ("GET", "/system/df", system_df),
]
