"""``berth-runtime``: a runc-compatible command line over the runtime library.

Rules: argv is parsed by a small table-driven parser (argparse would cost milliseconds on every
container start): global flags before the verb, the verb's flags before its positionals,
``--flag value``, ``--flag=value`` and runc's single-dash long forms. Output formats are runc's
(``state`` as indented JSON, ``list`` as a tab-aligned table or JSON). Every error is one line
on stderr naming what is wrong (and an ``error`` entry in ``--log``), exit status 1.
"""

from __future__ import annotations

import os
import sys

from berth.errors import BerthError, InvalidArgument
from berth.runtime import log
from berth.runtime.store import DEFAULT_ROOT, Store
from berth.spec import jsonio
from berth.spec.value import field, replace, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


VERSION = "1.2.0"  # the OCI runtime spec version we implement

# flag name -> (aliases, takes a value)
FlagTable = dict[str, tuple[tuple[str, ...], bool]]

GLOBAL_FLAGS: FlagTable = {
    "root": ((), True),
    "log": ((), True),
    "log-format": ((), True),
    "debug": ((), False),
    "systemd-cgroup": ((), False),
    "rootless": ((), True),
    "criu": ((), True),
    "help": (("h",), False),
    "version": (("v",), False),
}
CREATE_FLAGS: FlagTable = {
    "bundle": (("b",), True),
    "pid-file": ((), True),
    "console-socket": ((), True),
    "no-pivot": ((), False),
    "no-new-keyring": ((), False),
    "preserve-fds": ((), True),
}
VERB_FLAGS: dict[str, FlagTable] = {
    "create": CREATE_FLAGS,
    "run": {**CREATE_FLAGS, "detach": (("d",), False), "keep": ((), False)},
    "start": {},
    "state": {},
    "kill": {"all": (("a",), False)},
    "delete": {"force": (("f",), False)},
    "list": {"format": (("f",), True), "quiet": (("q",), False)},
    "ps": {"format": (("f",), True)},
    "pause": {},
    "resume": {},
    "spec": {"bundle": (("b",), True), "rootless": ((), False)},
    "features": {},
    "events": {"stats": ((), False), "interval": ((), True)},
    "exec": {
        "process": (("p",), True),
        "detach": (("d",), False),
        "tty": (("t",), False),
        "console-socket": ((), True),
        "pid-file": ((), True),
        "cwd": ((), True),
        "env": (("e",), True),
        "user": (("u",), True),
        "additional-gids": (("g",), True),
        "cap": (("c",), True),
        "no-new-privs": ((), False),
        "preserve-fds": ((), True),
        "process-label": ((), True),
        "apparmor": ((), True),
    },
}
USAGE = """usage: berth-runtime [global options] COMMAND [options] [ID] [args]

An OCI runtime compatible with runc's command line.

commands:
  create ID     create a container (its process waits for start)
  start ID      start the user process of a created container
  run ID        create and start a container (-d to detach)
  state ID      print the container's state as JSON
  kill ID [SIG] send a signal (default SIGTERM) to the container's init
  delete ID     delete a stopped container (--force kills it first)
  exec ID CMD   run a process in the container (-p process.json)
  list          list containers (--format table|json, -q)
  ps ID         list the container's processes (--format table|json)
  pause ID      freeze every process of the container
  resume ID     thaw a paused container
  events ID     print resource usage (--stats once, else every --interval)
  spec          write a default config.json (--bundle, --rootless)
  features      print the features this runtime supports, as JSON

global options: --root DIR (default /run/berth-runtime), --log FILE,
  --log-format text|json, --debug
"""


HELP_FLAG: FlagTable = {"help": (("h",), False)}  # every verb's, as runc's


def verb_usage(verb: str) -> str:
    """``VERB --help``: the verb's line of USAGE and its flags, from the flag table."""
    summary = next(
        (line.strip() for line in USAGE.splitlines() if line.startswith(f"  {verb} ")), verb
    )
    lines = [f"usage: berth-runtime {summary}", "", "options:"]
    for name, (aliases, takes_value) in {**VERB_FLAGS[verb], **HELP_FLAG}.items():
        names = ", ".join([f"--{name}", *(f"-{a}" for a in aliases)])
        lines.append(f"  {names}{' VALUE' if takes_value else ''}")
    return "\n".join(lines) + "\n"


@value(frozen=False)
class Parsed:
    flags: dict[str, str | bool | list[str]] = field(default_factory=dict)
    positionals: list[str] = field(default_factory=list)

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.flags.get(name, default)
        if isinstance(value, list):
            return value[-1]
        return value if isinstance(value, str) else default

    def many(self, name: str) -> list[str]:
        value = self.flags.get(name)
        return value if isinstance(value, list) else []

    def on(self, name: str) -> bool:
        return self.flags.get(name) is True


REPEATABLE = {"env", "cap", "additional-gids"}


