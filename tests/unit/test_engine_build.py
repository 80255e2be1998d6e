"""``POST /build`` and ``POST /commit`` without root: the query, the context tar (plain and
compressed), finding the Dockerfile, the legacy builder's progress lines and error line,
commit's config merge, and the build endpoint in-process (aiohttp's test client, copy-mode
store, Dockerfiles without RUN so no container is needed)."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import json
import lzma
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict

from berth.engine import api, api_build, api_images
from berth.engine.api_build import BuildOptions, Progress, error_line, extract_context
from berth.engine.build_runner import StepRunner
from berth.engine.network_build import StepSandbox
from berth.engine.paths import Paths
from berth.errors import InvalidArgument, Unsupported
from berth.image import build as builder
from berth.image import dockerfile as df
from berth.image.build import BuildError, BuildEvent, RunProcess
from berth.image.store import ImageStore
from berth.spec import image as spec

# --------------------------------------------------------------------------- the query


def _options(**query: str | list[str]) -> BuildOptions:
    items: list[tuple[str, str]] = []
    for key, val in query.items():
        items.extend((key, v) for v in (val if isinstance(val, list) else [val]))
    return BuildOptions.from_query(MultiDict(items))


def test_options_defaults_and_values() -> None:
    assert _options() == BuildOptions()
    opts = _options(
        dockerfile="sub/Other.df",
        t=["a", "b:2", ""],
        buildargs='{"A":"1","UNSET":null}',
        labels='{"k":"v"}',
        target="mid",
        nocache="1",
        q="True",
        rm="1",
        pull="1",
        cachefrom="[]",
        extrahosts="h:1.2.3.4",
        networkmode="none",
        platform=builder.platform_args()["TARGETPLATFORM"],
    )
    assert opts == BuildOptions("sub/Other.df", ("a", "b:2"), {"A": "1"}, {"k": "v"}, "mid",
                                no_cache=True, quiet=True, network_mode="none")  # fmt: skip


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"buildargs": "{"}, "buildargs: not a JSON object"),
        ({"labels": '{"k":1}'}, "labels: expected a JSON object of strings"),
        ({"platform": "linux/s390x"}, "platform='linux/s390x'"),
        ({"t": "UPPER"}, "UPPER"),
        ({"t": "x@sha256:" + "a" * 64}, "digest"),
    ],
)
def test_options_bad_values_name_the_parameter(query: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        _options(**query)
    assert words in err.value.message


def test_step_limits_are_a_checked_host_config() -> None:
    nofile = '[{"Name":"nofile","Soft":100,"Hard":200}]'
    opts = _options(memory=str(64 << 20), memswap="-1", cpushares="0", cpusetcpus="0",
                    shmsize="1048576", ulimits=nofile)  # fmt: skip
    assert opts.host_config == {
        "Memory": 64 << 20,
        "MemorySwap": -1,
        "CpusetCpus": "0",
        "ShmSize": 1 << 20,
        "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}],
    }
    with pytest.raises(InvalidArgument, match="Minimum memory limit allowed is 6MB"):
        _options(memory="1024")
    with pytest.raises(InvalidArgument, match="cpuquota='x': not an integer"):
        _options(cpuquota="x")


def test_a_step_is_a_build_container_with_dockers_defaults(tmp_path: Path) -> None:
    paths = Paths(str(tmp_path))
    runner = StepRunner(paths, "/parent/", limits={"Memory": 64 << 20})
    process = RunProcess(("/bin/sh", "-c", "make"), ("PATH=/bin", "A=1"), "root", "/src",
                         lambda _stream, _line: None)  # fmt: skip
    cid = "c" * 64
    config = runner.step_spec(cid, process, str(tmp_path))
    assert config["process"]["args"] == ["/bin/sh", "-c", "make"]
    assert config["process"]["env"][:3] == ["PATH=/bin", f"HOSTNAME={'c' * 12}", "A=1"]
    assert config["process"]["cwd"] == "/src" and config["process"]["user"]["uid"] == 0
    assert config["hostname"] == "c" * 12 and config["root"]["readonly"] is False
    assert config["linux"]["cgroupsPath"] == f"parent/{cid}"
    assert config["linux"]["resources"]["memory"]["limit"] == 64 << 20
    assert {"type": "network"} in config["linux"]["namespaces"]  # its own: loopback only
    assert len(config["process"]["capabilities"]["bounding"]) == 14
    assert "seccomp" in config["linux"] and config["linux"]["maskedPaths"]
    assert StepRunner(paths, "").cgroup_parent == "berth"


def test_a_step_with_a_sandbox_joins_its_namespace_and_mounts_its_files(tmp_path: Path) -> None:
    process = RunProcess(("true",), (), "root", "/", lambda _stream, _line: None)
    hosts = {"destination": "/etc/hosts", "type": "bind", "source": "/b/hosts",
             "options": ["rbind", "rprivate"]}  # fmt: skip
    runner = StepRunner(Paths(str(tmp_path)), "")
    on_bridge = StepSandbox("bridge", "/run/netns/s1", (hosts,))
    config = runner.step_spec("d" * 64, process, str(tmp_path), on_bridge)
    assert {"type": "network", "path": "/run/netns/s1"} in config["linux"]["namespaces"]
    assert hosts in config["mounts"]
    on_host = runner.step_spec("d" * 64, process, str(tmp_path), StepSandbox("host", None, ()))
    assert not [n for n in on_host["linux"]["namespaces"] if n["type"] == "network"]


def test_a_remote_context_is_refused() -> None:
    with pytest.raises(Unsupported, match="fetches no build context"):
        _options(remote="https://example.invalid/x.git")


# --------------------------------------------------------------------------- the context


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.mark.parametrize(
    "compress",
    [lambda b: b, gzip.compress, bz2.compress, lzma.compress],
    ids=["plain", "gzip", "bzip2", "xz"],
)
def test_context_tars_plain_and_compressed(
    tmp_path: Path, compress: Callable[[bytes], bytes]
) -> None:
    body = compress(_tar({"Dockerfile": b"FROM scratch\n", "dir/a.txt": b"a\n"}))
    extract_context(io.BytesIO(body), str(tmp_path))
    assert (tmp_path / "dir" / "a.txt").read_bytes() == b"a\n"
    assert api_build.read_dockerfile(str(tmp_path), "Dockerfile") == "FROM scratch\n"


def test_context_cut_after_the_last_files_data(tmp_path: Path) -> None:
    """The CLI's context with ``-f`` outside it has no padding and no end blocks."""
    whole = _tar({"a.txt": b"a\n", ".dockerfile.1234": b"FROM scratch\n"})
    cut = whole[: 3 * 512 + len(b"FROM scratch\n")]
    for n, body in enumerate((cut, gzip.compress(cut))):
        (tmp_path / str(n)).mkdir()
        extract_context(io.BytesIO(body), str(tmp_path / str(n)))
        assert (tmp_path / str(n) / ".dockerfile.1234").read_text() == "FROM scratch\n"


