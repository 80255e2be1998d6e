"""The builder on copy-mode snapshots in a temp dir, with a fake Runner.

The fake runner records each call and interprets the shell text of a RUN as tiny commands on
the bind-mounted root it is given: ``write PATH TEXT``, ``rm PATH``, ``say TEXT`` (an output
line), ``exit N``; ``$NAME`` is replaced from the process env. No container runs here.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from berth.image import build_context
from berth.image.build import BuildError, BuildEvent, RunProcess, build
from berth.image.snapshots import Mount
from berth.image.store import Image, ImageStore


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[RunProcess] = []

    def run(self, mounts: list[Mount], process: RunProcess) -> int:
        self.calls.append(process)
        [mount] = mounts
        assert mount.type == "bind"
        root = mount.source
        env = dict(e.split("=", 1) for e in process.env)
        for line in process.args[-1].split(";"):
            words = line.split()
            for name, val in sorted(env.items(), key=lambda kv: -len(kv[0])):
                words = [w.replace("$" + name, val) for w in words]
            if not words:
                continue
            if words[0] == "write":
                path = os.path.join(root, words[1].lstrip("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                Path(path).write_text(" ".join(words[2:]))
            elif words[0] == "rm":
                os.unlink(os.path.join(root, words[1].lstrip("/")))
            elif words[0] == "say":
                process.output("stdout", " ".join(words[1:]))
            elif words[0] == "exit":
                return int(words[1])
        return 0


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    s = ImageStore(str(tmp_path / "store"), snapshot_mode="copy")
    # a tiny base image: /etc/passwd, /etc/group and /bin as a plain dir
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (base / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\napp:x:1001:\n")
    (base / "bin").mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(base, arcname=".")
    buf.seek(0)
    s.import_rootfs(buf, ref="base:1")
    return s


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "app" / "sub").mkdir(parents=True)
    (ctx / "app" / "main.py").write_text("print('hi')\n")
    (ctx / "app" / "sub" / "data.txt").write_text("data\n")
    (ctx / "app" / "notes.log").write_text("log\n")
    (ctx / "top.txt").write_text("top\n")
    return ctx


def files(store: ImageStore, image: Image) -> dict[str, str]:
    """Every regular file of the image's tree (copy mode: the top snapshot is the tree)."""
    chain = store.unpack(image)
    assert chain is not None
    [top] = store.snapshots.lowers(chain)
    out = {}
    for dirpath, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out["/" + os.path.relpath(path, top)] = Path(path).read_text(errors="replace")
    return out


def run_build(
    store: ImageStore, ctx: Path, text: str, runner: FakeRunner | None = None, **kw: object
) -> tuple[Image, list[BuildEvent]]:
    events: list[BuildEvent] = []
    image = build(
        store,
        str(ctx),
        text,
        runner=runner or FakeRunner(),
        events=events.append,
        **kw,  # type: ignore[arg-type]
    )
    return image, events


SIMPLE = """\
FROM base:1
ENV GREETING=hello
RUN write /hello $GREETING; say built
COPY app /app
CMD ["/app/main.py"]
"""


def test_build_run_copy_env_cmd(store: ImageStore, context: Path) -> None:
    runner = FakeRunner()
    image, events = run_build(store, context, SIMPLE, runner, tags=["demo:1"])
    got = files(store, image)
    assert got["/hello"] == "hello"
    assert got["/app/main.py"] == "print('hi')\n"
    assert got["/app/sub/data.txt"] == "data\n"
    assert image.config.config.cmd == ("/app/main.py",)
    assert "GREETING=hello" in image.config.config.env
    assert store.resolve("demo:1").id == image.id
    [call] = runner.calls
    assert call.args == ("/bin/sh", "-c", "write /hello $GREETING; say built")
    assert "GREETING=hello" in call.env
    assert call.user == "root" and call.workdir == "/"
    steps = [e.text for e in events if e.kind == "step"]
    assert steps[1] == "[2/5] ENV GREETING=hello"
    assert [e.text for e in events if e.kind == "output"] == ["built"]
    history = image.config.history[-4:]
    assert [h.empty_layer for h in history] == [True, False, False, True]


