"""berth.engine.oci_config: docker create bodies -> OCI config.json, as dockerd 20.10 builds it.

Rules: pure, no root; the rootfs is a temp dir with its own /etc/passwd and /etc/group (those of
Docker's busybox image, plus a www-data user); host facts (CPUs, hard rlimits) are injected so
results do not depend on the machine. Each case is a `docker run` command line, the body the
CLI sends for it, and what dockerd 20.10 puts in config.json for it, reasoned from moby's
oci_linux.go / runconfig merge / TweakCapabilities. Every produced spec is also checked with
``Spec.from_json`` and the OCI config schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from berth.engine.oci_config import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    RLIM_INFINITY,
    CreateRequest,
    HostFacts,
    build_spec,
    config_env,
    entrypoint_and_cmd,
    resolve_user,
)
from berth.errors import InvalidArgument
from berth.runtime.loopback import LOOPBACK_ANNOTATION
from berth.spec.config import Spec
from berth.spec.defaults import CAPABILITIES, DEFAULT_PATH
from berth.spec.image import ContainerConfig, ImageConfig

CID = "c0ffee" + "0" * 58
HOSTNAME = CID[:12]
HOST = HostFacts(
    cpus=frozenset({0, 1}),
    mems=frozenset({0}),
    hard_limits={"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": 96551, "RLIMIT_CORE": RLIM_INFINITY},
)
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "specs" / "oci-runtime"
if not SCHEMA_DIR.is_dir():
    SCHEMA_DIR = Path("/work/shared/specs/oci-runtime")

BUSYBOX_PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
wheel:x:10:root
www-data:x:33:
staff:x:50:www-data,daemon
nogroup:x:65534:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> str:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(BUSYBOX_PASSWD)
    (etc / "group").write_text(BUSYBOX_GROUP)
    return str(tmp_path)


def _image(**config: Any) -> ImageConfig:
    return ImageConfig(architecture="amd64", os="linux", config=ContainerConfig(**config))


BUSYBOX = _image(cmd=("sh",), env=(DEFAULT_PATH,))


def _create_body(**overrides: Any) -> dict[str, Any]:
    """The body CLI 28.2.2 sends for `docker run busybox`, trimmed to the keys that matter."""
    host_config: dict[str, Any] = {
        "NetworkMode": "default",
        "Privileged": False,
        "ReadonlyRootfs": False,
        "CapAdd": None,
        "CapDrop": None,
        "SecurityOpt": None,
        "Memory": 0,
        "MemorySwap": 0,
        "MemoryReservation": 0,
        "NanoCpus": 0,
        "CpuShares": 0,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpusetCpus": "",
        "CpusetMems": "",
        "PidsLimit": None,
        "Ulimits": None,
        "BlkioWeight": 0,
        "OomScoreAdj": 0,
        "ShmSize": 0,
        "Devices": [],
        "IpcMode": "",
        "PidMode": "",
        "UTSMode": "",
        "Tmpfs": None,
        "AutoRemove": False,
        "ConsoleSize": [0, 0],
    }
    host_config.update(overrides.pop("HostConfig", {}))
    body: dict[str, Any] = {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": [],
        "Cmd": None,
        "Image": "busybox",
        "Volumes": {},
        "WorkingDir": "",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {},
        "HostConfig": host_config,
        "NetworkingConfig": {"EndpointsConfig": {"default": {}}},
    }
    body.update(overrides)
    return body


def _build(
    rootfs: str,
    image: ImageConfig | None = BUSYBOX,
    warnings: list[str] | None = None,
    **body: Any,
) -> dict[str, Any]:
    req = CreateRequest.from_json(_create_body(**body))
    spec = build_spec(CID, req, image, rootfs, hostname=HOSTNAME, host=HOST, warnings=warnings)
    Spec.from_json(spec)  # the runtime's own parser accepts it
    return spec


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    if not SCHEMA_DIR.is_dir():
        pytest.skip(f"no OCI schemas at {SCHEMA_DIR}")
    resources = [
        (path.name, DRAFT4.create_resource(json.loads(path.read_text())))
        for path in sorted(SCHEMA_DIR.glob("*.json"))
    ]
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / "config-schema.json").read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def _mount(spec: dict[str, Any], dest: str) -> dict[str, Any]:
    found = [m for m in spec["mounts"] if m["destination"] == dest]
    assert len(found) == 1, f"{dest}: {found}"
    return found[0]


def _caps(spec: dict[str, Any]) -> list[str]:
    caps: list[str] = spec["process"]["capabilities"]["bounding"]
    return caps


# ------------------------------------------------------------------ the table of docker runs

Check = Callable[[dict[str, Any]], None]


def _expect(path: str, want: Any) -> Check:
    def check(spec: dict[str, Any]) -> None:
        got: Any = spec
        for key in path.split("."):
            got = got[int(key)] if isinstance(got, list) else got.get(key)
        assert got == want, f"{path}: {got!r} != {want!r}"

    check.__name__ = f"{path}=={want!r}"
    return check


CASES: list[tuple[str, dict[str, Any], list[Check]]] = [
    (
        "docker run busybox",
        {},
        [
            _expect("process.args", ["sh"]),
            _expect("process.env", [DEFAULT_PATH, f"HOSTNAME={HOSTNAME}", "HOME=/root"]),
            # runc's GetExecUser: root is a member of wheel in busybox's /etc/group
            _expect("process.user", {"uid": 0, "gid": 0, "additionalGids": [10]}),
            _expect("process.cwd", "/"),
            _expect("process.terminal", False),
            _expect("process.oomScoreAdj", 0),
            _expect("process.capabilities.bounding", list(DEFAULT_CAPABILITIES)),
            _expect("process.capabilities.effective", list(DEFAULT_CAPABILITIES)),
            _expect("process.capabilities.permitted", list(DEFAULT_CAPABILITIES)),
            _expect("process.capabilities.inheritable", None),  # CVE-2022-24769: none
            _expect("process.noNewPrivileges", None),
            _expect("process.rlimits", None),
            _expect("hostname", HOSTNAME),
            _expect("root.readonly", False),
            _expect("linux.cgroupsPath", f"berth/{CID}"),
            _expect("linux.maskedPaths", list(MASKED_PATHS)),
            _expect("linux.readonlyPaths", list(READONLY_PATHS)),
            _expect("linux.resources.memory", None),
            _expect("linux.resources.cpu", None),
            _expect("linux.resources.pids", None),
            _expect(
                "linux.namespaces",
                [{"type": t} for t in ("mount", "network", "uts", "pid", "ipc")],
            ),
        ],
    ),
    (
        "docker run busybox echo hi",
        {"Cmd": ["echo", "hi"]},
        [_expect("process.args", ["echo", "hi"])],
    ),
    (
        "docker run --entrypoint env busybox (the image's Cmd is dropped)",
        {"Entrypoint": ["env"]},
        [_expect("process.args", ["env"])],
    ),
    (
        "docker run --entrypoint echo busybox hi",
        {"Entrypoint": ["echo"], "Cmd": ["hi"]},
        [_expect("process.args", ["echo", "hi"])],
    ),
    (
        'docker run --entrypoint "" busybox id',
        {"Entrypoint": [""], "Cmd": ["id"]},
        [_expect("process.args", ["id"])],
    ),
    (
        "docker run -e FOO=bar -e PATH=/opt/bin -e EMPTY= busybox",
        {"Env": ["FOO=bar", "PATH=/opt/bin", "EMPTY="]},
        [
            _expect(
                "process.env",
                ["PATH=/opt/bin", f"HOSTNAME={HOSTNAME}", "FOO=bar", "EMPTY=", "HOME=/root"],
            )
        ],
    ),
    (
        "docker run -e HOME=/tmp -e HOSTNAME=h busybox",
        {"Env": ["HOME=/tmp", "HOSTNAME=h"]},
        [_expect("process.env", [DEFAULT_PATH, "HOSTNAME=h", "HOME=/tmp"])],
    ),
    (
        "docker run -it busybox",
        {
            "Tty": True,
            "OpenStdin": True,
            "StdinOnce": True,
            "AttachStdin": True,
            "HostConfig": {"ConsoleSize": [40, 120]},
        },
        [
            _expect("process.terminal", True),
            _expect("process.consoleSize", {"height": 40, "width": 120}),
            _expect(
                "process.env", [DEFAULT_PATH, f"HOSTNAME={HOSTNAME}", "TERM=xterm", "HOME=/root"]
            ),
        ],
    ),
    ("docker run -w /app busybox", {"WorkingDir": "/app"}, [_expect("process.cwd", "/app")]),
    ("docker run -w /a/../b/ busybox", {"WorkingDir": "/a/../b/"}, [_expect("process.cwd", "/b")]),
    (
        "docker run -u 1000 busybox (not in passwd: gid 0, home /)",
        {"User": "1000"},
        [
            _expect("process.user", {"uid": 1000, "gid": 0}),
            _expect("process.env.2", "HOME=/"),
            # not root: only the bounding set, as execve would leave it
            _expect("process.capabilities", {"bounding": list(DEFAULT_CAPABILITIES)}),
        ],
    ),
    (
        "docker run -u 1000:1000 busybox",
        {"User": "1000:1000"},
        [_expect("process.user", {"uid": 1000, "gid": 1000})],
    ),
    (
        "docker run -u nobody busybox",
        {"User": "nobody"},
        [
            _expect("process.user", {"uid": 65534, "gid": 65534}),
            _expect("process.env.2", "HOME=/home"),
        ],
    ),
    (
        "docker run -u www-data busybox (supplementary groups from /etc/group)",
        {"User": "www-data"},
        [_expect("process.user", {"uid": 33, "gid": 33, "additionalGids": [50]})],
    ),
    (
        "docker run -u 33 busybox (a uid in passwd takes its gid)",
        {"User": "33"},
        [_expect("process.user", {"uid": 33, "gid": 33, "additionalGids": [50]})],
    ),
    (
        "docker run -u www-data:staff busybox (explicit group: no supplementary groups)",
        {"User": "www-data:staff"},
        [_expect("process.user", {"uid": 33, "gid": 50})],
    ),
    (
        "docker run -u daemon --group-add tty --group-add 4242 busybox",
        {"User": "daemon", "HostConfig": {"GroupAdd": ["tty", "4242"]}},
        [_expect("process.user", {"uid": 1, "gid": 1, "additionalGids": [50, 5, 4242]})],
    ),
    (
        "docker run --hostname web --domainname example.org busybox",
        {"Hostname": "web", "Domainname": "example.org"},
        [_expect("domainname", "example.org")],
    ),
    (
        "docker run --read-only busybox",
        {"HostConfig": {"ReadonlyRootfs": True}},
        [_expect("root.readonly", True)],
    ),
    (
        "docker run --tmpfs /run busybox",
        {"HostConfig": {"Tmpfs": {"/run": ""}}},
        [
            lambda s: _expect_mount(
                s, "/run", "tmpfs", "tmpfs", ["noexec", "nosuid", "nodev", "rprivate"]
            )
        ],
    ),
    (
        "docker run --tmpfs /run:size=64m,exec,mode=1770 busybox",
        {"HostConfig": {"Tmpfs": {"/run": "size=64m,exec,mode=1770"}}},
        [
            lambda s: _expect_mount(
                s,
                "/run",
                "tmpfs",
                "tmpfs",
                ["nosuid", "nodev", "rprivate", "size=64m", "exec", "mode=1770"],
            )
        ],
    ),
    (
        "docker run --shm-size 128m busybox",
        {"HostConfig": {"ShmSize": 128 * 2**20}},
        [
            lambda s: _expect_mount(
                s,
                "/dev/shm",
                "tmpfs",
                "shm",
                ["nosuid", "noexec", "nodev", "mode=1777", "size=134217728"],
            )
        ],
    ),
    (
        "docker run --cap-add NET_ADMIN --cap-drop mknod --cap-add cap_sys_ptrace busybox",
        {"HostConfig": {"CapAdd": ["NET_ADMIN", "cap_sys_ptrace"], "CapDrop": ["mknod"]}},
        [
            lambda s: _expect_caps(
                s,
                [c for c in DEFAULT_CAPABILITIES if c != "CAP_MKNOD"]
                + ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"],
            )
        ],
    ),
    (
        "docker run --cap-drop ALL --cap-add NET_BIND_SERVICE busybox",
        {"HostConfig": {"CapAdd": ["NET_BIND_SERVICE"], "CapDrop": ["ALL"]}},
        [lambda s: _expect_caps(s, ["CAP_NET_BIND_SERVICE"])],
    ),
    (
        "docker run --cap-drop all busybox",
        {"HostConfig": {"CapDrop": ["all"]}},
        [lambda s: _expect_caps(s, [])],
    ),
    (
        "docker run --cap-add ALL --cap-drop SYS_ADMIN busybox",
        {"HostConfig": {"CapAdd": ["ALL"], "CapDrop": ["SYS_ADMIN"]}},
        [lambda s: _expect_caps(s, [c for c in CAPABILITIES if c != "CAP_SYS_ADMIN"])],
    ),
    (
        "docker run --security-opt no-new-privileges busybox",
        {"HostConfig": {"SecurityOpt": ["no-new-privileges"]}},
        [_expect("process.noNewPrivileges", True)],
    ),
    (
        "docker run --security-opt no-new-privileges:true busybox",
        {"HostConfig": {"SecurityOpt": ["no-new-privileges:true"]}},
        [_expect("process.noNewPrivileges", True)],
    ),
    (
        "docker run --security-opt no-new-privileges=false busybox",
        {"HostConfig": {"SecurityOpt": ["no-new-privileges=false"]}},
        [_expect("process.noNewPrivileges", None)],
    ),
    (
        "docker run --security-opt seccomp=unconfined busybox",
        {"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}},
        [_expect("linux.seccomp", None), _expect("linux.maskedPaths", list(MASKED_PATHS))],
    ),
    (
        "docker run -m 64m busybox (swap defaults to twice the memory)",
        {"HostConfig": {"Memory": 64 * 2**20}},
        [_expect("linux.resources.memory", {"limit": 67108864, "swap": 134217728})],
    ),
    (
        "docker run -m 64m --memory-swap -1 busybox",
        {"HostConfig": {"Memory": 64 * 2**20, "MemorySwap": -1}},
        [_expect("linux.resources.memory", {"limit": 67108864, "swap": -1})],
    ),
    (
        "docker run -m 64m --memory-swap 64m busybox (no swap at all)",
        {"HostConfig": {"Memory": 64 * 2**20, "MemorySwap": 64 * 2**20}},
        [_expect("linux.resources.memory", {"limit": 67108864, "swap": 67108864})],
    ),
    (
        "docker run --memory-reservation 32m --memory-swappiness 0 --oom-kill-disable -m 64m",
        {
            "HostConfig": {
                "Memory": 64 * 2**20,
                "MemoryReservation": 32 * 2**20,
                "MemorySwappiness": 0,
                "OomKillDisable": True,
            }
        },
        [
            _expect(
                "linux.resources.memory",
                {
                    "limit": 67108864,
                    "swap": 134217728,
                    "reservation": 33554432,
                    "swappiness": 0,
                    "disableOOMKiller": True,
                },
            )
        ],
    ),
    (
        "docker run --cpus 1.5 busybox",
        {"HostConfig": {"NanoCpus": 1_500_000_000}},
        [_expect("linux.resources.cpu", {"quota": 150000, "period": 100000})],
    ),
    (
        "docker run --cpus 0.01 busybox",
        {"HostConfig": {"NanoCpus": 10_000_000}},
        [_expect("linux.resources.cpu", {"quota": 1000, "period": 100000})],
    ),
    (
        "docker run --cpu-quota 50000 --cpu-period 200000 --cpu-shares 512 busybox",
        {"HostConfig": {"CpuQuota": 50000, "CpuPeriod": 200000, "CpuShares": 512}},
        [_expect("linux.resources.cpu", {"quota": 50000, "period": 200000, "shares": 512})],
    ),
    (
        "docker run --cpuset-cpus 0-1 --cpuset-mems 0 busybox",
        {"HostConfig": {"CpusetCpus": "0-1", "CpusetMems": "0"}},
        [_expect("linux.resources.cpu", {"cpus": "0-1", "mems": "0"})],
    ),
    (
        "docker run --pids-limit 100 busybox",
        {"HostConfig": {"PidsLimit": 100}},
        [_expect("linux.resources.pids", {"limit": 100})],
    ),
    (
        "docker run --pids-limit -1 busybox",
        {"HostConfig": {"PidsLimit": -1}},
        [_expect("linux.resources.pids", None)],
    ),
    (
        "docker run --pids-limit 0 busybox",
        {"HostConfig": {"PidsLimit": 0}},
        [_expect("linux.resources.pids", None)],
    ),
    (
        "docker run --blkio-weight 300 --oom-score-adj 500 busybox",
        {"HostConfig": {"BlkioWeight": 300, "OomScoreAdj": 500}},
        [_expect("linux.resources.blockIO", {"weight": 300}), _expect("process.oomScoreAdj", 500)],
    ),
    (
        "docker run --ulimit nofile=1024:2048 --ulimit nproc=512 busybox",
        {
            "HostConfig": {
                "Ulimits": [
                    {"Name": "nofile", "Soft": 1024, "Hard": 2048},
                    {"Name": "nproc", "Soft": 512, "Hard": 512},
                ]
            }
        },
        [
            _expect(
                "process.rlimits",
                [
                    {"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024},
                    {"type": "RLIMIT_NPROC", "hard": 512, "soft": 512},
                ],
            )
        ],
    ),
    (
        "docker run --ulimit core=-1 busybox (unlimited)",
        {"HostConfig": {"Ulimits": [{"Name": "core", "Soft": -1, "Hard": -1}]}},
        [
            _expect(
                "process.rlimits",
                [{"type": "RLIMIT_CORE", "hard": RLIM_INFINITY, "soft": RLIM_INFINITY}],
            )
        ],
    ),
    (
        "docker run --network none busybox (own netns, lo only)",
        {"HostConfig": {"NetworkMode": "none"}},
        [lambda s: _expect_ns(s, "network", {"type": "network"})],
    ),
    (
        "docker run --network bridge busybox (own netns; bridging is issue 5)",
        {"HostConfig": {"NetworkMode": "bridge"}},
        [lambda s: _expect_ns(s, "network", {"type": "network"})],
    ),
    (
        "docker run --network host busybox",
        {"HostConfig": {"NetworkMode": "host"}},
        [lambda s: _expect_ns(s, "network", None)],
    ),
    (
        "docker run --pid host --ipc host --uts host busybox",
        {"HostConfig": {"PidMode": "host", "IpcMode": "host", "UTSMode": "host"}},
        [
            _expect("linux.namespaces", [{"type": "mount"}, {"type": "network"}]),
            _expect("hostname", None),
            lambda s: _expect_mount(
                s, "/dev/shm", "bind", "/dev/shm", ["rbind", "nosuid", "noexec", "nodev"]
            ),
        ],
    ),
    (
        "docker run --ipc none busybox (no /dev/shm)",
        {"HostConfig": {"IpcMode": "none"}},
        [lambda s: _no_mount(s, "/dev/shm")],
    ),
    (
        "docker run --sysctl net.ipv4.ip_forward=1 --sysctl kernel.shmmax=1000000 busybox",
        {"HostConfig": {"Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000000"}}},
        [_expect("linux.sysctl", {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1000000"})],
    ),
    (
        "docker run --device /dev/null:/dev/mynull:rw busybox",
        {
            "HostConfig": {
                "Devices": [
                    {
                        "PathOnHost": "/dev/null",
                        "PathInContainer": "/dev/mynull",
                        "CgroupPermissions": "rw",
                    }
                ]
            }
        },
        [
            lambda s: _expect_device(s, "/dev/mynull", "c", 1, 3),
            lambda s: _expect_rule_last(
                s, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
            ),
        ],
    ),
]


def _expect_mount(
    spec: dict[str, Any], dest: str, type_: str, source: str, options: list[str]
) -> None:
    assert _mount(spec, dest) == {
        "destination": dest,
        "type": type_,
        "source": source,
        "options": options,
    }


def _no_mount(spec: dict[str, Any], dest: str) -> None:
    assert [m for m in spec["mounts"] if m["destination"] == dest] == []


def _expect_caps(spec: dict[str, Any], caps: list[str]) -> None:
    assert _caps(spec) == caps
    assert spec["process"]["capabilities"]["effective"] == caps


def _expect_ns(spec: dict[str, Any], ns_type: str, want: dict[str, Any] | None) -> None:
    found = [ns for ns in spec["linux"]["namespaces"] if ns["type"] == ns_type]
    assert found == ([] if want is None else [want])


def _expect_device(spec: dict[str, Any], path: str, type_: str, major: int, minor: int) -> None:
    (dev,) = [d for d in spec["linux"]["devices"] if d["path"] == path]
    assert (dev["type"], dev["major"], dev["minor"]) == (type_, major, minor)


def _expect_rule_last(spec: dict[str, Any], rule: dict[str, Any]) -> None:
    assert spec["linux"]["resources"]["devices"][-1] == rule


@pytest.mark.parametrize(("run", "body", "checks"), CASES, ids=[c[0] for c in CASES])
def test_docker_run_table(rootfs: str, run: str, body: dict[str, Any], checks: list[Check]) -> None:
    spec = _build(rootfs, **body)
    for check in checks:
        check(spec)


@pytest.mark.parametrize(("run", "body"), [(c[0], c[1]) for c in CASES], ids=[c[0] for c in CASES])
def test_every_table_spec_validates_against_the_oci_schema(
    rootfs: str, run: str, body: dict[str, Any]
) -> None:
    validator = _validator()
    spec = _build(rootfs, **body)
    assert [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(spec)] == []


# ------------------------------------------------------------------ what every container gets


def test_docker_mounts_in_dockers_order(rootfs: str) -> None:
    spec = _build(rootfs)
    got = [(m["destination"], m["type"], m["source"], m.get("options")) for m in spec["mounts"]]
    assert got == [
        ("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        ("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ("/dev/pts", "devpts", "devpts",
         ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        ("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        ("/sys/fs/cgroup", "cgroup", "cgroup", ["ro", "nosuid", "noexec", "nodev"]),
        ("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        ("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]),
    ]  # fmt: skip


def test_dockers_masked_paths_differ_from_runcs() -> None:
    from berth.spec.defaults import MASKED_PATHS as RUNC_MASKED

    assert set(MASKED_PATHS) - set(RUNC_MASKED) == {"/sys/devices/virtual/powercap"}
    assert READONLY_PATHS == (
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    )


def test_fourteen_default_capabilities() -> None:
    assert len(DEFAULT_CAPABILITIES) == 14
    assert set(DEFAULT_CAPABILITIES) <= set(CAPABILITIES)
    for dangerous in ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE"):
        assert dangerous not in DEFAULT_CAPABILITIES


def test_devices_cgroup_denies_all_then_allows_dockers_list(rootfs: str) -> None:
    rules = _build(rootfs)["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r["major"], r["minor"]) for r in rules[1:] if r["allow"]}
    assert allowed == {("c", 1, 5), ("c", 1, 3), ("c", 1, 9), ("c", 1, 8), ("c", 5, 0), ("c", 5, 1)}
    assert rules[-1] == {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"}


def test_default_seccomp_follows_the_capabilities(rootfs: str) -> None:
    plain = _build(rootfs)["linux"]["seccomp"]
    admin = _build(rootfs, HostConfig={"CapAdd": ["SYS_ADMIN"]})["linux"]["seccomp"]
    assert plain["defaultAction"] == "SCMP_ACT_ERRNO"
    assert not any("mount" in r["names"] for r in plain["syscalls"])
    assert any("mount" in r["names"] and r["action"] == "SCMP_ACT_ALLOW" for r in admin["syscalls"])


def test_privileged(rootfs: str) -> None:
    host_devs = [{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]
    req = CreateRequest.from_json(_create_body(HostConfig={"Privileged": True}))
    spec = build_spec(
        CID, req, BUSYBOX, rootfs, hostname=HOSTNAME, host=HOST, host_devices=lambda: host_devs
    )
    Spec.from_json(spec)
    assert _caps(spec) == list(CAPABILITIES)
    linux = spec["linux"]
    assert "seccomp" not in linux and "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert linux["devices"] == host_devs
    assert "ro" not in _mount(spec, "/sys")["options"]
    assert "ro" not in _mount(spec, "/sys/fs/cgroup")["options"]
    assert [e.message for e in _validator().iter_errors(spec)] == []


def test_custom_seccomp_profile_in_dockers_format(rootfs: str) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": [
            {"name": "mkdir", "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {
                "names": ["chmod"],
                "action": "SCMP_ACT_ERRNO",
                "includes": {"caps": ["CAP_SYS_ADMIN"]},
            },
            {
                "names": ["chown"],
                "action": "SCMP_ACT_ERRNO",
                "excludes": {"caps": ["CAP_SYS_ADMIN"]},
            },
        ],
    }
    spec = _build(rootfs, HostConfig={"SecurityOpt": ["seccomp=" + json.dumps(profile)]})
    seccomp = spec["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    assert seccomp["syscalls"] == [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["chown"], "action": "SCMP_ACT_ERRNO"},
    ]


def test_image_config_is_merged_as_docker_does(rootfs: str) -> None:
    image = _image(
        entrypoint=("/entry.sh",),
        cmd=("serve", "--port", "80"),
        env=("PATH=/usr/local/bin:/bin", "LANG=C.UTF-8", "FOO=image"),
        working_dir="/srv",
        user="www-data",
    )
    spec = _build(rootfs, image, Env=["FOO=request", "LANG"])
    assert spec["process"]["args"] == ["/entry.sh", "serve", "--port", "80"]
    # request env first, then the image's it does not name; "LANG" alone unsets it
    assert spec["process"]["env"] == [
        "PATH=/usr/local/bin:/bin",
        f"HOSTNAME={HOSTNAME}",
        "FOO=request",
        "HOME=/var/www",
    ]
    assert spec["process"]["cwd"] == "/srv"
    assert spec["process"]["user"]["uid"] == 33
    spec = _build(rootfs, image, Cmd=["shell"], User="0", WorkingDir="/tmp")
    assert spec["process"]["args"] == ["/entry.sh", "shell"]
    assert spec["process"]["user"]["uid"] == 0 and spec["process"]["cwd"] == "/tmp"
    spec = _build(rootfs, image, Entrypoint=["sh", "-c"], Cmd=None)
    assert spec["process"]["args"] == ["sh", "-c"]  # the image's Cmd is not appended


def test_helpers_for_the_engine() -> None:
    req = CreateRequest.from_json(_create_body(Env=["A=1"], Cmd=["x"]))
    image = ContainerConfig(env=("A=0", "B=2"), entrypoint=("e",), cmd=("c",))
    assert config_env(req, image) == ["A=1", "B=2"]
    assert entrypoint_and_cmd(req, image) == (["e"], ["x"])
    assert entrypoint_and_cmd(req, None) == ([], ["x"])


def test_no_image_and_no_command(rootfs: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^No command specified$"):
        _build(rootfs, None)
    with pytest.raises(InvalidArgument, match=r"^No command specified$"):
        _build(rootfs, BUSYBOX, Entrypoint=[""])


def test_request_is_kept_for_the_engine() -> None:
    body = _create_body(Labels={"app": "web"}, Cmd="echo hi", StopSignal="SIGINT", StopTimeout=3)
    req = CreateRequest.from_json(body)
    assert req.labels == {"app": "web"}
    assert req.cmd == ("echo hi",)  # Docker's StrSlice: one string is one argument
    assert (req.stop_signal, req.stop_timeout, req.raw) == ("SIGINT", 3, body)
    assert req.host_config.network_mode == "default"
    assert req.host_config.shm_size == 64 * 2**20


# ------------------------------------------------------------------ users


def test_resolve_user_without_passwd(tmp_path: Path) -> None:
    assert resolve_user(str(tmp_path), "") == (0, 0, [], "/")
    assert resolve_user(str(tmp_path), "42:7") == (42, 7, [], "/")
    with pytest.raises(
        InvalidArgument, match=r"^unable to find user app: no matching entries in passwd file$"
    ):
        resolve_user(str(tmp_path), "app")


# ------------------------------------------------------------------ rlimits and warnings


def test_ulimit_above_the_hosts_hard_limit_is_clamped_with_a_warning(rootfs: str) -> None:
    warnings: list[str] = []
    spec = _build(
        rootfs,
        warnings=warnings,
        HostConfig={"Ulimits": [{"Name": "nofile", "Soft": 1048576, "Hard": 1048576}]},
    )
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000}]
    assert warnings == [
        "--ulimit nofile=1048576:1048576 is above this host's hard limit 20000: "
        "clamped to 20000:20000"
    ]


def test_ulimit_soft_below_the_clamp_is_kept(rootfs: str) -> None:
    warnings: list[str] = []
    spec = _build(
        rootfs,
        warnings=warnings,
        HostConfig={"Ulimits": [{"Name": "nofile", "Soft": 1024, "Hard": -1}]},
    )
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 1024}]
    assert len(warnings) == 1 and "unlimited" in warnings[0]


def test_cpu_shares_out_of_range_are_moved_with_dockers_warning(rootfs: str) -> None:
    warnings: list[str] = []
    spec = _build(rootfs, warnings=warnings, HostConfig={"CpuShares": 1})
    assert spec["linux"]["resources"]["cpu"] == {"shares": 2}
    assert warnings == ["Changing requested CPUShares of 1 to minimum allowed of 2"]


def test_oom_kill_disable_without_memory_warns(rootfs: str) -> None:
    warnings: list[str] = []
    _build(rootfs, warnings=warnings, HostConfig={"OomKillDisable": True})
    assert warnings and warnings[0].startswith("OOM killer is disabled for the container")


def test_host_facts_probe_reads_this_host() -> None:
    facts = HostFacts.probe()
    assert facts.cpus and 0 in facts.mems
    assert facts.hard_limits["RLIMIT_NOFILE"] >= 1


# ------------------------------------------------------------------ namespaces to join


def test_container_modes_join_the_paths_the_engine_gives(rootfs: str) -> None:
    req = CreateRequest.from_json(
        _create_body(
            HostConfig={
                "NetworkMode": "container:web",
                "IpcMode": "container:web",
                "PidMode": "container:web",
            }
        )
    )
    paths = {"network": "/proc/77/ns/net", "ipc": "/proc/77/ns/ipc", "pid": "/proc/77/ns/pid"}
    spec = build_spec(
        CID, req, BUSYBOX, rootfs, hostname=HOSTNAME, host=HOST, namespace_paths=paths
    )
    Spec.from_json(spec)
    assert spec["linux"]["namespaces"] == [
        {"type": "mount"},
        {"type": "network", "path": "/proc/77/ns/net"},
        {"type": "uts"},
        {"type": "pid", "path": "/proc/77/ns/pid"},
        {"type": "ipc", "path": "/proc/77/ns/ipc"},
    ]
    assert _mount(spec, "/dev/shm")["source"] == "/proc/77/root/dev/shm"
    with pytest.raises(InvalidArgument, match="no network namespace to join"):
        build_spec(CID, req, BUSYBOX, rootfs, hostname=HOSTNAME, host=HOST)


@pytest.mark.parametrize(
    ("mode", "v2", "has_cgroupns"),
    [("", False, False), ("", True, True), ("private", False, True), ("host", True, False)],
)
def test_cgroup_namespace_as_dockerd_defaults_it(
    rootfs: str, mode: str, v2: bool, has_cgroupns: bool
) -> None:
    req = CreateRequest.from_json(_create_body(HostConfig={"CgroupnsMode": mode}))
    host = HostFacts(cpus=HOST.cpus, mems=HOST.mems, hard_limits={}, cgroup_v2=v2)
    spec = build_spec(CID, req, BUSYBOX, rootfs, hostname=HOSTNAME, host=host)
    assert ({"type": "cgroup"} in spec["linux"]["namespaces"]) is has_cgroupns


def test_annotations_are_passed_through(rootfs: str) -> None:
    req = CreateRequest.from_json(_create_body(Cmd=["true"]))
    spec = build_spec(
        CID, req, None, rootfs, hostname="h", host=HOST, annotations={"org.berth.name": "web"}
    )
    assert spec["annotations"] == {"org.berth.name": "web", LOOPBACK_ANNOTATION: "up"}
    assert spec["root"] == {"path": rootfs, "readonly": False}


def test_lo_is_brought_up_only_in_a_network_namespace_of_its_own(rootfs: str) -> None:
    """The runtime raises lo in a namespace the container makes; one the engine pinned (a
    path) already has it up, and a joined one is someone else's."""

    def spec_of(mode: str, pinned: bool) -> dict[str, Any]:
        req = CreateRequest.from_json(_create_body(Cmd=["true"], HostConfig={"NetworkMode": mode}))
        paths = {"network": "/proc/1/ns/net"} if pinned or mode.startswith("container:") else {}
        return build_spec(CID, req, None, rootfs, hostname="h", host=HOST, namespace_paths=paths)

    def annotations(mode: str, pinned: bool = False) -> dict[str, str]:
        return dict(spec_of(mode, pinned).get("annotations") or {})

    assert annotations("none") == {LOOPBACK_ANNOTATION: "up"}
    assert annotations("default") == {LOOPBACK_ANNOTATION: "up"}
    assert annotations("default", pinned=True) == {}
    assert annotations("host") == {}
    assert annotations("container:abc") == {}
    network = [n for n in spec_of("net1", True)["linux"]["namespaces"] if n["type"] == "network"]
    assert network == [{"type": "network", "path": "/proc/1/ns/net"}]


