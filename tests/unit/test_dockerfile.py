"""berth.image.dockerfile: BuildKit's Dockerfile grammar and its shell lexer, as tables.

Rules: the cases follow the behaviour of BuildKit's dockerfile frontend (parser, instructions
and shell/lex.go tests), rewritten as our own tables; every error names its line.
"""

from __future__ import annotations

import pytest

from berth.errors import InvalidArgument
from berth.image import dockerfile as df
from berth.image.dockerfile import (
    Add,
    Arg,
    ArgDef,
    Cmd,
    Command,
    Copy,
    DockerfileError,
    Entrypoint,
    Env,
    Expose,
    Healthcheck,
    KeyValue,
    Label,
    Maintainer,
    Onbuild,
    Run,
    Shell,
    StopSignal,
    User,
    Volume,
    Workdir,
    expand,
    parse,
)
from berth.image.dockerfile_words import parse_duration


def only(text: str) -> object:
    """The single instruction after ``FROM scratch``."""
    (instruction,) = parse("FROM scratch\n" + text).stages[0].instructions
    return instruction


def fields(instruction: object) -> dict[str, object]:
    names = type(instruction).__value_fields__  # type: ignore[attr-defined]
    return {n: getattr(instruction, n) for n in names if n != "source"}


# text after FROM -> (class, fields other than source, subset)
INSTRUCTIONS: list[tuple[str, type, dict[str, object]]] = [
    ("RUN echo hi", Run, {"command": Command(("echo hi",), False)}),
    ('RUN ["echo", "hi"]', Run, {"command": Command(("echo", "hi"), True)}),
    ("run echo  'a b'", Run, {"command": Command(("echo  'a b'",), False)}),
    ("RUN []", Run, {"command": Command((), True)}),
    ('RUN ["echo", "hi"', Run, {"command": Command(('["echo", "hi"',), False)}),
    (
        "RUN echo $HOME # not a comment",
        Run,
        {"command": Command(("echo $HOME # not a comment",), False)},
    ),
    ("RUN --network=none true", Run, {"network": "none"}),
    ("RUN --network=host true", Run, {"network": "host"}),
    ("RUN --security=insecure true", Run, {"security": "insecure"}),
    (
        "RUN --mount=type=cache,target=/root/.cache,id=pip pip install x",
        Run,
        {
            "mounts": (df.Mount("cache", (("target", "/root/.cache"), ("id", "pip"))),),
            "command": Command(("pip install x",), False),
        },
    ),
    (
        "RUN --mount=target=/src,ro true",
        Run,
        {"mounts": (df.Mount("bind", (("target", "/src"), ("ro", "true"))),)},
    ),
    (
        "RUN --mount=type=secret,id=a --mount=type=ssh true",
        Run,
        {"mounts": (df.Mount("secret", (("id", "a"),)), df.Mount("ssh", ()))},
    ),
    ("RUN -- --network=none", Run, {"command": Command(("--network=none",), False)}),
    ("CMD echo hi", Cmd, {"command": Command(("echo hi",), False)}),
    ('CMD ["/bin/app", "--flag"]', Cmd, {"command": Command(("/bin/app", "--flag"), True)}),
    ("CMD []", Cmd, {"command": Command((), True)}),
    ("ENTRYPOINT exec app", Entrypoint, {"command": Command(("exec app",), False)}),
    ('ENTRYPOINT ["app"]', Entrypoint, {"command": Command(("app",), True)}),
    ("COPY a /b", Copy, {"sources": ("a",), "dest": "/b"}),
    ("COPY a b c /d/", Copy, {"sources": ("a", "b", "c"), "dest": "/d/"}),
    ('COPY ["a b", "/d e/"]', Copy, {"sources": ("a b",), "dest": "/d e/"}),
    ('COPY "a b" /d', Copy, {"sources": ('"a b"',), "dest": "/d"}),
    ("COPY --chown=1000:1000 a /b", Copy, {"chown": "1000:1000"}),
    ('COPY --chown="app user" a /b', Copy, {"chown": "app user"}),
    ("COPY --chmod=0755 a /b", Copy, {"chmod": "0755"}),
    ("COPY --link a /b", Copy, {"link": True}),
    ("COPY --link=false a /b", Copy, {"link": False}),
    ("COPY --parents a/b /c", Copy, {"parents": True}),
    ("COPY --exclude=*.md --exclude=x . /c", Copy, {"exclude": ("*.md", "x")}),
    ("COPY --from=busybox:1.36 /bin/sh /sh", Copy, {"copy_from": "busybox:1.36"}),
    ("COPY $SRC ${DST}", Copy, {"sources": ("$SRC",), "dest": "${DST}"}),
    ("ADD a /b", Add, {"sources": ("a",), "dest": "/b"}),
    (
        "ADD --chown=1 --chmod=644 --link a.tar /b",
        Add,
        {"chown": "1", "chmod": "644", "link": True},
    ),
    ('ADD ["x.tar", "/"]', Add, {"sources": ("x.tar",), "dest": "/"}),
    ("ADD --keep-git-dir=true g /b", Add, {"keep_git_dir": True}),
    ("ADD --checksum=sha256:ab u /b", Add, {"checksum": "sha256:ab"}),
    ("ADD --unpack=false a.tar /b", Add, {"unpack": False}),
    ("ENV A=1", Env, {"pairs": (KeyValue("A", "1"),)}),
    (
        "ENV A=1 B=\"v 2\" C='x'",
        Env,
        {"pairs": (KeyValue("A", "1"), KeyValue("B", '"v 2"'), KeyValue("C", "'x'"))},
    ),
    ("ENV A=a\\ b", Env, {"pairs": (KeyValue("A", "a\\ b"),)}),
    ("ENV A=", Env, {"pairs": (KeyValue("A", ""),)}),
    ("ENV PATH=/x:$PATH", Env, {"pairs": (KeyValue("PATH", "/x:$PATH"),)}),
    ("ENV A b c  d", Env, {"pairs": (KeyValue("A", "b c  d"),)}),
    ("ENV A=b=c", Env, {"pairs": (KeyValue("A", "b=c"),)}),
    ("ARG A", Arg, {"args": (ArgDef("A"),)}),
    ("ARG A=1", Arg, {"args": (ArgDef("A", "1"),)}),
    ("ARG A= B=2 C", Arg, {"args": (ArgDef("A", ""), ArgDef("B", "2"), ArgDef("C"))}),
    ('ARG A="x y"', Arg, {"args": (ArgDef("A", '"x y"'),)}),
    ("LABEL a=b", Label, {"pairs": (KeyValue("a", "b"),)}),
    (
        'LABEL "com.x.y"="a b" c=d',
        Label,
        {"pairs": (KeyValue('"com.x.y"', '"a b"'), KeyValue("c", "d"))},
    ),
    ("LABEL a b c", Label, {"pairs": (KeyValue("a", "b c"),)}),
    ("WORKDIR /app", Workdir, {"path": "/app"}),
    ("WORKDIR /my dir", Workdir, {"path": "/my dir"}),
    ("WORKDIR $HOME/x", Workdir, {"path": "$HOME/x"}),
    ("USER app", User, {"user": "app"}),
    ("USER 1000:1000", User, {"user": "1000:1000"}),
    ("EXPOSE 80", Expose, {"ports": ("80",)}),
    ("EXPOSE 80/tcp 53/udp  8080", Expose, {"ports": ("80/tcp", "53/udp", "8080")}),
    ("VOLUME /data", Volume, {"paths": ("/data",)}),
    ("VOLUME /a /b", Volume, {"paths": ("/a", "/b")}),
    ('VOLUME ["/a", "/b c"]', Volume, {"paths": ("/a", "/b c")}),
    ("STOPSIGNAL SIGTERM", StopSignal, {"signal": "SIGTERM"}),
    ("STOPSIGNAL 9", StopSignal, {"signal": "9"}),
    ('SHELL ["/bin/bash", "-c"]', Shell, {"shell": ("/bin/bash", "-c")}),
    ("MAINTAINER Jo <jo@x>", Maintainer, {"name": "Jo <jo@x>"}),
    ("HEALTHCHECK NONE", Healthcheck, {"test": ("NONE",), "interval": 0}),
    ("HEALTHCHECK none", Healthcheck, {"test": ("NONE",)}),
    ("HEALTHCHECK CMD curl -f x", Healthcheck, {"test": ("CMD-SHELL", "curl -f x")}),
    ('HEALTHCHECK CMD ["curl", "-f"]', Healthcheck, {"test": ("CMD", "curl", "-f")}),
    (
        "HEALTHCHECK --interval=30s --timeout=1m --start-period=1.5s --start-interval=500ms"
        " --retries=4 CMD true",
        Healthcheck,
        {
            "interval": 30_000_000_000,
            "timeout": 60_000_000_000,
            "start_period": 1_500_000_000,
            "start_interval": 500_000_000,
            "retries": 4,
        },
    ),
]


