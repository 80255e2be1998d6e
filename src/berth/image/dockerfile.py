"""Containerfile/Dockerfile parsing with the semantics of BuildKit's dockerfile frontend.

Sans-IO: ``parse(text) -> Dockerfile``, text in, typed instructions out (the ``@value``
classes of ``dockerfile_instructions``, re-exported here with the words' helpers).
Rules:

- Lines: parser directives (``# syntax=``, ``# escape=``, ``# check=``) only before any other
  line, each at most once; a comment, blank line or instruction ends them. Comments are whole
  lines starting with ``#``; an instruction continues while its line ends with the escape
  character (trailing blanks allowed); inside a continuation, comment lines are skipped and
  blank lines are skipped with a warning; continuation lines keep their leading whitespace.
  RUN, COPY and ADD take heredocs (``<<EOF``, ``<<-EOF`` strips leading tabs, a quoted
  delimiter marks the body as not to be expanded).
- Instructions keep their words as written (quotes, escapes, ``$VARS``); the builder calls
  ``expand`` (BuildKit's ProcessWord) on the words of ``EXPANDING`` instructions with the
  stage's ARG/ENV scope. RUN, CMD and ENTRYPOINT are never expanded (the shell does it). Only
  FROM is resolved here: its image against the global ARGs (and ``build_args``), giving
  ``Stage.base`` and, when it names an earlier stage, ``Stage.base_stage``.
- Malformed exec-form JSON runs as shell form, as in BuildKit, with a warning; an array of
  non-strings is an error. ``Dockerfile.warnings`` carries BuildKit's lint rule names.
- Errors are ``DockerfileError`` (an ``InvalidArgument``) whose message starts with
  ``Dockerfile:<line>:``; errors in one instruction also say ``dockerfile parse error on line
  N`` as BuildKit does.
"""

from __future__ import annotations

import csv
import re

from berth.errors import InvalidArgument
from berth.image.dockerfile_instructions import (
    EXPANDING,
    Add,
    Arg,
    ArgDef,
    Cmd,
    Command,
    Copy,
    Dockerfile,
    Entrypoint,
    Env,
    Expose,
    From,
    Healthcheck,
    Instruction,
    KeyValue,
    Label,
    Maintainer,
    Mount,
    Onbuild,
    Run,
    Shell,
    Stage,
    StopSignal,
    User,
    Volume,
    Workdir,
)
from berth.image.dockerfile_words import (
    WHITESPACE,
    DockerfileError,
    Heredoc,
    LintWarning,
    Source,
    expand,
    extract_flags,
    parse_duration,
    parse_flags,
    parse_json_array,
    split_first,
    split_raw_words,
)
from berth.image.dockerfile_words import Line as _Line
from berth.image.dockerfile_words import Reader as _Reader

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    _Flags = dict[str, str | bool | list[str]]
    _Parser = tuple[Callable[["_Line", _Flags, list["LintWarning"]], "Instruction"], dict[str, str]]

__all__ = [
    "EXPANDING",
    "Add",
    "Arg",
    "ArgDef",
    "Cmd",
    "Command",
    "Copy",
    "Dockerfile",
    "DockerfileError",
    "Entrypoint",
    "Env",
    "Expose",
    "From",
    "Healthcheck",
    "Heredoc",
    "Instruction",
    "KeyValue",
    "Label",
    "LintWarning",
    "Maintainer",
    "Mount",
    "Onbuild",
    "Run",
    "Shell",
    "Source",
    "Stage",
    "StopSignal",
    "User",
    "Volume",
    "Workdir",
    "expand",
    "parse",
]

MOUNT_TYPES = frozenset(["bind", "cache", "tmpfs", "secret", "ssh"])
NETWORK_MODES = frozenset(["default", "none", "host"])
SECURITY_MODES = frozenset(["sandbox", "insecure"])
_STAGE_NAME = re.compile(r"[a-z][a-z0-9\-_.]*")