def test_rebuild_is_cached_and_change_rebuilds_from_copy(store: ImageStore, context: Path) -> None:
    first, _ = run_build(store, context, SIMPLE)
    runner = FakeRunner()
    again, events = run_build(store, context, SIMPLE, runner)
    assert runner.calls == []
    done = [e for e in events if e.kind == "done"]
    assert len(done) == 5 and all(e.cached for e in done)
    assert again.id == first.id
    os.utime(context / "app" / "main.py", (1, 1))  # mtime alone: still cached
    _, events = run_build(store, context, SIMPLE, runner)
    assert all(e.cached for e in events if e.kind == "done")
    (context / "app" / "sub" / "data.txt").write_text("changed\n")
    changed, events = run_build(store, context, SIMPLE, runner)
    assert [e.cached for e in events if e.kind == "done"] == [True, True, True, False, False]
    assert runner.calls == []
    assert files(store, changed)["/app/sub/data.txt"] == "changed\n"
    _, events = run_build(store, context, SIMPLE, runner, no_cache=True)
    assert len(runner.calls) == 1
    assert not any(e.cached for e in events if e.kind == "done" and e.step > 1)


def test_cache_json_is_written(store: ImageStore, context: Path) -> None:
    run_build(store, context, SIMPLE)
    data = json.loads(Path(store.root, "build", "cache.json").read_text())
    assert data["version"] == 1 and len(data["steps"]) == 4


def test_failed_run_leaves_nothing(store: ImageStore, context: Path) -> None:
    text = "FROM base:1\nCOPY top.txt /\n\nRUN say oops; exit 3\n"
    before = {i.id for i in store.list()}
    with pytest.raises(BuildError, match=r"^Dockerfile:4: RUN exited with status 3") as err:
        run_build(store, context, text, tags=["broken:1"])
    assert err.value.status == 3 and err.value.line == 4
    assert {i.id for i in store.list()} == before
    assert store.get("broken:1") is None
    assert not [s for s in store.snapshots.list() if s.kind == "active"]
    assert os.listdir(Path(store.root, "build", "tmp")) == []


def test_dockerignore(store: ImageStore, context: Path) -> None:
    (context / ".dockerignore").write_text("# logs\n**/*.log\napp/sub\n!app/sub/keep.txt\n")
    (context / "app" / "sub" / "keep.txt").write_text("keep\n")
    image, _ = run_build(store, context, "FROM base:1\nCOPY . /src/\n")
    got = {p for p in files(store, image) if p.startswith("/src/")}
    assert got == {
        "/src/app/main.py",
        "/src/app/sub/keep.txt",
        "/src/top.txt",
        "/src/.dockerignore",
    }
    with pytest.raises(BuildError, match=r"^Dockerfile:2: .*notes.log: not found"):
        run_build(store, context, "FROM base:1\nCOPY app/notes.log /\n")


def test_dockerignore_rules() -> None:
    pats = build_context.parse_dockerignore("**/*.log\n/build\n!build/keep\nsrc/**/tmp\n")
    ign = build_context.ignored
    assert ign(pats, "a.log") and ign(pats, "x/y/a.log")
    assert ign(pats, "build/out") and not ign(pats, "build/keep")
    assert ign(pats, "src/tmp") and ign(pats, "src/a/b/tmp/f") and not ign(pats, "src/a")


def test_copy_errors(store: ImageStore, context: Path) -> None:
    with pytest.raises(BuildError, match=r"^Dockerfile:3: \.\./x: outside the build context"):
        run_build(store, context, "FROM base:1\n\nCOPY ../x /\n")
    with pytest.raises(BuildError, match=r"^Dockerfile:2: missing: not found"):
        run_build(store, context, "FROM base:1\nCOPY missing /\n")
    with pytest.raises(BuildError, match="ADD from a URL is not supported here"):
        run_build(store, context, "FROM base:1\nADD https://example.com/x /\n")


def test_arg_env_expansion(store: ImageStore, context: Path) -> None:
    text = """\
ARG DIR=/opt
FROM base:1
ARG DIR
ARG NAME=world
ENV WHERE=$DIR/${NAME}
WORKDIR $WHERE
COPY top.txt ./
RUN write $WHERE/run.txt $NAME
LABEL who=$NAME
"""
    runner = FakeRunner()
    image, _ = run_build(store, context, text, runner, build_args={"NAME": "you"})
    got = files(store, image)
    assert got["/opt/you/top.txt"] == "top\n"
    assert got["/opt/you/run.txt"] == "you"
    assert image.config.config.working_dir == "/opt/you"
    assert image.config.config.labels["who"] == "you"
    assert "NAME=you" in runner.calls[0].env and "NAME=you" not in image.config.config.env
    # another build arg value: the RUN is not cached
    _, events = run_build(store, context, text, runner, build_args={"NAME": "them"})
    assert not any(e.cached for e in events if e.kind == "done" and "RUN" in e.text)