@pytest.mark.parametrize(("text", "cls", "expected"), INSTRUCTIONS)
def test_instruction_forms(text: str, cls: type, expected: dict[str, object]) -> None:
    instruction = only(text)
    assert type(instruction) is cls
    got = fields(instruction)
    assert {k: got[k] for k in expected} == expected


def test_source_keeps_lines_and_text() -> None:
    stage = parse("FROM scratch\n\nRUN a \\\n  b\nUSER x\n").stages[0]
    run, user = stage.instructions
    assert run.source == df.Source(3, 4, "RUN a   b")
    assert user.source == df.Source(5, 5, "USER x")
    assert stage.from_instruction.source == df.Source(1, 1, "FROM scratch")


def test_onbuild_nests_an_instruction() -> None:
    instruction = only("ONBUILD COPY --chown=1 . /app")
    assert isinstance(instruction, Onbuild)
    assert instruction.trigger == "COPY --chown=1 . /app"
    assert isinstance(instruction.instruction, Copy)
    assert instruction.instruction.chown == "1"
    assert instruction.instruction.dest == "/app"


# --- lines: comments, continuations, directives ------------------------------------------

LINES = [
    ("RUN a \\\n  b", "a   b"),
    ("RUN a\\\nb", "ab"),
    ("RUN a \\  \t\nb", "a b"),
    ("RUN a \\\n# comment\n  b", "a   b"),
    ("RUN a \\\n  # indented comment \\\nb", "a b"),
    ("RUN a \\\n\nb", "a b"),
    ("RUN a \\\n   \nb", "a b"),
    ("RUN a \\\n b \\\n c", "a  b  c"),
    ("RUN a \\", "a"),
    ("RUN a # b \\\nc", "a # b c"),
    ("   RUN   a  ", "a"),
    ("RUN a\r\n", "a"),
    ("RUN echo \\$x", "echo \\$x"),
]