def parse_flags(argv: list[str], table: FlagTable, stop_at_positional: bool) -> tuple[Parsed, int]:
    """Parse flags from ``argv``; returns the result and the index where parsing stopped."""
    by_name = {}
    for name, (aliases, takes_value) in table.items():
        for alias in (name, *aliases):
            by_name[alias] = (name, takes_value)
    out = Parsed()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            if stop_at_positional:
                break
            out.positionals.append(arg)
            i += 1
            continue
        key, eq, inline = arg.lstrip("-").partition("=")
        if key not in by_name:
            raise InvalidArgument(f"flag provided but not defined: {arg.split('=')[0]}")
        name, takes_value = by_name[key]
        if takes_value:
            if eq:
                value = inline
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise InvalidArgument(f"flag needs an argument: {arg}")
            if name in REPEATABLE:
                existing = out.flags.setdefault(name, [])
                assert isinstance(existing, list)
                existing.append(value)
            else:
                out.flags[name] = value
        else:
            if eq and inline not in ("true", "false"):
                raise InvalidArgument(f"flag {arg}: expected true or false")
            out.flags[name] = not eq or inline == "true"
        i += 1
    return out, i


def _one_id(parsed: Parsed, verb: str) -> str:
    if not parsed.positionals:
        raise InvalidArgument(f'"{verb}" requires a container id')
    return parsed.positionals[0]


def _int_flag(parsed: Parsed, name: str) -> int:
    text = parsed.text(name, "0") or "0"
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"--{name}: {text!r} is not a number") from None


def _print_json(value: object, indent: int | None = 2) -> None:
    text = jsonio.dumps(value) if indent is None else jsonio.dumps_pretty(value, indent)
    sys.stdout.write(text + "\n")


def cmd_create(st: Store, p: Parsed, verb: str) -> int:
    from berth.runtime import container
    from berth.runtime.create import CreateOptions, create

    opts = CreateOptions(
        bundle=p.text("bundle", ".") or ".",
        pid_file=p.text("pid-file"),
        console_socket=p.text("console-socket"),
        no_pivot=p.on("no-pivot"),
        no_new_keyring=p.on("no-new-keyring"),
        preserve_fds=_int_flag(p, "preserve-fds"),
    )
    container_id = _one_id(p, verb)
    if verb == "create":
        create(st, container_id, opts)
        return 0
    return container.run(st, container_id, opts, detach=p.on("detach"))


def cmd_simple(st: Store, p: Parsed, verb: str) -> int:
    from berth.runtime import container

    container_id = _one_id(p, verb)
    actions: dict[str, Callable[[Store, str], object]] = {
        "start": container.start,
        "pause": container.pause,
        "resume": container.resume,
    }
    if verb == "state":
        _print_json(container.state(st, container_id).to_json())
    elif verb == "kill":
        sig = container.parse_signal(p.positionals[1] if len(p.positionals) > 1 else "SIGTERM")
        container.kill(st, container_id, sig, all_processes=p.on("all"))
    elif verb == "delete":
        container.delete(st, container_id, force=p.on("force"))
    else:
        actions[verb](st, container_id)
    return 0


def format_table(rows: list[list[str]], minwidth: int = 12, padding: int = 3) -> str:
    """Go's text/tabwriter as runc sets it up (minwidth 12, padding 3; last cell unpadded)."""
    widths = [0] * max(len(r) for r in rows)
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell) + padding, minwidth)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("".join(cells) + row[-1])
    return "\n".join(lines) + "\n"


def cmd_list(st: Store, p: Parsed, verb: str) -> int:
    from berth.runtime import container

    states = [replace(s, owner=s.owner or _owner(st, s.id)) for s in container.list_states(st)]
    if p.on("quiet"):
        sys.stdout.write("".join(f"{s.id}\n" for s in states))
        return 0
    fmt = p.text("format", "table")
    if fmt == "json":
        _print_json([s.to_json() for s in states] or None, indent=None)
        return 0
    if fmt != "table":
        raise InvalidArgument(f"--format: {fmt!r} must be table or json")
    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    rows += [[s.id, str(s.pid), str(s.status), s.bundle, s.created, s.owner] for s in states]
    sys.stdout.write(format_table(rows))
    return 0


