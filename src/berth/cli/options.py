"""``run``/``create`` flags and the create request body they make.

Rules:
- Values are parsed as the docker CLI parses them: memory in binary units (``512m`` is
  512 MiB; a bare number is bytes), ``--cpus 1.5`` as NanoCpus, durations as Go's
  (``1m30s``, ``500ms``), ``--ulimit name=soft[:hard]``, ``--restart name[:max]``,
  ``--tmpfs path[:opts]``, ``-e K`` taking K's value from our own environment.
- A bad value is a ``UsageError`` naming the flag and the value (exit 125), before any
  request is sent, so nothing is created.
- ``create_body`` leaves out what was not asked for, so the daemon's defaults apply.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from berth.cli.common import Parser, UsageError, parser

_MEMORY_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "m": 1 << 20,
    "g": 1 << 30,
    "t": 1 << 40,
    "p": 1 << 50,
}
_DURATION_UNITS = {
    "ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
    "m": 60_000_000_000, "h": 3_600_000_000_000,
}  # fmt: skip


def memory_bytes(text: str) -> int:
    """``512m`` → 536870912 (docker's RAMInBytes: binary units, optional ``b``)."""
    value = text.strip().lower()
    if value.endswith("b") and len(value) > 1 and value[-2] in "kmgtp":
        value = value[:-1]
    number, unit = value, ""
    if value and value[-1] in _MEMORY_UNITS:
        number, unit = value[:-1], value[-1]
    try:
        amount = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size: '{text}'") from None
    if amount < 0:
        raise argparse.ArgumentTypeError(f"invalid size: '{text}'")
    return int(amount * _MEMORY_UNITS[unit])


def cpus_to_nano(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"failed to parse {text} as a rational number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text}: must be positive")
    return round(value * 1e9)


def parse_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    rest = text.strip()
    if rest in ("0", ""):
        return 0
    total = 0.0
    while rest:
        i = 0
        while i < len(rest) and (rest[i].isdigit() or rest[i] == "."):
            i += 1
        j = i
        while j < len(rest) and not (rest[j].isdigit() or rest[j] == "."):
            j += 1
        number, unit = rest[:i], rest[i:j]
        if not number or unit not in _DURATION_UNITS:
            raise argparse.ArgumentTypeError(f'time: invalid duration "{text}"')
        total += float(number) * _DURATION_UNITS[unit]
        rest = rest[j:]
    return int(total)


def ulimit(text: str) -> dict[str, Any]:
    name, sep, values = text.partition("=")
    soft, _, hard = values.partition(":")
    try:
        soft_value = int(soft)
        hard_value = int(hard) if hard else soft_value
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid ulimit argument: {text}") from None
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"invalid ulimit argument: {text}")
    if soft_value > hard_value:
        raise argparse.ArgumentTypeError(
            f"ulimit soft limit must be less than or equal to hard limit: {soft_value} > "
            f"{hard_value}"
        )
    return {"Name": name, "Soft": soft_value, "Hard": hard_value}


def restart_policy(text: str) -> dict[str, Any]:
    name, _, count = text.partition(":")
    if name not in ("no", "always", "on-failure", "unless-stopped"):
        raise argparse.ArgumentTypeError(f"invalid restart policy {text}")
    if count and name != "on-failure":
        raise argparse.ArgumentTypeError(f"maximum retry count cannot be used with {name}")
    try:
        retries = int(count) if count else 0
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"maximum retry count must be an integer: {text}"
        ) from None
    return {"Name": name, "MaximumRetryCount": retries}


def env_item(text: str) -> str | None:
    if "=" in text:
        return text
    value = os.environ.get(text)
    return None if value is None else f"{text}={value}"


def key_values(items: list[str] | None) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        result[key] = value
    return result


