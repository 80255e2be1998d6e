"""The typed instructions a Dockerfile parses into (``dockerfile.parse`` makes them; the
builder reads them). ``dockerfile`` re-exports every name here: import them from there.

Rules:
- Frozen ``@value`` classes, no parsing and no I/O here. Each instruction keeps its ``Source``
  (file and line, for errors) and its words as written: quotes, escapes and ``$VARS`` stay
  until the builder expands the words of ``EXPANDING`` instructions with the stage's ARG/ENV
  scope; RUN, CMD, ENTRYPOINT and HEALTHCHECK commands never are (the shell does it).
- A ``Command`` is exec form (the JSON array's words) or shell form (one string, ``shell``).
- COPY and ADD sources that are heredoc markers (``<<EOF``) name one of the instruction's
  ``heredocs`` (``heredoc_for``); any other source names a file.
- ``Healthcheck`` holds ``test`` as an image config spells it and durations in nanoseconds,
  0 meaning "not set"; ``config()`` is the image config's value.
- A ``Stage``'s ``base`` is its FROM image after global-ARG expansion and ``base_stage`` the
  index of the earlier stage it names, if any. ``Dockerfile.stage`` finds a target by name or
  index (the last stage for ""), ``InvalidArgument`` when there is none.
"""

from __future__ import annotations

from berth.errors import InvalidArgument
from berth.image.dockerfile_words import HEREDOC, Heredoc, LintWarning, Source, unquote
from berth.spec import image as spec_image
from berth.spec.value import value

# Instructions whose words the builder expands (BuildKit's SupportsSingleWordExpansion, plus
# ARG defaults); ONBUILD triggers are expanded when they fire, not where they are written.
EXPANDING = frozenset(
    [
        "ADD",
        "ARG",
        "COPY",
        "ENV",
        "EXPOSE",
        "FROM",
        "LABEL",
        "STOPSIGNAL",
        "USER",
        "VOLUME",
        "WORKDIR",
    ]
)


@value
class Command:
    """RUN/CMD/ENTRYPOINT/HEALTHCHECK's command: exec form (JSON) or one shell-form string."""

    args: tuple[str, ...]
    exec_form: bool

    @property
    def shell(self) -> str:
        return "" if self.exec_form else self.args[0]


@value
class Mount:
    """A ``RUN --mount``: its type and its other options as written (values not expanded)."""

    type: str
    options: tuple[tuple[str, str], ...] = ()

    def get(self, key: str, default: str = "") -> str:
        for name, option in self.options:
            if name == key:
                return option
        return default


@value
class KeyValue:
    key: str
    value: str


@value
class ArgDef:
    name: str
    default: str | None = None


@value
class From:
    source: Source
    image: str
    name: str = ""
    platform: str = ""


@value
class Run:
    source: Source
    command: Command
    mounts: tuple[Mount, ...] = ()
    network: str = ""
    security: str = ""
    heredocs: tuple[Heredoc, ...] = ()


@value
class Cmd:
    source: Source
    command: Command


@value
class Entrypoint:
    source: Source
    command: Command


@value
class Copy:
    """COPY; a source ``<<EOF`` names the heredoc of that name (``heredoc_for``)."""

    source: Source
    sources: tuple[str, ...]
    dest: str
    copy_from: str = ""
    chown: str = ""
    chmod: str = ""
    link: bool = False
    parents: bool = False
    exclude: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()

    def heredoc_for(self, src: str) -> Heredoc | None:
        return _heredoc_for(self.heredocs, src)


@value
class Add:
    source: Source
    sources: tuple[str, ...]
    dest: str
    chown: str = ""
    chmod: str = ""
    link: bool = False
    keep_git_dir: bool = False
    checksum: str = ""
    unpack: bool | None = None
    exclude: tuple[str, ...] = ()
    heredocs: tuple[Heredoc, ...] = ()

    def heredoc_for(self, src: str) -> Heredoc | None:
        return _heredoc_for(self.heredocs, src)


@value
class Env:
    source: Source
    pairs: tuple[KeyValue, ...]


@value
class Arg:
    source: Source
    args: tuple[ArgDef, ...]


@value
class Label:
    source: Source
    pairs: tuple[KeyValue, ...]


@value
class Workdir:
    source: Source
    path: str


@value
class User:
    source: Source
    user: str


@value
class Expose:
    source: Source
    ports: tuple[str, ...]


@value
class Volume:
    source: Source
    paths: tuple[str, ...]


@value
class StopSignal:
    source: Source
    signal: str


@value
class Healthcheck:
    """``test`` as the image config spells it: ("NONE",), ("CMD", ...) or ("CMD-SHELL", s).

    Durations are nanoseconds, 0 meaning "not set" (inherit the default).
    """

    source: Source
    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def config(self) -> spec_image.Healthcheck:
        """As an image config holds it (the builder's and ``docker commit --change``'s)."""
        return spec_image.Healthcheck(
            test=self.test,
            interval=self.interval,
            timeout=self.timeout,
            start_period=self.start_period,
            start_interval=self.start_interval,
            retries=self.retries,
        )


@value
class Shell:
    source: Source
    shell: tuple[str, ...]


@value
class Maintainer:
    source: Source
    name: str


@value
class Onbuild:
    """ONBUILD: the trigger as written (stored in the image) and its parsed instruction."""

    source: Source
    trigger: str
    instruction: Instruction


Instruction = (
    From
    | Run
    | Cmd
    | Entrypoint
    | Copy
    | Add
    | Env
    | Arg
    | Label
    | Workdir
    | User
    | Expose
    | Volume
    | StopSignal
    | Healthcheck
    | Shell
    | Maintainer
    | Onbuild
)


@value
class Stage:
    """One build stage: ``base`` is the FROM image after global-ARG expansion."""

    index: int
    name: str
    base: str
    base_stage: int | None
    from_instruction: From
    instructions: tuple[Instruction, ...]

    @property
    def platform(self) -> str:
        return self.from_instruction.platform


@value
class Dockerfile:
    args: tuple[Arg, ...]  # the global ARGs, before the first FROM
    stages: tuple[Stage, ...]
    escape: str = "\\"
    syntax: str = ""
    warnings: tuple[LintWarning, ...] = ()

    def stage(self, target: str = "") -> Stage:
        """The stage named ``target`` (or its index); the last stage when ``target`` is ""."""
        if not target:
            return self.stages[-1]
        for stage in self.stages:
            if stage.name == target.lower() or str(stage.index) == target:
                return stage
        raise InvalidArgument(f"target stage {target!r} could not be found")


def _heredoc_for(heredocs: tuple[Heredoc, ...], src: str) -> Heredoc | None:
    match = HEREDOC.fullmatch(src)
    if match is None:
        return None
    name = unquote(match.group(3))
    return next((doc for doc in heredocs if doc.name == name), None)