def test_multi_stage_copy_from_and_chown(store: ImageStore, context: Path) -> None:
    text = """\
FROM base:1 AS builder
RUN write /out/bin/tool made
FROM base:1
COPY --from=builder /out/bin /usr/bin/
COPY --chown=app:staff --chmod=0600 top.txt /home/
"""
    image, events = run_build(store, context, text)
    got = files(store, image)
    assert got["/usr/bin/tool"] == "made"
    assert "/out/bin/tool" not in got
    assert {e.stage for e in events} == {"builder", "1"}
    chain = store.unpack(image)
    [top] = store.snapshots.lowers(chain)
    st = os.stat(os.path.join(top, "home", "top.txt"))
    assert st.st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1000, 50)
    with pytest.raises(BuildError, match="unable to find user 'nobody'"):
        run_build(store, context, "FROM base:1\nCOPY --chown=nobody top.txt /\n")


def test_add_extracts_local_tar(store: ImageStore, context: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"inside\n"
        info = tarfile.TarInfo("pkg/readme")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (context / "pkg.tar.gz").write_bytes(buf.getvalue())
    image, _ = run_build(store, context, "FROM base:1\nADD pkg.tar.gz /opt/\nCOPY pkg.tar.gz /\n")
    got = files(store, image)
    assert got["/opt/pkg/readme"] == "inside\n"
    assert "/pkg.tar.gz" in got  # COPY never extracts


def test_onbuild_triggers(store: ImageStore, context: Path) -> None:
    parent, _ = run_build(
        store, context, "FROM base:1\nONBUILD COPY top.txt /from-trigger\n", tags=["parent:1"]
    )
    assert parent.config.config.on_build == ("COPY top.txt /from-trigger",)
    child, events = run_build(store, context, 'FROM parent:1\nCMD ["sh"]\n')
    assert files(store, child)["/from-trigger"] == "top\n"
    assert child.config.config.on_build == ()
    assert [e.text for e in events if e.kind == "step"][1] == "[2/3] COPY top.txt /from-trigger"


def test_metadata_instructions(store: ImageStore, context: Path) -> None:
    text = """\
FROM base:1
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]
USER app
EXPOSE 80 53/udp
VOLUME /data
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD true
ENTRYPOINT run it
"""
    image, _ = run_build(store, context, text)
    c = image.config.config
    assert c.shell == ("/bin/ash", "-eo", "pipefail", "-c")
    assert c.entrypoint == ("/bin/ash", "-eo", "pipefail", "-c", "run it")
    assert c.user == "app" and c.exposed_ports == ("80/tcp", "53/udp") and c.volumes == ("/data",)
    assert c.stop_signal == "SIGTERM"
    assert c.healthcheck is not None and c.healthcheck.interval == 5_000_000_000
    assert c.cmd is None


def test_scratch_and_target(store: ImageStore, context: Path) -> None:
    text = "FROM scratch AS a\nCOPY top.txt /\nFROM base:1 AS b\nRUN exit 1\n"
    image, events = run_build(store, context, text, target="a")
    assert files(store, image) == {"/top.txt": "top\n"}
    assert {e.stage for e in events} == {"a"}


def test_unknown_base_or_copy_from_image_names_it_and_its_line(
    store: ImageStore, context: Path
) -> None:
    """A FROM or COPY --from naming neither a stage nor an image in the store (nor a built-in
    base) fails at that line, naming the reference, and makes no image."""
    before = {i.id for i in store.list()}
    with pytest.raises(BuildError, match=r"^Dockerfile:1: nothere:1: no such image"):
        run_build(store, context, "FROM nothere:1\nRUN say x\n", tags=["t:1"])
    with pytest.raises(BuildError, match=r"^Dockerfile:3: nope: no such image"):
        run_build(store, context, "FROM base:1\nRUN say x\nCOPY --from=nope /a /b\n", tags=["t:1"])
    assert store.get("t:1") is None
    assert {i.id for i in store.list()} == before