def add_create_flags(p: Parser) -> None:
    add = p.add_argument
    add("--name")
    add("-e", "--env", action="append", default=[])
    add("--env-file", action="append", default=[])
    add("-w", "--workdir")
    add("-u", "--user")
    add("-h", "--hostname")
    add("--entrypoint")
    add("-l", "--label", action="append", default=[])
    add("-i", "--interactive", action="store_true")
    add("-t", "--tty", action="store_true")
    add("-m", "--memory", type=memory_bytes)
    add("--memory-swap", type=memory_bytes)
    add("--memory-reservation", type=memory_bytes)
    add("--cpus", type=cpus_to_nano)
    add("-c", "--cpu-shares", type=int)
    add("--cpuset-cpus")
    add("--cpuset-mems")
    add("--pids-limit", type=int)
    add("--ulimit", type=ulimit, action="append", default=[])
    add("--read-only", action="store_true")
    add("--tmpfs", action="append", default=[])
    add("-v", "--volume", action="append", default=[])
    add("--cap-add", action="append", default=[])
    add("--cap-drop", action="append", default=[])
    add("--privileged", action="store_true")
    add("--security-opt", action="append", default=[])
    add("--restart", type=restart_policy)
    add("--network", "--net")
    add("--stop-signal")
    add("--stop-timeout", type=int)
    add("--init", action="store_true")
    add("--oom-kill-disable", action="store_true")
    add("--shm-size", type=memory_bytes)
    add("--sysctl", action="append", default=[])
    add("--health-cmd")
    add("--health-interval", type=parse_duration)
    add("--health-timeout", type=parse_duration)
    add("--health-retries", type=int)
    add("--health-start-period", type=parse_duration)
    add("--no-healthcheck", action="store_true")
    add("--pull", choices=["missing", "always", "never"], default="missing")
    add("--platform")
    add("image")
    add("command", nargs=argparse.REMAINDER)


def create_parser(verb: str) -> Parser:
    p = parser(verb, "[OPTIONS] IMAGE [COMMAND] [ARG...]", add_help=False)  # -h is --hostname
    p.add_argument("--help", action="help")
    return p


def _env_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise UsageError(f"open {path}: {e.strerror}") from e
    return [item for line in lines if line and not line.startswith("#") if (item := env_item(line))]


def _healthcheck(a: argparse.Namespace) -> dict[str, Any] | None:
    if a.no_healthcheck:
        return {"Test": ["NONE"]}
    fields = {
        "Interval": a.health_interval,
        "Timeout": a.health_timeout,
        "Retries": a.health_retries,
        "StartPeriod": a.health_start_period,
    }
    check: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if a.health_cmd is not None:
        check["Test"] = ["CMD-SHELL", a.health_cmd]
    return check or None


def _tmpfs(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        path, _, opts = item.partition(":")
        if not path.startswith("/"):
            raise UsageError(f"invalid tmpfs path {path!r}: it must be absolute")
        result[path] = opts
    return result


def create_body(
    a: argparse.Namespace, console_size: tuple[int, int] | None = None
) -> dict[str, Any]:
    """The ``POST /containers/create`` body for the parsed run/create flags."""
    env = [item for f in a.env_file for item in _env_file(f)]
    env += [item for e in a.env if (item := env_item(e))]
    host: dict[str, Any] = {
        "Memory": a.memory,
        "MemorySwap": a.memory_swap,
        "MemoryReservation": a.memory_reservation,
        "NanoCpus": a.cpus,
        "CpuShares": a.cpu_shares,
        "CpusetCpus": a.cpuset_cpus,
        "CpusetMems": a.cpuset_mems,
        "PidsLimit": a.pids_limit,
        "Ulimits": a.ulimit or None,
        "ReadonlyRootfs": a.read_only or None,
        "Tmpfs": _tmpfs(a.tmpfs) or None,
        "Binds": a.volume or None,
        "CapAdd": a.cap_add or None,
        "CapDrop": a.cap_drop or None,
        "Privileged": a.privileged or None,
        "SecurityOpt": a.security_opt or None,
        "RestartPolicy": a.restart,
        "AutoRemove": getattr(a, "rm", False) or None,
        "NetworkMode": a.network,
        "Init": a.init or None,
        "OomKillDisable": a.oom_kill_disable or None,
        "ShmSize": a.shm_size,
        "Sysctls": key_values(a.sysctl) or None,
        "ConsoleSize": list(console_size) if console_size else None,
    }
    if host["AutoRemove"] and host["RestartPolicy"] and host["RestartPolicy"]["Name"] != "no":
        raise UsageError("Conflicting options: --restart and --rm")
    attach_stdin = a.interactive and not getattr(a, "detach", False)
    body: dict[str, Any] = {
        "Image": a.image,
        "Cmd": a.command or None,
        "Env": env or None,
        "WorkingDir": a.workdir,
        "User": a.user,
        "Hostname": a.hostname,
        "Labels": key_values(a.label) or None,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        "StdinOnce": attach_stdin,
        "AttachStdin": attach_stdin,
        "AttachStdout": not getattr(a, "detach", False),
        "AttachStderr": not getattr(a, "detach", False),
        "StopSignal": a.stop_signal,
        "StopTimeout": a.stop_timeout,
        "Healthcheck": _healthcheck(a),
        "HostConfig": {k: v for k, v in host.items() if v is not None},
    }
    if a.entrypoint is not None:
        body["Entrypoint"] = [a.entrypoint]  # [""] resets the image's, as docker sends it
    return {k: v for k, v in body.items() if v is not None}