# ------------------------------------------------------------------ every error message

PARSE_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("-m 4m", {"HostConfig": {"Memory": 4 * 2**20}}, "Minimum memory limit allowed is 6MB"),
    (
        "-m 64m --memory-swap 32m",
        {"HostConfig": {"Memory": 64 * 2**20, "MemorySwap": 32 * 2**20}},
        "Minimum memoryswap limit should be larger than memory limit, see usage",
    ),
    (
        "--memory-swap 64m",
        {"HostConfig": {"MemorySwap": 64 * 2**20}},
        "You should always set the Memory limit when using Memoryswap limit, see usage",
    ),
    (
        "--memory-reservation 1m",
        {"HostConfig": {"MemoryReservation": 2**20}},
        "Minimum memory reservation allowed is 6MB",
    ),
    (
        "-m 32m --memory-reservation 64m",
        {"HostConfig": {"Memory": 32 * 2**20, "MemoryReservation": 64 * 2**20}},
        "Minimum memory limit can not be less than memory reservation limit, see usage",
    ),
    (
        "--memory-swappiness 101",
        {"HostConfig": {"MemorySwappiness": 101}},
        "Invalid value: 101, valid memory swappiness range is 0-100",
    ),
    (
        "--cpus 1 --cpu-period 1000",
        {"HostConfig": {"NanoCpus": 10**9, "CpuPeriod": 100000}},
        "Conflicting options: Nano CPUs and CPU Period cannot both be set",
    ),
    (
        "--cpus 1 --cpu-quota 1000",
        {"HostConfig": {"NanoCpus": 10**9, "CpuQuota": 100000}},
        "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
    ),
    (
        "--cpu-period 100",
        {"HostConfig": {"CpuPeriod": 100}},
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
    ),
    (
        "--cpu-quota 100",
        {"HostConfig": {"CpuQuota": 100}},
        "CPU cfs quota can not be less than 1ms (i.e. 1000)",
    ),
    (
        "--cpu-shares -1",
        {"HostConfig": {"CpuShares": -1}},
        "invalid CPU shares (-1): value must be a positive integer",
    ),
    ("--cpuset-cpus x", {"HostConfig": {"CpusetCpus": "x"}}, "Invalid value x for cpuset cpus"),
    (
        "--cpuset-cpus 3-1",
        {"HostConfig": {"CpusetCpus": "3-1"}},
        "Invalid value 3-1 for cpuset cpus",
    ),
    ("--cpuset-mems 0,", {"HostConfig": {"CpusetMems": "0,"}}, "Invalid value 0, for cpuset mems"),
    (
        "--blkio-weight 5",
        {"HostConfig": {"BlkioWeight": 5}},
        "Range of blkio weight is from 10 to 1000",
    ),
    (
        "--oom-score-adj 1001",
        {"HostConfig": {"OomScoreAdj": 1001}},
        "Invalid value 1001, range for oom score adj is [-1000, 1000]",
    ),
    ("--shm-size -1", {"HostConfig": {"ShmSize": -1}}, "SHM size can not be less than 0"),
    ("--cap-add FOO", {"HostConfig": {"CapAdd": ["FOO"]}}, 'unknown capability: "CAP_FOO"'),
    (
        "--cap-drop cap_bar",
        {"HostConfig": {"CapDrop": ["cap_bar"]}},
        'unknown capability: "CAP_BAR"',
    ),
    (
        "--security-opt foo",
        {"HostConfig": {"SecurityOpt": ["foo"]}},
        'invalid --security-opt 1: "foo"',
    ),
    (
        "--security-opt foo=bar",
        {"HostConfig": {"SecurityOpt": ["foo=bar"]}},
        'invalid --security-opt 2: "foo=bar"',
    ),
    (
        "--security-opt no-new-privileges=maybe",
        {"HostConfig": {"SecurityOpt": ["no-new-privileges=maybe"]}},
        'invalid --security-opt 2: "no-new-privileges=maybe"',
    ),
    (
        "--security-opt seccomp=<not json>",
        {"HostConfig": {"SecurityOpt": ["seccomp={nope"]}},
        "Decoding seccomp profile failed: ",
    ),
    (
        "--ulimit bogus=1",
        {"HostConfig": {"Ulimits": [{"Name": "bogus", "Soft": 1, "Hard": 1}]}},
        "invalid ulimit type: bogus",
    ),
    (
        "--ulimit nofile=10:5",
        {"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 10, "Hard": 5}]}},
        "ulimit soft limit must be less than or equal to hard limit: 10 > 5",
    ),
    (
        "--tmpfs run",
        {"HostConfig": {"Tmpfs": {"run": ""}}},
        'invalid mount config for type "tmpfs": '
        "invalid mount path: 'run' mount path must be absolute",
    ),
    (
        "--tmpfs /run:bogus",
        {"HostConfig": {"Tmpfs": {"/run": "bogus"}}},
        'Invalid tmpfs option ["bogus"]',
    ),
    (
        "--tmpfs /run:foo=1",
        {"HostConfig": {"Tmpfs": {"/run": "foo=1"}}},
        'Invalid tmpfs option ["foo" "1"]',
    ),
    (
        "-w rel",
        {"WorkingDir": "rel"},
        "the working directory 'rel' is invalid, it needs to be an absolute path",
    ),
    ("--hostname -bad", {"Hostname": "-bad"}, "invalid hostname format: -bad"),
    (
        "--sysctl kernel.panic=1",
        {"HostConfig": {"Sysctls": {"kernel.panic": "1"}}},
        "sysctl 'kernel.panic' is not whitelisted",
    ),
    ("--pid container:", {"HostConfig": {"PidMode": "container:"}}, "invalid PID mode: container:"),
    (
        "--uts container:x",
        {"HostConfig": {"UTSMode": "container:x"}},
        "invalid UTS mode: container:x",
    ),
    ("--ipc bogus", {"HostConfig": {"IpcMode": "bogus"}}, "invalid IPC mode: bogus"),
    (
        "--cgroupns bogus",
        {"HostConfig": {"CgroupnsMode": "bogus"}},
        "invalid cgroup namespace mode: bogus",
    ),
    (
        "--device rel",
        {"HostConfig": {"Devices": [{"PathOnHost": "/dev/null", "PathInContainer": "rel"}]}},
        "rel is not an absolute path",
    ),
    (
        "--device /dev/null:/dev/x:z",
        {"HostConfig": {"Devices": [{"PathOnHost": "/dev/null", "CgroupPermissions": "z"}]}},
        "invalid device cgroup permissions: z",
    ),
    (
        "--memory foo (a string)",
        {"HostConfig": {"Memory": "foo"}},
        "json: cannot unmarshal string into Go struct field HostConfig.Memory of type int64",
    ),
    (
        "Cmd as a number",
        {"Cmd": 5},
        "json: cannot unmarshal number into Go struct field Config.Cmd of type []string",
    ),
    (
        "Tty as a string",
        {"Tty": "yes"},
        "json: cannot unmarshal string into Go struct field Config.Tty of type bool",
    ),
    ("no image", {"Image": ""}, "Config.Image: an image is required"),
]