def test_context_empty_body_and_hostile_entries(tmp_path: Path) -> None:
    extract_context(io.BytesIO(b""), str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InvalidArgument, match=r"^build context: .*\.\."):
        extract_context(io.BytesIO(_tar({"../escape": b"x"})), str(tmp_path))
    with pytest.raises(InvalidArgument, match=r"^build context: "):
        extract_context(io.BytesIO(lzma.compress(b"x" * 600)[:40]), str(tmp_path))


def test_the_dockerfile_is_found_inside_the_context_only(tmp_path: Path) -> None:
    (tmp_path / "dockerfile").write_text("FROM a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.df").write_text("FROM b\n")
    assert api_build.read_dockerfile(str(tmp_path), "Dockerfile") == "FROM a\n"
    assert api_build.read_dockerfile(str(tmp_path), "sub/x.df") == "FROM b\n"
    with pytest.raises(InvalidArgument, match="Cannot locate specified Dockerfile: nope"):
        api_build.read_dockerfile(str(tmp_path), "nope")
    with pytest.raises(InvalidArgument, match="must be inside the context"):
        api_build.read_dockerfile(str(tmp_path), "../etc/passwd")


# --------------------------------------------------------------------------- progress


def _lines(messages: list[dict[str, Any]]) -> str:
    return "".join(m.get("stream", "") for m in messages)