@pytest.mark.parametrize(("body", "command"), LINES)
def test_continuations(body: str, command: str) -> None:
    run = only(body)
    assert isinstance(run, Run)
    assert run.command.shell == command


def test_comments_and_blank_lines_are_skipped() -> None:
    text = "# hello\n\n  # indented\nFROM scratch\n\n# c\nUSER a\n#USER b\n"
    stage = parse(text).stages[0]
    assert [type(i) for i in stage.instructions] == [User]
    assert stage.instructions[0].source.line == 7


def test_empty_continuation_line_is_a_warning() -> None:
    parsed = parse("FROM scratch\nRUN a \\\n\n b\n")
    assert [(w.line, w.rule) for w in parsed.warnings] == [(3, "NoEmptyContinuation")]


def test_bom_and_crlf() -> None:
    parsed = parse("\ufeff# escape=`\r\nFROM scratch\r\nRUN a `\r\n b\r\n")
    assert parsed.escape == "`"
    assert parsed.stages[0].instructions[0].command.shell == "a  b"  # type: ignore[union-attr]


DIRECTIVES = [
    ("# escape=`\nFROM scratch\nRUN a`\nb\n", "`", "", "ab"),
    ("#escape = `\nFROM scratch\nRUN a `\nb\n", "`", "", "a b"),
    ("# ESCAPE=`\nFROM scratch\nRUN c:\\a\\ `\nb\n", "`", "", "c:\\a\\ b"),
    (
        "# syntax=docker/dockerfile:1\n# escape=\\\nFROM scratch\nRUN a\n",
        "\\",
        "docker/dockerfile:1",
        "a",
    ),
    ("# check=skip=all\n# escape=`\nFROM scratch\nRUN a\n", "`", "", "a"),
    # a blank line, comment or unknown directive ends the directives: escape= is a comment
    ("\n# escape=`\nFROM scratch\nRUN a `\n", "\\", "", "a `"),
    ("# hello\n# escape=`\nFROM scratch\nRUN a `\n", "\\", "", "a `"),
    ("# foo=bar\n# escape=`\nFROM scratch\nRUN a `\n", "\\", "", "a `"),
    ("FROM scratch\n# escape=`\nRUN a `\n", "\\", "", "a `"),
]


