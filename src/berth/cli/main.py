"""``berth``: the command line of the Berth engine, a Docker Engine API client.

    berth [-H unix:///run/berth/berth.sock] [--debug] COMMAND [OPTIONS] [ARGS]

Rules:
- Start-up is the budget (``berth ps`` well under 150 ms): only the module of the chosen verb
  is imported, each verb builds only its own argparse parser, and ``rich`` is imported only
  where progress bars or live displays pay for it.
- The daemon's socket: ``-H/--host``, else ``BERTH_HOST``, else ``DOCKER_HOST`` when it is a
  ``unix://`` URL, else ``unix:///run/berth/berth.sock``.
- Exit codes and messages as the docker CLI's: ``Error response from daemon: <message>`` and
  1 (``run``/``create`` use 125 for daemon errors; 126/127 when the command cannot be run);
  a usage error is 125; an unreachable daemon is "Cannot connect to the Berth daemon at
  unix://…. Is berthd running?" and 1; Ctrl-C is 130; a closed stdout pipe ends the command
  quietly with 141 (128 + SIGPIPE, what a shell reports for a program the pipe killed).
- Management forms map onto the verbs: ``container ls`` is ``ps``, ``image ls`` is
  ``images``, ``image rm`` is ``rmi``, ``container inspect``/``image inspect`` are
  ``inspect --type``; ``system info`` is ``info``; the prunes are reached only this way.
- ``--debug`` logs each request and its status on stderr.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from berth.cli.client import ApiError, Client, DaemonUnreachable, host_from_environment
from berth.cli.common import CliError, Context, UsageError

# verb -> module under berth.cli that defines a function of that name (``cmd_<verb>``)
VERBS: dict[str, str] = {
    **dict.fromkeys(
        ("ps", "stop", "kill", "restart", "rm", "pause", "unpause", "rename", "wait", "logs",
         "inspect", "top", "update", "stats"),
        "containers",
    ),
    **dict.fromkeys(("run", "create", "start", "exec", "attach"), "run"),
    **dict.fromkeys(
        ("images", "rmi", "tag", "build", "load", "save", "history"), "images"
    ),
    **dict.fromkeys(("pull", "push", "login", "logout"), "registry_client"),
    **dict.fromkeys(("info", "version", "events", "system", "daemon"), "system"),
    **dict.fromkeys(("container_prune", "image_prune", "system_prune"), "prune"),
    **dict.fromkeys(
        ("network_create", "network_ls", "network_inspect", "network_rm", "network_prune",
         "network_connect", "network_disconnect", "port"),
        "networks",
    ),
    **dict.fromkeys(
        ("volume_create", "volume_ls", "volume_inspect", "volume_rm", "volume_prune"), "volumes"
    ),
    "registry": "registry",
    "compose": "compose",
}  # fmt: skip

MANAGEMENT: dict[str, dict[str, list[str]]] = {
    "container": {
        "ls": ["ps"], "list": ["ps"], "inspect": ["inspect", "--type", "container"],
        "remove": ["rm"], "prune": ["container_prune"], "port": ["port"],
    },
    "network": {
        **{verb: [f"network_{verb}"]
           for verb in ("create", "ls", "inspect", "rm", "prune", "connect", "disconnect")},
        "list": ["network_ls"], "remove": ["network_rm"],
    },
    "volume": {
        **{verb: [f"volume_{verb}"] for verb in ("create", "ls", "inspect", "rm", "prune")},
        "list": ["volume_ls"], "remove": ["volume_rm"],
    },
    "image": {
        "ls": ["images"], "list": ["images"], "rm": ["rmi"], "remove": ["rmi"],
        "inspect": ["inspect", "--type", "image"], "prune": ["image_prune"],
    },
    "system": {"df": ["system", "df"], "info": ["info"], "events": ["events"],
               "prune": ["system_prune"]},
}  # fmt: skip

USAGE = """Usage:  berth [OPTIONS] COMMAND

A container platform: a client of berthd (the Docker Engine API)