def test_progress_is_the_legacy_builders_text() -> None:
    parsed = df.parse("FROM busybox AS one\nRUN true\nFROM one\nENV A=1\n")
    progress = Progress(builder.plan(parsed), parsed.stage())
    key = "sha256:" + "ab" * 32
    out: list[dict[str, Any]] = []
    out += progress.event(BuildEvent("step", "one", 1, 2, "[1/2] FROM busybox"))
    out += progress.event(BuildEvent("done", "one", 1, 2, "FROM busybox", cached=True, key=key))
    out += progress.event(BuildEvent("step", "one", 2, 2, "[2/2] RUN true"))
    out += progress.started("c" * 64)
    out += progress.event(BuildEvent("output", "one", 0, 0, "said", stream="stderr"))
    out += progress.event(BuildEvent("done", "one", 2, 2, "RUN true", key=key))
    out += progress.event(BuildEvent("step", "1", 1, 2, "[1/2] FROM one"))
    out += progress.event(BuildEvent("done", "1", 1, 2, "FROM one", cached=True, key=key))
    out += progress.event(BuildEvent("step", "1", 2, 2, "[2/2] ENV A=1"))
    out += progress.event(BuildEvent("done", "1", 2, 2, "ENV A=1", cached=True, key=key))
    assert out[:2] == [{"stream": "Step 1/4 : FROM busybox"}, {"stream": "\n"}]
    short = "ab" * 6
    assert _lines(out) == (
        f"Step 1/4 : FROM busybox\n ---> {short}\n"
        f"Step 2/4 : RUN true\n ---> Running in {'c' * 12}\nsaid\n"
        f"Removing intermediate container {'c' * 12}\n ---> {short}\n"
        f"Step 3/4 : FROM one\n ---> {short}\n"
        "Step 4/4 : ENV A=1\n ---> Using cache\n"  # the last id is the image's: see built()
    )


def test_progress_at_the_end_and_on_errors(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path), snapshot_mode="copy")
    config = spec.ImageConfig(architecture="amd64", os="linux")
    image = store.write_image(config, [])
    parsed = df.parse("FROM scratch\n")
    built = Progress(builder.plan(parsed), parsed.stage()).built(image, ("x", "r/y:2"), ["B"])
    assert built[0] == {"stream": f" ---> {image.short_id}\n"}
    assert built[1] == {"stream": "[Warning] One or more build-args [B] were not consumed\n"}
    assert built[2] == {"aux": {"ID": image.id}}
    assert _lines(built[3:]) == (
        f"Successfully built {image.short_id}\nSuccessfully tagged x:latest\n"
        "Successfully tagged r/y:2\n"
    )
    failed = BuildError("Dockerfile:3: RUN exited with status 2", 3, 2, ("/bin/sh", "-c", "x"))
    message = "The command '/bin/sh -c x' returned a non-zero code: 2"
    assert error_line(failed) == {
        "errorDetail": {"code": 2, "message": message},
        "error": message,
    }
    other = error_line(BuildError("Dockerfile:1: no such image"))
    assert other == {"errorDetail": {"message": "Dockerfile:1: no such image"},
                     "error": "Dockerfile:1: no such image"}  # fmt: skip


def test_unused_build_args_are_those_no_built_stage_declares() -> None:
    parsed = df.parse("ARG G\nFROM scratch AS a\nARG A\nFROM scratch\nARG B\n")
    given = {"G": "", "A": "", "B": "", "C": "", "http_proxy": "", "TARGETARCH": ""}
    assert api_build.unused_args(parsed, builder.plan(parsed), given) == ["A", "C"]
    assert api_build.unused_args(parsed, parsed.stages, given) == ["C"]


def test_plan_lists_the_stages_the_target_needs() -> None:
    parsed = df.parse(
        "FROM scratch AS a\nFROM scratch AS b\nFROM scratch AS c\nCOPY --from=a / /\n"
    )
    assert [s.name for s in builder.plan(parsed)] == ["a", "c"]
    assert [s.name for s in builder.plan(parsed, target="b")] == ["b"]


# --------------------------------------------------------------------------- commit's config


def test_commit_config_is_image_then_container_then_body_then_changes() -> None:
    image = spec.ContainerConfig(
        env=("PATH=/bin", "A=image"), cmd=("sh",), exposed_ports=("80/tcp",)
    )
    container = {"Env": ["PATH=/bin", "A=container"], "Cmd": ["echo", "hi"], "Hostname": "h",
                 "Entrypoint": None, "Labels": {"l": "1"}}  # fmt: skip
    base = api_images.committed_config(image, container, {"WorkingDir": "/w"})
    assert base.env == ("PATH=/bin", "A=container") and base.cmd == ("echo", "hi")
    assert base.exposed_ports == ("80/tcp",) and base.labels == {"l": "1"}
    assert base.working_dir == "/w"
    changed = api_images.config_from_changes(["ENV B=2 A=changed", "EXPOSE 80 443"], base)
    assert changed is not None
    assert changed.env == ("PATH=/bin", "A=changed", "B=2")
    assert changed.exposed_ports == ("80/tcp", "443/tcp")
    assert api_images.config_from_changes([], base) is base