@pytest.mark.parametrize(("text", "escape", "syntax", "command"), DIRECTIVES)
def test_directives(text: str, escape: str, syntax: str, command: str) -> None:
    parsed = parse(text)
    assert (parsed.escape, parsed.syntax) == (escape, syntax)
    assert parsed.stages[0].instructions[0].command.shell == command  # type: ignore[union-attr]


def test_escape_backtick_in_words() -> None:
    env = only('ENV A=a`"b')
    assert env == Env(env.source, (KeyValue("A", 'a`"b'),))  # type: ignore[union-attr]


# --- heredocs ------------------------------------------------------------------------------

HEREDOCS = [
    ("RUN <<EOF\necho hi\nEOF", [df.Heredoc("EOF", "echo hi\n")]),
    ("RUN <<EOF\nEOF", [df.Heredoc("EOF", "")]),
    ("RUN <<EOF\n  a\n\n  b\nEOF", [df.Heredoc("EOF", "  a\n\n  b\n")]),
    ("RUN <<-EOF\n\t\techo hi\n\tEOF", [df.Heredoc("EOF", "echo hi\n", chomp=True)]),
    ("RUN <<'EOF'\necho $x\nEOF", [df.Heredoc("EOF", "echo $x\n", expand=False)]),
    ('RUN <<"EOF"\necho $x\nEOF', [df.Heredoc("EOF", "echo $x\n", expand=False)]),
    ("RUN 3<<EOF cat /dev/fd/3\nx\nEOF", [df.Heredoc("EOF", "x\n", fd=3)]),
    (
        "RUN <<A <<B cat\na\nA\nb\nB",
        [df.Heredoc("A", "a\n"), df.Heredoc("B", "b\n")],
    ),
    ("RUN python3 <<EOF > out\nprint(1)\nEOF", [df.Heredoc("EOF", "print(1)\n")]),
    ("RUN echo '<<EOF'", []),
    ('RUN ["echo", "<<EOF"]', []),
    ("RUN cat a<<b", []),
    ("RUN echo a <<", []),
]


@pytest.mark.parametrize(("body", "docs"), HEREDOCS)
def test_heredocs(body: str, docs: list[df.Heredoc]) -> None:
    run = only(body + "\n")
    assert isinstance(run, Run)
    assert list(run.heredocs) == docs


def test_heredoc_lines_and_next_instruction() -> None:
    stage = parse("FROM scratch\nRUN <<EOF\na\nEOF\nUSER x\n").stages[0]
    run, user = stage.instructions
    assert (run.source.line, run.source.end_line, run.source.text) == (2, 4, "RUN <<EOF")
    assert user.source.line == 5


def test_copy_heredoc_source() -> None:
    copy = only("COPY <<-EOT /etc/motd\n\thello\n\tEOT\n")
    assert isinstance(copy, Copy)
    assert copy.sources == ("<<-EOT",)
    assert copy.dest == "/etc/motd"
    assert copy.heredoc_for("<<-EOT") == df.Heredoc("EOT", "hello\n", chomp=True)
    assert copy.heredoc_for("file") is None
    add = only('ADD <<"A" /a\n$x\nA\n')
    assert isinstance(add, Add)
    assert add.heredoc_for('<<"A"') == df.Heredoc("A", "$x\n", expand=False)