# --- instructions ----------------------------------------------------------------------------


def _words(line: _Line) -> list[str]:
    return [w for w in re.split(r"[ \t\r\n\f\v]+", line.rest) if w]


def _flag_str(flags: dict[str, str | bool | list[str]], name: str) -> str:
    found = flags.get(name, "")
    assert isinstance(found, str)
    return found


def _flag_list(flags: dict[str, str | bool | list[str]], name: str) -> tuple[str, ...]:
    found = flags.get(name, [])
    assert isinstance(found, list)
    return tuple(found)


def _command(line: _Line, warnings: list[LintWarning], *, required: bool = True) -> Command:
    name = line.word.upper()
    args = parse_json_array(line.rest)
    if args is not None:
        return Command(tuple(args), exec_form=True)
    if required and not line.rest:
        raise InvalidArgument(f"{name} requires at least one argument")
    if line.rest.startswith("["):
        warnings.append(
            LintWarning(
                line.source.line,
                "JSONArgsRecommended",
                f"{name} looks like an exec form but is not valid JSON; it runs as a shell command",
            )
        )
    return Command((line.rest,), exec_form=False)


def _one_argument(line: _Line) -> str:
    if not line.rest:
        raise InvalidArgument(f"{line.word.upper()} requires exactly one argument")
    return line.rest


def _name_values(line: _Line, *, legacy: bool) -> tuple[KeyValue, ...]:
    name = line.word.upper()
    words = split_raw_words(line.rest, line.escape)
    if not words:
        raise InvalidArgument(f"{name} requires at least one argument")
    if legacy and "=" not in words[0]:
        key, _, rest = split_first(line.rest)
        if not rest:
            raise InvalidArgument(f"{name} must have two arguments")
        return (KeyValue(key, rest),)
    pairs = []
    for word in words:
        key, eq, val = word.partition("=")
        if not eq:
            raise InvalidArgument(
                f"Syntax error - can't find = in {word!r}. Must be of the form: name=value"
            )
        if not key:
            raise InvalidArgument(f"{name} names can not be blank")
        pairs.append(KeyValue(key, val))
    return tuple(pairs)


def _mount(spec: str) -> Mount:
    fields = next(csv.reader([spec]), [])
    mount_type = "bind"
    options: list[tuple[str, str]] = []
    for item in fields:
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if key == "type":
            mount_type = val.strip().lower()
            if mount_type not in MOUNT_TYPES:
                raise InvalidArgument(f"unsupported mount type {val!r}")
        elif key:
            options.append((key, val if eq else "true"))
    return Mount(mount_type, tuple(options))


def _from(line: _Line, flags: _Flags, _warnings: list[LintWarning]) -> From:
    words = _words(line)
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise InvalidArgument("FROM requires either one or three arguments")
    name = words[2].lower() if len(words) == 3 else ""
    if name and not _STAGE_NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid name for build stage: {words[2]!r}, name can't start with a number or"
            " contain symbols"
        )
    if name and name != words[2]:
        _warnings.append(
            LintWarning(
                line.source.line, "StageNameCasing", f"Stage name {words[2]!r} should be lowercase"
            )
        )
    return From(line.source, words[0], name, _flag_str(flags, "platform"))


def _run(line: _Line, flags: _Flags, warnings: list[LintWarning]) -> Run:
    network = _flag_str(flags, "network")
    if network and network not in NETWORK_MODES:
        raise InvalidArgument(f"unsupported network mode {network!r}")
    security = _flag_str(flags, "security")
    if security and security not in SECURITY_MODES:
        raise InvalidArgument(f"unsupported security mode {security!r}")
    mounts = tuple(_mount(spec) for spec in _flag_list(flags, "mount"))
    command = _command(line, warnings)
    return Run(line.source, command, mounts, network, security, line.heredocs)