@pytest.mark.parametrize(
    ("flags", "body", "message"), PARSE_ERRORS, ids=[e[0] for e in PARSE_ERRORS]
)
def test_parse_errors_are_dockers(flags: str, body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        CreateRequest.from_json(_create_body(**body))
    if message.endswith(": "):
        assert info.value.message.startswith(message)
    else:
        assert info.value.message == message


BUILD_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "-u nosuch",
        {"User": "nosuch"},
        "unable to find user nosuch: no matching entries in passwd file",
    ),
    (
        "-u root:nosuch",
        {"User": "root:nosuch"},
        "unable to find group nosuch: no matching entries in group file",
    ),
    (
        "--group-add nosuch",
        {"HostConfig": {"GroupAdd": ["nosuch"]}},
        "unable to find group nosuch: no matching entries in group file",
    ),
    ("-u 4294967296", {"User": "4294967296"}, "uids and gids must be in range 0-2147483647"),
    (
        "--cpus 3 (2 CPUs)",
        {"HostConfig": {"NanoCpus": 3 * 10**9}},
        "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available",
    ),
    (
        "--cpuset-cpus 0-3 (2 CPUs)",
        {"HostConfig": {"CpusetCpus": "0-3"}},
        "Requested CPUs are not available - requested 0-3, available: 0-1",
    ),
    (
        "--cpuset-mems 1",
        {"HostConfig": {"CpusetMems": "1"}},
        "Requested memory nodes are not available - requested 1, available: 0",
    ),
    (
        "--device /dev/nosuch",
        {"HostConfig": {"Devices": [{"PathOnHost": "/dev/nosuch"}]}},
        'error gathering device information while adding custom device "/dev/nosuch": '
        "no such file or directory",
    ),
    (
        "--device /etc/hostname (not a device)",
        {"HostConfig": {"Devices": [{"PathOnHost": "/"}]}},
        'error gathering device information while adding custom device "/": not a device node',
    ),
    (
        "--network host --sysctl net.x=1",
        {"HostConfig": {"NetworkMode": "host", "Sysctls": {"net.ipv4.ip_forward": "1"}}},
        "sysctl 'net.ipv4.ip_forward' is not allowed in host network namespace",
    ),
]


@pytest.mark.parametrize(
    ("flags", "body", "message"), BUILD_ERRORS, ids=[e[0] for e in BUILD_ERRORS]
)
def test_build_errors_are_dockers(
    rootfs: str, flags: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        _build(rootfs, **body)
    assert info.value.message == message


def test_errors_map_to_400() -> None:
    pytest.importorskip("aiohttp")
    from berth.engine.api_errors import status_of

    with pytest.raises(InvalidArgument) as info:
        CreateRequest.from_json(_create_body(HostConfig={"Memory": 1}))
    assert status_of(info.value) == 400