def test_heredoc_not_for_other_instructions() -> None:
    with pytest.raises(InvalidArgument, match="Dockerfile:3: unknown instruction: HELLO"):
        parse("FROM scratch\nCMD <<EOF\nhello\nEOF\n")


# --- stages and FROM ---------------------------------------------------------------------


def test_stages() -> None:
    parsed = parse(
        "ARG BASE=busybox\nARG TAG\nFROM ${BASE}:${TAG:-1.36} AS Build\nRUN make\n"
        "FROM --platform=$BUILDPLATFORM build AS test\nFROM scratch\nCOPY --from=test /a /b\n"
    )
    assert [a.args for a in parsed.args] == [(ArgDef("BASE", "busybox"),), (ArgDef("TAG"),)]
    build, test, final = parsed.stages
    assert (build.index, build.name, build.base, build.base_stage) == (
        0,
        "build",
        "busybox:1.36",
        None,
    )
    assert build.from_instruction.image == "${BASE}:${TAG:-1.36}"
    assert (test.name, test.base, test.base_stage, test.platform) == (
        "test",
        "build",
        0,
        "$BUILDPLATFORM",
    )
    assert (final.name, final.base, final.base_stage) == ("", "scratch", None)
    assert [type(i) for i in final.instructions] == [Copy]
    assert parsed.stage() is final
    assert parsed.stage("Test") is test
    assert parsed.stage("0") is build
    with pytest.raises(InvalidArgument, match="target stage 'nope' could not be found"):
        parsed.stage("nope")


@pytest.mark.parametrize(
    ("text", "build_args", "base"),
    [
        ("ARG B=alpine\nFROM $B", {}, "alpine"),
        ("ARG B=alpine\nFROM $B", {"B": "debian"}, "debian"),
        ("ARG B\nFROM ${B:-busybox}", {}, "busybox"),
        ("ARG V=1\nARG B=img:$V\nFROM ${B}", {}, "img:1"),
        ("FROM ${UNDECLARED:-x}", {"UNDECLARED": "y"}, "x"),
        ("FROM img AS a\nFROM A", {}, "A"),
    ],
)
def test_from_expands_global_args(text: str, build_args: dict[str, str], base: str) -> None:
    assert parse(text, build_args=build_args).stages[-1].base == base


def test_from_earlier_stage_case_insensitive() -> None:
    assert parse("FROM img AS a\nFROM A\n").stages[1].base_stage == 0


def test_copy_from_later_stage_or_image_is_fine() -> None:
    parsed = parse(
        "FROM a AS one\nCOPY --from=two /x /y\nCOPY --from=alpine /x /y\nFROM b AS two\n"
    )
    assert [i.copy_from for i in parsed.stages[0].instructions] == ["two", "alpine"]  # type: ignore[union-attr]


def test_warnings_name_buildkit_rules() -> None:
    parsed = parse("FROM a AS Up\nMAINTAINER me\nCMD [bad\n")
    assert [(w.line, w.rule) for w in parsed.warnings] == [
        (1, "StageNameCasing"),
        (2, "MaintainerDeprecated"),
        (3, "JSONArgsRecommended"),
    ]