def _cmd(line: _Line, _flags: _Flags, warnings: list[LintWarning]) -> Cmd:
    return Cmd(line.source, _command(line, warnings))


def _entrypoint(line: _Line, _flags: _Flags, warnings: list[LintWarning]) -> Entrypoint:
    return Entrypoint(line.source, _command(line, warnings))


def _paths(line: _Line) -> tuple[list[str], str]:
    name = line.word.upper()
    args = parse_json_array(line.rest)
    words = args if args is not None else split_raw_words(line.rest, line.escape)
    if len(words) < 2:
        raise InvalidArgument(
            f"{name} requires at least two arguments, but only one was provided. Destination"
            " could not be determined."
        )
    return words[:-1], words[-1]


def _copy(line: _Line, flags: _Flags, _warnings: list[LintWarning]) -> Copy:
    sources, dest = _paths(line)
    return Copy(
        line.source,
        tuple(sources),
        dest,
        copy_from=_flag_str(flags, "from"),
        chown=_flag_str(flags, "chown"),
        chmod=_flag_str(flags, "chmod"),
        link=flags.get("link") is True,
        parents=flags.get("parents") is True,
        exclude=_flag_list(flags, "exclude"),
        heredocs=line.heredocs,
    )


def _add(line: _Line, flags: _Flags, _warnings: list[LintWarning]) -> Add:
    sources, dest = _paths(line)
    unpack = flags.get("unpack")
    return Add(
        line.source,
        tuple(sources),
        dest,
        chown=_flag_str(flags, "chown"),
        chmod=_flag_str(flags, "chmod"),
        link=flags.get("link") is True,
        keep_git_dir=flags.get("keep-git-dir") is True,
        checksum=_flag_str(flags, "checksum"),
        unpack=unpack if isinstance(unpack, bool) else None,
        exclude=_flag_list(flags, "exclude"),
        heredocs=line.heredocs,
    )