def _owner(st: Store, container_id: str) -> str:
    """runc's list column: the name of the user owning the container's state directory
    (``#UID`` when the host has no such user)."""
    import pwd

    try:
        uid = os.stat(st.dir(container_id)).st_uid
    except OSError:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def cmd_ps(st: Store, p: Parsed, verb: str) -> int:
    from berth.runtime import container

    pids = container.pids(st, _one_id(p, verb))
    fmt = p.text("format", "table")
    if fmt == "json":
        _print_json(pids, indent=None)
        return 0
    import subprocess

    ps_args = p.positionals[1:] or ["-ef"]
    out = subprocess.run(["ps", *ps_args], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    header = lines[0].split()
    column = header.index("PID")
    wanted = {str(pid) for pid in pids}
    sys.stdout.write(lines[0] + "\n")
    for line in lines[1:]:
        fields = line.split()
        if len(fields) > column and fields[column] in wanted:
            sys.stdout.write(line + "\n")
    return 0


def cmd_exec(st: Store, p: Parsed, verb: str) -> int:
    from berth.runtime.execute import ExecOptions, exec_in

    container_id = _one_id(p, verb)
    gids = []
    for text in ",".join(p.many("additional-gids")).split(","):
        if text:
            try:
                gids.append(int(text))
            except ValueError:
                raise InvalidArgument(f"--additional-gids: {text!r} is not a number") from None
    opts = ExecOptions(
        process_file=p.text("process"),
        args=tuple(p.positionals[1:]),
        env=tuple(p.many("env")),
        cwd=p.text("cwd"),
        user=p.text("user"),
        additional_gids=tuple(gids),
        tty=p.on("tty"),
        caps=tuple(p.many("cap")),
        no_new_privs=p.on("no-new-privs"),
        detach=p.on("detach"),
        pid_file=p.text("pid-file"),
        console_socket=p.text("console-socket"),
        preserve_fds=_int_flag(p, "preserve-fds"),
    )
    return exec_in(st, container_id, opts)


def cmd_spec(st: Store, p: Parsed, verb: str) -> int:
    from berth.runtime.store import write_atomically
    from berth.spec.defaults import default_spec

    bundle = p.text("bundle", ".") or "."
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise InvalidArgument(f"File {path} exists. Remove it first")
    data = jsonio.dumps_pretty(default_spec(rootless=p.on("rootless")), indent="\t")
    write_atomically(path, data.encode(), 0o666 & ~_umask())
    return 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cmd_features(st: Store, p: Parsed, verb: str) -> int:
    from berth.spec.defaults import features

    _print_json(features(), indent=4)
    return 0


def cmd_events(st: Store, p: Parsed, verb: str) -> int:
    import time

    from berth.runtime import container

    container_id = _one_id(p, verb)
    interval = _duration(p.text("interval", "5s") or "5s")
    while True:
        stats = container.stats(st, container_id)
        _print_json({"type": "stats", "id": container_id, "data": stats_json(stats)}, indent=None)
        sys.stdout.flush()
        if p.on("stats"):
            return 0
        time.sleep(interval)


def stats_json(stats: object) -> dict[str, object]:
    """runc's stats shape, reduced to what cgroups report, plus ``oomKills``."""
    g = stats.__getattribute__
    return {
        "cpu": {
            "usage": {
                "total": g("cpu_usage_ns"),
                "user": g("cpu_user_ns"),
                "kernel": g("cpu_system_ns"),
            }
        },
        "memory": {
            "usage": {
                "usage": g("memory_usage"),
                "max": g("memory_max_usage"),
                "limit": g("memory_limit"),
            },
            "oomKills": g("oom_kills"),
        },
        "pids": {"current": g("pids_current"), "limit": g("pids_limit")},
    }


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for unit in ("ms", "s", "m"):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * units[unit]
            except ValueError:
                break
    raise InvalidArgument(f"--interval: {text!r} is not a duration like 5s or 500ms")


COMMANDS: dict[str, Callable[[Store, Parsed, str], int]] = {
    "create": cmd_create,
    "run": cmd_create,
    "start": cmd_simple,
    "state": cmd_simple,
    "kill": cmd_simple,
    "delete": cmd_simple,
    "pause": cmd_simple,
    "resume": cmd_simple,
    "list": cmd_list,
    "ps": cmd_ps,
    "exec": cmd_exec,
    "spec": cmd_spec,
    "features": cmd_features,
    "events": cmd_events,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        glob, i = parse_flags(args, GLOBAL_FLAGS, stop_at_positional=True)
        log.configure(glob.text("log"), glob.text("log-format", "text") or "text", glob.on("debug"))
        if glob.on("version"):
            sys.stdout.write(f"berth-runtime version 0.1.0\nspec: {VERSION}\n")
            return 0
        if glob.on("help") or i >= len(args):
            sys.stdout.write(USAGE)
            return 0 if glob.on("help") else 1
        verb = args[i]
        if verb not in COMMANDS:
            raise InvalidArgument(f"unknown command {verb!r}: see berth-runtime --help")
        # exec passes everything after the id to the process untouched
        # exec and ps pass everything after the id on untouched (to the process, to ps)
        passthrough = verb in ("exec", "ps")
        table = {**VERB_FLAGS[verb], **HELP_FLAG}
        parsed, j = parse_flags(args[i + 1 :], table, stop_at_positional=passthrough)
        if parsed.on("help"):
            sys.stdout.write(verb_usage(verb))
            return 0
        if passthrough:
            rest = args[i + 1 + j :]
            parsed.positionals = rest[:1] + rest[2:] if rest[1:2] == ["--"] else rest
        st = Store(glob.text("root", DEFAULT_ROOT) or DEFAULT_ROOT)
        return COMMANDS[verb](st, parsed, verb)
    except BerthError as exc:
        log.error(exc.message)
        sys.stderr.write(f"berth-runtime: {exc.message}\n")
        return 1
    except OSError as exc:
        log.error(str(exc))
        sys.stderr.write(f"berth-runtime: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def exit_main() -> None:
    """main() for the installed command: exit without the interpreter's teardown (~1 ms of
    freeing modules a process about to end does not need), after flushing what we wrote."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