def test_expanding_instructions() -> None:
    assert {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL"} <= df.EXPANDING
    assert {"USER", "VOLUME", "WORKDIR", "ARG"} <= df.EXPANDING
    assert not {"RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK", "ONBUILD"} & df.EXPANDING


# --- errors name their line ---------------------------------------------------------------

ERRORS = [
    ("FROM a\nRUNN x", 2, "unknown instruction: RUNN"),
    ("FROM a\n\n\n\n\n\nRUNN x", 7, "Dockerfile:7: unknown instruction: RUNN"),
    ("FROM a\nRUNN x", 2, "dockerfile parse error on line 2"),
    ("FROM a\nCOPPY a b", 2, "did you mean copy?"),
    ("# just a comment\n", 1, "dockerfile contains no stages to build"),
    ("", 1, "dockerfile contains no stages to build"),
    ("ARG A\n", 1, "dockerfile contains no stages to build"),
    ("ARG A\nRUN x\nFROM a", 2, "no build stage in current context"),
    ("ENV A=1\nFROM a", 1, "no build stage in current context"),
    ("FROM a AS x\nFROM b AS X", 2, "duplicate stage name 'x'"),
    ("FROM a AS 1x", 1, "invalid name for build stage: '1x'"),
    ("FROM a AS b!", 1, "invalid name for build stage"),
    ("FROM a b", 1, "FROM requires either one or three arguments"),
    ("FROM a TO b", 1, "FROM requires either one or three arguments"),
    ("FROM", 1, "FROM requires either one or three arguments"),
    ("FROM $NOPE", 1, "base name ($NOPE) should not be blank"),
    ("FROM ${X:?unset}", 1, "X: unset"),
    ("FROM --platfrm=x a", 1, "unknown flag: platfrm"),
    ("FROM a\nCOPY --from=1 a b", 2, "invalid from flag value 1"),
    ("FROM a AS x\nFROM b\nCOPY --from=3 a b", 3, "invalid from flag value 3"),
    ("FROM a AS x\nCOPY --from=x a b", 2, "circular dependency detected on stage: x"),
    ("FROM a\nCOPY a", 2, "COPY requires at least two arguments, but only one was provided"),
    ("FROM a\nADD", 2, "ADD requires at least two arguments"),
    ("FROM a\nADD --from=x a b", 2, "unknown flag: from"),
    ("FROM a\nCOPY --chown a b", 2, "missing a value on flag: chown"),
    ("FROM a\nCOPY --link=yes a b", 2, "expecting boolean value for flag link, not: yes"),
    ("FROM a\nCOPY --from=a --from=b a b", 2, "duplicate flag specified: from"),
    ("FROM a\nRUN --mount=type=nfs true", 2, "unsupported mount type 'nfs'"),
    ("FROM a\nRUN --network=bridge true", 2, "unsupported network mode 'bridge'"),
    ("FROM a\nRUN --security=x true", 2, "unsupported security mode 'x'"),
    ("FROM a\nRUN", 2, "RUN requires at least one argument"),
    ("FROM a\nCMD", 2, "CMD requires at least one argument"),
    ("FROM a\nRUN [1, 2]", 2, "arrays must be comprised of strings only"),
    ('FROM a\nCMD ["a", null]', 2, "arrays must be comprised of strings only"),
    ("FROM a\nSHELL /bin/sh -c", 2, "SHELL requires the arguments to be in JSON form"),
    ('FROM a\nSHELL ["sh", "-c"', 2, "SHELL requires the arguments to be in JSON form"),
    ("FROM a\nSHELL []", 2, "SHELL requires at least one argument"),
    ("FROM a\nENV", 2, "ENV requires at least one argument"),
    ("FROM a\nENV A", 2, "ENV must have two arguments"),
    ("FROM a\nENV A=1 B", 2, "can't find = in 'B'. Must be of the form: name=value"),
    ("FROM a\nENV =1", 2, "ENV names can not be blank"),
    ("FROM a\nLABEL", 2, "LABEL requires at least one argument"),
    ("FROM a\nLABEL =x", 2, "LABEL names can not be blank"),
    ("FROM a\nARG", 2, "ARG requires at least one argument"),
    ("FROM a\nARG =x", 2, "ARG names can not be blank"),
    ("FROM a\nWORKDIR", 2, "WORKDIR requires exactly one argument"),
    ("FROM a\nUSER", 2, "USER requires exactly one argument"),
    ("FROM a\nSTOPSIGNAL", 2, "STOPSIGNAL requires exactly one argument"),
    ("FROM a\nMAINTAINER", 2, "MAINTAINER requires exactly one argument"),
    ("FROM a\nEXPOSE", 2, "EXPOSE requires at least one argument"),
    ("FROM a\nVOLUME", 2, "VOLUME requires at least one argument"),
    ('FROM a\nVOLUME ["/a", ""]', 2, "VOLUME specified can not be an empty string"),
    ("FROM a\nWORKDIR --x=1 /a", 2, "unknown flag: x"),
    ("FROM a\nHEALTHCHECK", 2, "HEALTHCHECK requires at least one argument"),
    ("FROM a\nHEALTHCHECK NONE x", 2, "HEALTHCHECK NONE takes no arguments"),
    ("FROM a\nHEALTHCHECK --interval=1s NONE", 2, "HEALTHCHECK NONE takes no arguments"),
    ("FROM a\nHEALTHCHECK RUN x", 2, "Unknown type 'RUN' in HEALTHCHECK (try CMD)"),
    ("FROM a\nHEALTHCHECK CMD", 2, "Missing command after HEALTHCHECK CMD"),
    ("FROM a\nHEALTHCHECK --interval=5 CMD x", 2, "invalid duration '5'"),
    ("FROM a\nHEALTHCHECK --interval=1d CMD x", 2, "unknown unit 'd'"),
    ("FROM a\nHEALTHCHECK --timeout=-1s CMD x", 2, "--timeout cannot be negative"),
    ("FROM a\nHEALTHCHECK --interval=10us CMD x", 2, "--interval cannot be less than 1ms"),
    ("FROM a\nHEALTHCHECK --retries=-1 CMD x", 2, "--retries cannot be negative"),
    ("FROM a\nHEALTHCHECK --retries=x CMD x", 2, "invalid --retries value 'x'"),
    ("FROM a\nHEALTHCHECK --every=1s CMD x", 2, "unknown flag: every"),
    ("FROM a\nONBUILD", 2, "ONBUILD requires at least one argument"),
    ("FROM a\nONBUILD ONBUILD RUN x", 2, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM a\nONBUILD from b", 2, "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD MAINTAINER b", 2, "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD RUNN b", 2, "unknown instruction: RUNN"),
    ("FROM a\nRUN <<EOF\nx\n", 2, "unterminated heredoc"),
    ("FROM a\nCOPY <<-EOF /x\nEOF2\n", 2, "unterminated heredoc"),
    ("# escape=x\nFROM a", 1, "invalid escape token 'x' does not match ` or \\"),
    ("# escape=\\\n# escape=`\nFROM a", 2, "only one escape parser directive can be used"),
    ("# syntax=a\n# syntax=b\nFROM a", 2, "only one syntax parser directive can be used"),
    ("FROM a\nRUN a \\\n b\nUSER\n", 4, "USER requires exactly one argument"),
    ("FROM a\nRUN <<E\n\nE\nUSER\n", 5, "USER requires exactly one argument"),
]


@pytest.mark.parametrize(("text", "line", "message"), ERRORS)
def test_errors_name_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileError) as caught:
        parse(text)
    assert caught.value.line == line
    assert str(caught.value).startswith(f"Dockerfile:{line}: ")
    assert message in str(caught.value)
    assert isinstance(caught.value, InvalidArgument)


def test_error_uses_the_filename() -> None:
    with pytest.raises(InvalidArgument, match=r"^Containerfile:1: unknown instruction: BOGUS"):
        parse("BOGUS x\n", filename="Containerfile")


# --- variable substitution (BuildKit's ProcessWord) --------------------------------------

ENV = {"A": "a", "B": "b c", "EMPTY": "", "P": "a.b.c.tar.gz", "SLASH": "/usr/local/bin"}
EXPANSIONS = [
    ("hello", "hello"),
    ("$A", "a"),
    ("${A}", "a"),
    ("x$A-y", "xa-y"),
    ("$Ax", ""),
    ("${A}x", "ax"),
    ("$NOPE", ""),
    ("${NOPE}", ""),
    ("$", "$"),
    ("a$", "a$"),
    ("$-x", "x"),
    ("$ A", "$ A"),
    ("$/x", "$/x"),
    ("$1x", "x"),
    ("${A:-d}", "a"),
    ("${NOPE:-d}", "d"),
    ("${EMPTY:-d}", "d"),
    ("${A-d}", "a"),
    ("${NOPE-d}", "d"),
    ("${EMPTY-d}", ""),
    ("${A:+alt}", "alt"),
    ("${NOPE:+alt}", ""),
    ("${EMPTY:+alt}", ""),
    ("${A+alt}", "alt"),
    ("${EMPTY+alt}", "alt"),
    ("${NOPE+alt}", ""),
    ("${NOPE:-$A}", "a"),
    ("${NOPE:-${A}x}", "ax"),
    ("${NOPE:-${NOPE2:-deep}}", "deep"),
    ("${NOPE:-a b}", "a b"),
    ("${NOPE:-'q}'}", "q}"),
    ('${NOPE:-"$A"}', "a"),
    ("${A:?}", "a"),
    ("${P#*.}", "b.c.tar.gz"),
    ("${P##*.}", "gz"),
    ("${P%.*}", "a.b.c.tar"),
    ("${P%%.*}", "a"),
    ("${SLASH##*/}", "bin"),
    ("${P#x}", "a.b.c.tar.gz"),
    ("${NOPE#x}", ""),
    ("'$A'", "$A"),
    ("'${A}'", "${A}"),
    ('"$A"', "a"),
    ('"$B"', "b c"),
    ('"a b"', "a b"),
    ("a' 'b", "a b"),
    ("'a\\b'", "a\\b"),
    ("\"'$A'\"", "'a'"),
    ("'\"$A\"'", '"$A"'),
    ("\\$A", "$A"),
    ("\\${A}", "${A}"),
    ("\\\\$A", "\\a"),
    ("a\\ b", "a b"),
    ("a\\", "a"),
    ("\\'", "'"),
    ('\\"', '"'),
    ('"\\$A"', "$A"),
    ('"\\"x\\""', '"x"'),
    ('"a\\b"', "a\\b"),
    ('"\\\\"', "\\"),
    ("$A$A", "aa"),
    ("${A}${B}", "ab c"),
    ("  spaced  ", "  spaced  "),
    ("/usr/$A/bin:$PATH", "/usr/a/bin:"),
]


@pytest.mark.parametrize(("word", "expected"), EXPANSIONS)
def test_expand(word: str, expected: str) -> None:
    assert expand(word, ENV) == expected


@pytest.mark.parametrize(
    ("word", "expected"),
    [("`$A", "$A"), ("a`", "a"), ("c:\\dir\\$A", "c:\\dir\\a"), ('"`""', '"'), ("`'", "'")],
)
def test_expand_backtick_escape(word: str, expected: str) -> None:
    assert expand(word, ENV, escape="`") == expected


EXPAND_ERRORS = [
    ("'abc", "matching single-quote"),
    ('"abc', "matching double-quote"),
    ("${A", "missing '}'"),
    ("${NOPE:-x", "missing '}'"),
    ("${A!x}", "unsupported modifier (!) in substitution"),
    ("${A:=x}", "unsupported modifier (:) in substitution"),
    ("${NOPE:?must be set}", "NOPE: must be set"),
    ("${NOPE?}", "NOPE: is not allowed to be unset"),
    ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
    ("${P#x", "missing '}'"),
]


@pytest.mark.parametrize(("word", "message"), EXPAND_ERRORS)
def test_expand_errors(word: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand(word, ENV)


def test_expand_question_mark_keeps_set_values() -> None:
    assert expand("${EMPTY?}", ENV) == ""


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [
        ("0", 0),
        ("1ns", 1),
        ("1us", 1_000),
        ("1\u00b5s", 1_000),
        ("2ms", 2_000_000),
        ("1.5s", 1_500_000_000),
        ("1m30s", 90_000_000_000),
        ("2h", 7_200_000_000_000),
        (".5s", 500_000_000),
        ("-1s", -1_000_000_000),
    ],
)
def test_durations(text: str, nanoseconds: int) -> None:
    assert parse_duration(text) == nanoseconds


@pytest.mark.parametrize("text", ["", "5", "s", "1.s5", "1x", "+", "1s2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_duration(text)