def _env(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Env:
    return Env(line.source, _name_values(line, legacy=True))


def _label(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Label:
    return Label(line.source, _name_values(line, legacy=True))


def _arg(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Arg:
    words = split_raw_words(line.rest, line.escape)
    if not words:
        raise InvalidArgument("ARG requires at least one argument")
    args = []
    for word in words:
        name, eq, default = word.partition("=")
        if not name:
            raise InvalidArgument("ARG names can not be blank")
        args.append(ArgDef(name, default if eq else None))
    return Arg(line.source, tuple(args))


def _workdir(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Workdir:
    return Workdir(line.source, _one_argument(line))


def _user(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> User:
    return User(line.source, _one_argument(line))


def _stopsignal(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> StopSignal:
    return StopSignal(line.source, _one_argument(line))


def _maintainer(line: _Line, _flags: _Flags, warnings: list[LintWarning]) -> Maintainer:
    warnings.append(
        LintWarning(
            line.source.line,
            "MaintainerDeprecated",
            "The MAINTAINER instruction is deprecated, use a label instead",
        )
    )
    return Maintainer(line.source, _one_argument(line))


def _expose(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Expose:
    ports = _words(line)
    if not ports:
        raise InvalidArgument("EXPOSE requires at least one argument")
    return Expose(line.source, tuple(ports))


def _volume(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Volume:
    args = parse_json_array(line.rest)
    paths = args if args is not None else _words(line)
    if not paths:
        raise InvalidArgument("VOLUME requires at least one argument")
    if any(not path.strip(WHITESPACE) for path in paths):
        raise InvalidArgument("VOLUME specified can not be an empty string")
    return Volume(line.source, tuple(paths))


def _shell(line: _Line, _flags: _Flags, _warnings: list[LintWarning]) -> Shell:
    args = parse_json_array(line.rest)
    if args is None:
        raise InvalidArgument("SHELL requires the arguments to be in JSON form")
    if not args:
        raise InvalidArgument("SHELL requires at least one argument")
    return Shell(line.source, tuple(args))


def _duration(flags: _Flags, name: str) -> int:
    text = _flag_str(flags, name)
    if not text:
        return 0
    nanoseconds = parse_duration(text)
    if nanoseconds < 0:
        raise InvalidArgument(f"--{name} cannot be negative ({text})")
    if 0 < nanoseconds < 1_000_000:
        raise InvalidArgument(f"--{name} cannot be less than 1ms ({text})")
    return nanoseconds


def _healthcheck(line: _Line, flags: _Flags, warnings: list[LintWarning]) -> Healthcheck:
    kind, _, rest = split_first(line.rest)
    if not kind:
        raise InvalidArgument("HEALTHCHECK requires at least one argument")
    if kind.upper() == "NONE":
        if rest or flags:
            raise InvalidArgument("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(line.source, ("NONE",))
    if kind.upper() != "CMD":
        raise InvalidArgument(f"Unknown type {kind.upper()!r} in HEALTHCHECK (try CMD)")
    command_line = _Line(line.source, "HEALTHCHECK", [], rest, line.escape)
    command = _command(command_line, warnings, required=False)
    if not command.args or command.args == ("",):
        raise InvalidArgument("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *command.args) if command.exec_form else ("CMD-SHELL", command.shell)
    retries_text = _flag_str(flags, "retries") or "0"
    try:
        retries = int(retries_text)
    except ValueError:
        raise InvalidArgument(f"invalid --retries value {retries_text!r}") from None
    if retries < 0:
        raise InvalidArgument(f"--retries cannot be negative ({retries})")
    return Healthcheck(
        line.source,
        test,
        interval=_duration(flags, "interval"),
        timeout=_duration(flags, "timeout"),
        start_period=_duration(flags, "start-period"),
        start_interval=_duration(flags, "start-interval"),
        retries=retries,
    )


def _onbuild(line: _Line, _flags: _Flags, warnings: list[LintWarning]) -> Onbuild:
    if not line.rest:
        raise InvalidArgument("ONBUILD requires at least one argument")
    word, _, args = split_first(line.rest)
    trigger = word.upper()
    if trigger == "ONBUILD":
        raise InvalidArgument("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("FROM", "MAINTAINER"):
        raise InvalidArgument(f"{trigger} isn't allowed as an ONBUILD trigger")
    inner_flags, rest = extract_flags(args)
    inner = _Line(line.source, word, inner_flags, rest, line.escape)
    return Onbuild(line.source, line.rest, _instruction(inner, warnings))


_HEALTH_FLAGS = {"interval", "timeout", "start-period", "start-interval", "retries"}

# instruction -> (parser, its flags and their kinds)
_INSTRUCTIONS: dict[str, _Parser] = {
    "from": (_from, {"platform": "str"}),
    "run": (_run, {"mount": "list", "network": "str", "security": "str", "device": "list"}),
    "cmd": (_cmd, {}),
    "entrypoint": (_entrypoint, {}),
    "copy": (
        _copy,
        {"from": "str", "chown": "str", "chmod": "str", "link": "bool", "parents": "bool"}
        | {"exclude": "list"},
    ),
    "add": (
        _add,
        {"chown": "str", "chmod": "str", "link": "bool", "keep-git-dir": "bool"}
        | {"checksum": "str", "unpack": "bool", "exclude": "list"},
    ),
    "env": (_env, {}),
    "arg": (_arg, {}),
    "label": (_label, {}),
    "workdir": (_workdir, {}),
    "user": (_user, {}),
    "expose": (_expose, {}),
    "volume": (_volume, {}),
    "stopsignal": (_stopsignal, {}),
    "healthcheck": (_healthcheck, dict.fromkeys(_HEALTH_FLAGS, "str")),
    "shell": (_shell, {}),
    "maintainer": (_maintainer, {}),
    "onbuild": (_onbuild, {}),
}


def _instruction(line: _Line, warnings: list[LintWarning]) -> Instruction:
    entry = _INSTRUCTIONS.get(line.word.lower())
    if entry is None:
        hint = _did_you_mean(line.word)
        raise InvalidArgument(f"unknown instruction: {line.word.upper()}{hint}")
    parser, kinds = entry
    return parser(line, parse_flags(line.flags, kinds), warnings)


def _did_you_mean(word: str) -> str:
    import difflib  # only on this error path

    close = difflib.get_close_matches(word.lower(), list(_INSTRUCTIONS), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# --- stages ----------------------------------------------------------------------------------


def parse(
    text: str, *, build_args: Mapping[str, str] | None = None, filename: str = "Dockerfile"
) -> Dockerfile:
    """Parse a Dockerfile; ``build_args`` override global ARG defaults when resolving FROM."""
    reader = _Reader(text, filename)
    warnings = reader.warnings
    global_args: list[Arg] = []
    stages: list[tuple[From, list[Instruction]]] = []
    while (line := reader.next_line()) is not None:
        try:
            instruction = _instruction(line, warnings)
        except InvalidArgument as err:
            number = line.source.line
            raise reader.error(
                number, f"{err.message} (dockerfile parse error on line {number})"
            ) from None
        if isinstance(instruction, From):
            stages.append((instruction, []))
        elif stages:
            stages[-1][1].append(instruction)
        elif isinstance(instruction, Arg):
            global_args.append(instruction)
        else:
            raise reader.error(line.source.line, "no build stage in current context")
    if not stages:
        raise reader.error(max(len(reader.lines), 1), "dockerfile contains no stages to build")
    return Dockerfile(
        tuple(global_args),
        _stages(reader, stages, _meta_args(global_args, build_args or {}, reader)),
        reader.escape,
        reader.syntax,
        tuple(sorted(warnings, key=lambda w: w.line)),
    )


def _meta_args(args: list[Arg], build_args: Mapping[str, str], reader: _Reader) -> dict[str, str]:
    env: dict[str, str] = {}
    for arg in args:
        for definition in arg.args:
            try:
                if definition.name in build_args:
                    env[definition.name] = build_args[definition.name]
                elif definition.default is not None:
                    env[definition.name] = expand(definition.default, env, escape=reader.escape)
            except InvalidArgument as err:
                raise reader.error(arg.source.line, err.message) from None
    return env


def _stages(
    reader: _Reader, parsed: list[tuple[From, list[Instruction]]], meta: dict[str, str]
) -> tuple[Stage, ...]:
    stages: list[Stage] = []
    names: dict[str, int] = {}
    for index, (origin, instructions) in enumerate(parsed):
        line = origin.source.line
        if origin.name in names:
            raise reader.error(line, f"duplicate stage name {origin.name!r}")
        try:
            base = expand(origin.image, meta, escape=reader.escape)
        except InvalidArgument as err:
            raise reader.error(line, err.message) from None
        if not base:
            raise reader.error(line, f"base name ({origin.image}) should not be blank")
        stage = Stage(
            index, origin.name, base, names.get(base.lower()), origin, tuple(instructions)
        )
        stages.append(stage)
        if origin.name:
            names[origin.name] = index
    for stage in stages:
        for instruction in stage.instructions:
            if isinstance(instruction, Copy) and instruction.copy_from:
                _check_copy_from(reader, stage, instruction)
    return tuple(stages)


def _check_copy_from(reader: _Reader, stage: Stage, copy: Copy) -> None:
    ref = copy.copy_from.lower()
    line = copy.source.line
    if ref.isdigit():
        if int(ref) >= stage.index:
            raise reader.error(
                line,
                f"invalid from flag value {copy.copy_from}: no build stage {ref} before this"
                f" one (stage {stage.index})",
            )
    elif ref == stage.name:
        raise reader.error(line, f"circular dependency detected on stage: {stage.name}")
    # any other name is a later stage or an image: BuildKit resolves both