Common Commands:
  run         Create and run a new container from an image
  exec        Execute a command in a running container
  ps          List containers
  build       Build an image from a Dockerfile
  pull        Download an image from a registry
  push        Upload an image to a registry
  images      List images
  logs        Fetch the logs of a container
  inspect     Return low-level information on containers or images
  stats       Display a live stream of container(s) resource usage statistics
  top         Display the running processes of a container
  events      Get real time events from the server
  info        Display system-wide information
  version     Show the Berth version information
  daemon      Start berthd in the foreground or in the background
  registry    Serve an OCI registry (berth registry serve --addr HOST:PORT --root DIR)
  compose     Run a multi-container application from a compose file

Other Commands:
  attach create kill load login logout pause rename restart rm rmi save start stop system
  tag unpause update wait history port

Management Commands:
  container network volume image system

Global Options:
  -H, --host string   Daemon socket to connect to (default unix:///run/berth/berth.sock,
                      or $BERTH_HOST, or a unix:// $DOCKER_HOST)
  -D, --debug         Enable debug mode
  -v, --version       Print version information and quit
"""


def split_globals(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    """(host, debug, the rest starting with the verb) from the global options."""
    host: str | None = None
    debug = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-H", "--host"):
            if i + 1 >= len(argv):
                raise UsageError(f"flag needs an argument: {arg}")
            host = argv[i + 1]
            i += 2
        elif arg.startswith("--host="):
            host = arg.split("=", 1)[1]
            i += 1
        elif arg.startswith("-H") and len(arg) > 2:
            host = arg[2:]
            i += 1
        elif arg in ("-D", "--debug"):
            debug = True
            i += 1
        elif arg.startswith("-") and arg not in ("-h", "--help", "-v", "--version"):
            raise UsageError(f"unknown flag: {arg}")
        else:
            break
    return host, debug, argv[i:]


def resolve_verb(rest: list[str]) -> tuple[str, list[str]]:
    verb, args = rest[0], rest[1:]
    if verb in MANAGEMENT:
        if not args or args[0] in ("-h", "--help"):
            names = ", ".join(MANAGEMENT[verb])
            raise UsageError(f"Usage: berth {verb} COMMAND ({names}, or a verb like run, rm)")
        sub = args[0]
        if verb in ("network", "volume") and sub not in MANAGEMENT[verb]:
            raise UsageError(f"unknown command: berth {verb} {sub}")  # no verb falls through
        mapped = MANAGEMENT[verb].get(sub, [sub])
        return mapped[0], mapped[1:] + args[1:]
    return verb, args


def handler_of(verb: str) -> Callable[[Context, list[str]], int]:
    module = importlib.import_module(f"berth.cli.{VERBS[verb]}")
    function: Callable[[Context, list[str]], int] = getattr(module, f"cmd_{verb}")
    return function


def run(argv: list[str]) -> int:
    try:
        host, debug, rest = split_globals(argv)
        if not rest or rest[0] in ("-h", "--help", "help"):
            sys.stdout.write(USAGE)
            return 0
        if rest[0] in ("-v", "--version"):
            from berth.cli.system import client_version

            sys.stdout.write(f"Berth version {client_version()}\n")
            return 0
        verb, args = resolve_verb(rest)
        if verb not in VERBS:
            raise UsageError(f"'{verb}' is not a berth command.\nSee 'berth --help'")
        client = Client(host_from_environment(host), debug=debug)
    except (UsageError, ValueError) as e:
        sys.stderr.write(f"berth: {e}\n")
        return 125
    context = Context(client=client, debug=debug, verb=verb)
    try:
        return handler_of(verb)(context, args)
    except UsageError as e:
        sys.stderr.write(f"{e}\nSee 'berth {verb.replace('_', ' ')} --help'.\n")
        return 125
    except DaemonUnreachable as e:
        sys.stderr.write(f"{e}\n")
        if debug:
            sys.stderr.write(f"({e.reason})\n")
        return 1
    except ApiError as e:
        sys.stderr.write(f"Error response from daemon: {e.message}\n")
        return 125 if verb in ("run", "create") else 1
    except CliError as e:
        if e.message:
            sys.stderr.write(f"{e.message}\n")
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()
    finally:
        client.close()


def _reader_went_away() -> int:
    """Our stdout's reader closed it (``berth logs x | head``): end quietly, as 128+SIGPIPE."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush must not fail again
    os.close(devnull)
    return 141


def main() -> int:
    code = run(sys.argv[1:])
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_went_away()
    return code