# --------------------------------------------------------------------------- in process


def _app_run(tmp_path: Path, body: Callable[[Any, ImageStore], Any]) -> None:
    async def main() -> None:
        paths = Paths(str(tmp_path / "root"))
        paths.make()
        store = ImageStore(paths.images, snapshot_mode="copy")
        app = api.make_app(api.Engine(paths=paths, images=store, engine_id="e1"))
        async with TestClient(TestServer(app)) as client:
            await body(client, store)

    asyncio.run(main())


async def _stream(response: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (await response.text()).splitlines()]


def test_build_endpoint_streams_and_tags(tmp_path: Path) -> None:
    dockerfile = b'FROM scratch\nCOPY a.txt /a.txt\nLABEL from=file\nCMD ["/a"]\n'
    context = gzip.compress(_tar({"Dockerfile": dockerfile, "a.txt": b"a\n"}))

    async def body(client: Any, store: ImageStore) -> None:
        query = {"t": "built:1", "labels": '{"from":"query"}', "version": "1"}
        response = await client.post("/v1.43/build", params=query, data=context)
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        lines = await _stream(response)
        image = store.resolve("built:1")
        assert {"aux": {"ID": image.id}} in lines
        text = _lines(lines)
        assert text.startswith("Step 1/4 : FROM scratch\n")
        assert text.endswith(f"Successfully built {image.short_id}\nSuccessfully tagged built:1\n")
        assert image.config.config.labels == {"from": "query"}
        query = {"q": "1", "labels": query["labels"]}
        again = await client.post("/build", params=query, data=context)
        assert await _stream(again) == [{"stream": image.id + "\n"}]
        assert list((tmp_path / "root" / "builds").iterdir()) == []

    _app_run(tmp_path, body)


def test_builds_at_once_on_a_fresh_daemon_all_succeed(tmp_path: Path) -> None:
    """The first build sweeps a dead daemon's leftovers; builds that come meanwhile wait for
    it, so no build's context is swept away by another (they run side by side)."""
    (tmp_path / "root" / "builds" / "ctx-dead").mkdir(parents=True)  # a dead daemon's
    os.utime(tmp_path / "root" / "builds" / "ctx-dead", (1, 1))

    async def body(client: Any, store: ImageStore) -> None:
        async def build(n: int) -> list[dict[str, Any]]:
            dockerfile = f"FROM scratch\nCOPY a.txt /a{n}.txt\n".encode()
            context = _tar({"Dockerfile": dockerfile, "a.txt": b"a\n"})
            response = await client.post("/build", params={"t": f"many:{n}"}, data=context)
            return await _stream(response)

        results = await asyncio.gather(*(build(n) for n in range(4)))
        for n, lines in enumerate(results):
            assert not [line for line in lines if "error" in line], lines
            assert store.resolve(f"many:{n}")
        assert list((tmp_path / "root" / "builds").iterdir()) == []

    _app_run(tmp_path, body)


def test_build_endpoint_errors(tmp_path: Path) -> None:
    async def body(client: Any, store: ImageStore) -> None:
        bad = _tar({"Dockerfile": b"FROM scratch\nNOPE x\n"})
        response = await client.post("/build", data=bad)
        assert response.status == 400
        assert (await response.json())["message"].startswith("Dockerfile:2:")
        response = await client.post("/build", params={"dockerfile": "x.df"}, data=bad)
        assert response.status == 400
        assert await response.json() == {"message": "Cannot locate specified Dockerfile: x.df"}
        good = _tar({"Dockerfile": b"FROM scratch AS one\n"})
        response = await client.post("/build", params={"target": "zzz"}, data=good)
        assert response.status == 400
        assert await response.json() == {"message": "target stage 'zzz' could not be found"}
        response = await client.post("/build", data=b"")
        assert response.status == 400
        assert await response.json() == {
            "message": "Cannot locate specified Dockerfile: Dockerfile"
        }
        missing = _tar({"Dockerfile": b"FROM scratch\nCOPY nothere /\n"})
        response = await client.post("/build", data=missing)
        assert response.status == 200
        last = (await _stream(response))[-1]
        assert last["error"].startswith("Dockerfile:2:") and "nothere" in last["error"]
        response = await client.post("/commit", params={"container": "nosuch"})
        assert response.status == 404
        assert await response.json() == {"message": "No such container: nosuch"}
        assert list((tmp_path / "root" / "builds").iterdir()) == []

    _app_run(tmp_path, body)
