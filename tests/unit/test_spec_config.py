"""berth.spec.config: Spec.from_json on runc's default, the spec's full example, and broken input.

Rules: pure data, no I/O beyond reading the shared example; every refusal is an
``InvalidArgument`` whose message names the dotted path of the field at fault.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument
from berth.spec.config import Capabilities, Namespace, Spec
from berth.spec.defaults import default_spec

EXAMPLE = Path("/work/shared/specs/oci-runtime/example-config.json")
_here = Path(__file__).resolve().parents[3] / "shared" / "specs" / "oci-runtime"
if (_here / "example-config.json").is_file():
    EXAMPLE = _here / "example-config.json"


def _example() -> dict[str, Any]:
    if not EXAMPLE.is_file():
        pytest.skip(f"no example config at {EXAMPLE}")
    data: dict[str, Any] = json.loads(EXAMPLE.read_text())
    return data


def _minimal() -> dict[str, Any]:
    return {
        "ociVersion": "1.2.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
        "hooks": {"prestart": [{"path": "/bin/true"}]},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}],
            "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}],
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["chmod"],
                        "action": "SCMP_ACT_ERRNO",
                        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}],
                    }
                ],
            },
        },
    }


# --------------------------------------------------------------------------- valid documents


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_parses(rootless: bool) -> None:
    spec = Spec.from_json(default_spec(rootless=rootless))
    assert spec.oci_version == "1.0.2-dev"
    assert spec.root is not None
    assert spec.root.path == "rootfs"
    assert spec.root.readonly is True
    assert spec.process is not None
    assert spec.process.args == ("sh",)
    assert spec.process.terminal is True
    assert spec.process.no_new_privileges is True
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.bounding == (
        "CAP_AUDIT_WRITE",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
    )
    assert spec.process.capabilities.inheritable == ()
    assert [r.type for r in spec.process.rlimits] == ["RLIMIT_NOFILE"]
    assert spec.hostname == "runc"
    assert [m.destination for m in spec.mounts][:2] == ["/proc", "/dev"]
    assert spec.mounts[1].options == ("nosuid", "strictatime", "mode=755", "size=65536k")
    assert (spec.linux.namespace("user") is not None) is rootless
    assert (spec.linux.namespace("network") is not None) is not rootless
    assert "/proc/kcore" in spec.linux.masked_paths
    assert "/proc/sys" in spec.linux.readonly_paths
    if rootless:
        assert spec.linux.uid_mappings[0].size == 1
        assert spec.linux.resources is None
    else:
        assert spec.linux.resources is not None
        assert spec.linux.resources.devices[0].allow is False
        assert spec.linux.resources.devices[0].access == "rwm"


def _check_example_values(spec: Spec) -> None:
    assert spec.process is not None
    assert spec.process.user.uid == 1
    assert spec.process.user.additional_gids == (5, 6)
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.ambient == ("CAP_NET_BIND_SERVICE",)
    assert [(r.type, r.soft, r.hard) for r in spec.process.rlimits] == [
        ("RLIMIT_CORE", 1024, 1024),
        ("RLIMIT_NOFILE", 1024, 1024),
    ]
    assert spec.process.apparmor_profile == "acme_secure_profile"
    assert spec.domainname == "foobarbaz.test"
    assert spec.hooks["poststart"][0].timeout == 5
    assert spec.hooks["prestart"][0].args == ("fix-mounts", "arg1", "arg2")
    assert spec.hooks["createContainer"][0].path == "/usr/bin/mount-hook"
    assert [d.type for d in spec.linux.devices] == ["c", "b"]
    assert spec.linux.devices[0].file_mode == 438
    assert spec.linux.uid_mappings[0].host_id == 1000
    assert spec.linux.sysctl["net.core.somaxconn"] == "256"
    assert spec.linux.rootfs_propagation == "slave"
    res = spec.linux.resources
    assert res is not None
    assert res.pids_limit == 32771
    assert res.memory is not None
    assert res.memory.kernel == -1
    assert res.cpu is not None
    assert res.cpu.cpus == "2-3"
    assert res.blkio_weight == 10
    assert res.devices[2].access == "r"
    assert spec.linux.seccomp is not None
    assert spec.linux.seccomp.syscalls[0].names == ("getcwd", "chmod")
    assert len(spec.linux.namespaces) == 8
    assert spec.linux.namespace("time") == Namespace("time")
    assert spec.annotations["com.example.key2"] == "value2"


def test_example_config_parses_with_a_1x_version() -> None:
    data = _example()
    data["ociVersion"] = "1.2.0"
    _check_example_values(Spec.from_json(data))


def test_example_config_parses_as_is() -> None:
    # runc does not check ociVersion, so neither does berth: the example's '0.5.0-dev' is fine
    spec = Spec.from_json(_example())
    assert spec.oci_version == "0.5.0-dev"
    _check_example_values(spec)


@pytest.mark.parametrize("version", ["2.0", "2.0.0", "0.5.0-dev", "1.0.2-dev"])
def test_oci_version_is_any_string(version: str) -> None:
    doc = _minimal()
    doc["ociVersion"] = version
    assert Spec.from_json(doc).oci_version == version


def test_unknown_fields_are_ignored() -> None:
    data = _minimal()
    data["linux"]["intelRdt"] = {"closID": "x"}
    data["vm"] = {"hypervisor": {"path": "/x"}}
    assert Spec.from_json(data).root is not None


def test_optional_sections_default() -> None:
    spec = Spec.from_json({"ociVersion": "1.0.0"})
    assert spec.root is None
    assert spec.process is None
    assert spec.mounts == ()
    assert spec.hooks["poststop"] == ()
    assert spec.linux.namespaces == ()
    assert spec.linux.rootfs_propagation == ""


def test_pipe_device_needs_no_numbers() -> None:
    data = _minimal()
    data["linux"]["devices"] = [{"path": "/dev/fifo", "type": "p"}]
    assert Spec.from_json(data).linux.devices[0].major == 0


# --------------------------------------------------------------------------- broken documents


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b[1].c`` in ``doc``; the value ``DELETE`` removes the key instead."""
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, rest = piece.partition("[")
        parts.append(name)
        if rest:
            parts.extend(int(i) for i in rest.rstrip("]").split("]["))
    target: Any = doc
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value


DELETE = object()

BROKEN = [
    # (field to set, value, dotted path the message must name)
    ("ociVersion", DELETE, "ociVersion"),
    ("ociVersion", 1, "ociVersion"),
    ("root", "rootfs", "root"),
    ("root.path", DELETE, "root.path"),
    ("root.readonly", "yes", "root.readonly"),
    ("hostname", 7, "hostname"),
    ("annotations", {"a": 1}, "annotations"),
    ("process.args", DELETE, "process.args"),
    ("process.args", [], "process.args"),
    ("process.args", "sh", "process.args"),
    ("process.args", ["sh", 1], "process.args"),
    ("process.cwd", DELETE, "process.cwd"),
    ("process.cwd", "tmp", "process.cwd"),
    ("process.env", ["PATH=/bin", "NOEQUALS"], "process.env[1]"),
    ("process.terminal", "true", "process.terminal"),
    ("process.user", [], "process.user"),
    ("process.user.uid", "0", "process.user.uid"),
    ("process.user.uid", -1, "process.user.uid"),
    ("process.user.uid", 2**32, "process.user.uid"),
    ("process.user.uid", True, "process.user.uid"),
    ("process.user.uid", DELETE, "process.user.uid"),
    ("process.user.gid", 1.5, "process.user.gid"),
    ("process.user.umask", 0o10000, "process.user.umask"),
    ("process.user.additionalGids", "5", "process.user.additionalGids"),
    ("process.user.additionalGids", ["5"], "process.user.additionalGids[0]"),
    ("process.user.additionalGids", [5, True], "process.user.additionalGids[1]"),
    ("process.user.additionalGids", [5, -1], "process.user.additionalGids[1]"),
    ("process.user.additionalGids", [2**32], "process.user.additionalGids[0]"),
    ("process.capabilities", {"bounding": "CAP_KILL"}, "process.capabilities.bounding"),
    ("process.rlimits", [{"type": "NOFILE", "hard": 1, "soft": 1}], "process.rlimits[0].type"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 1}], "process.rlimits[0].hard"),
    ("process.rlimits", [{"type": "RLIMIT_CORE", "hard": -1, "soft": 0}], "process.rlimits[0]"),
    ("process.oomScoreAdj", 1001, "process.oomScoreAdj"),
    ("process.consoleSize", {"height": "24"}, "process.consoleSize.height"),
    ("mounts", {}, "mounts"),
    ("mounts[0]", "proc", "mounts[0]"),
    ("mounts[0].destination", DELETE, "mounts[0].destination"),
    ("mounts[0].destination", 5, "mounts[0].destination"),
    ("mounts[0].destination", "", "mounts[0].destination"),
    ("mounts[0].options", "ro", "mounts[0].options"),
    ("mounts[0].type", ["proc"], "mounts[0].type"),
    ("hooks", [], "hooks"),
    ("hooks", {"postStart": [{"path": "/x"}]}, "hooks"),
    ("hooks.prestart[0].path", "true", "hooks.prestart[0].path"),
    ("hooks.prestart[0].path", DELETE, "hooks.prestart[0].path"),
    ("hooks.prestart[0].timeout", 0, "hooks.prestart[0].timeout"),
    ("linux", "yes", "linux"),
    ("linux.namespaces[1].type", "net", "linux.namespaces[1].type"),
    ("linux.namespaces[1].type", DELETE, "linux.namespaces[1].type"),
    ("linux.namespaces[1]", {"type": "pid"}, "linux.namespaces[1]"),
    ("linux.namespaces[0].path", 3, "linux.namespaces[0].path"),
    ("linux.rootfsPropagation", "recursive", "linux.rootfsPropagation"),
    ("linux.devices[0].type", "x", "linux.devices[0].type"),
    ("linux.devices[0].major", DELETE, "linux.devices[0].major"),
    ("linux.devices[0].fileMode", 0o20000, "linux.devices[0].fileMode"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": 0, "size": 0}], "linux.uidMappings[0]"),
    ("linux.sysctl", {"net.ipv4.ip_forward": 1}, "linux.sysctl"),
    ("linux.resources.devices[0].access", "rwx", "linux.resources.devices[0].access"),
    ("linux.resources.devices[0].type", "p", "linux.resources.devices[0].type"),
    ("linux.resources.devices[0].allow", "no", "linux.resources.devices[0].allow"),
    ("linux.resources.memory", {"swappiness": 101}, "linux.resources.memory.swappiness"),
    ("linux.resources.pids", {}, "linux.resources.pids.limit"),
    ("linux.resources.blockIO", {"weight": 5}, "linux.resources.blockIO.weight"),
    ("linux.resources.cpu", {"shares": "1024"}, "linux.resources.cpu.shares"),
    ("linux.seccomp.defaultAction", DELETE, "linux.seccomp.defaultAction"),
    ("linux.seccomp.syscalls[0].names", [], "linux.seccomp.syscalls[0].names"),
    ("linux.seccomp.syscalls[0].args[0].op", "EQ", "linux.seccomp.syscalls[0].args[0].op"),
    ("linux.seccomp.syscalls[0].args[0].index", 6, "linux.seccomp.syscalls[0].args[0].index"),
]


@pytest.mark.parametrize(
    ("where", "bad", "named"),
    BROKEN,
    ids=[f"{w}={'DELETE' if b is DELETE else b!r}" for w, b, _ in BROKEN],
)
def test_broken_document_names_the_field(where: str, bad: Any, named: str) -> None:
    doc = _minimal()
    _set(doc, where, bad)
    with pytest.raises(InvalidArgument) as info:
        Spec.from_json(doc)
    message = info.value.message
    assert message.startswith(named + ":") or message.startswith(named + "."), message


@pytest.mark.parametrize(
    ("where", "bad", "shown"),
    [
        ("linux.namespaces[1].type", "net", "'net'"),
        ("linux.rootfsPropagation", "recursive", "'recursive'"),
        ("linux.devices[0].type", "x", "'x'"),
        ("process.rlimits", [{"type": "NOFILE", "hard": 1, "soft": 1}], "'NOFILE'"),
        ("hooks", {"postStart": [{"path": "/x"}]}, "'postStart'"),
        ("process.cwd", "tmp", "'tmp'"),
        ("process.env", ["NOEQUALS"], "'NOEQUALS'"),
        ("linux.namespaces[1]", {"type": "pid"}, "'pid'"),
        ("ociVersion", 2, "2"),
        ("process.user.additionalGids", [7, 2**32], "4294967296"),
        ("process.user.additionalGids", [-1], "-1"),
        ("process.user.uid", "0", "'0'"),
        ("linux.seccomp.syscalls[0].args[0].op", "EQ", "'EQ'"),
    ],
)
def test_message_shows_the_bad_value(where: str, bad: Any, shown: str) -> None:
    doc = _minimal()
    _set(doc, where, bad)
    with pytest.raises(InvalidArgument) as info:
        Spec.from_json(doc)
    assert shown in info.value.message


def test_enum_messages_list_the_allowed_values() -> None:
    doc = _minimal()
    doc["linux"]["namespaces"][1]["type"] = "net"
    with pytest.raises(InvalidArgument, match=r"pid, network, mount"):
        Spec.from_json(doc)


def test_not_an_object() -> None:
    with pytest.raises(InvalidArgument, match=r"^config: expected an object"):
        Spec.from_json([])


def test_long_values_are_shortened_in_messages() -> None:
    doc = _minimal()
    doc["hostname"] = ["x" * 500]
    with pytest.raises(InvalidArgument) as info:
        Spec.from_json(doc)
    assert len(info.value.message) < 120
    assert info.value.message.endswith("...")


def test_parsing_does_not_modify_the_input() -> None:
    doc = default_spec()
    before = copy.deepcopy(doc)
    Spec.from_json(doc)
    assert doc == before


# ------------------------------------------------------- capabilities, gids, mount destinations


def test_empty_capabilities_object_means_no_capabilities() -> None:
    # {} is five empty sets, as runc reads it, not None ('leave every set alone')
    doc = _minimal()
    doc["process"]["capabilities"] = {}
    spec = Spec.from_json(doc)
    assert spec.process is not None
    caps = spec.process.capabilities
    assert caps is not None
    assert caps == Capabilities()
    assert (caps.bounding, caps.effective, caps.inheritable, caps.permitted, caps.ambient) == (
        (),
        (),
        (),
        (),
        (),
    )


def test_empty_seccomp_object_means_no_filter_as_in_runc() -> None:
    # runc's SetupSeccomp: no defaultAction and no syscalls means seccomp is disabled ...
    doc = _minimal()
    doc["linux"]["seccomp"] = {}
    assert Spec.from_json(doc).linux.seccomp is None
    # ... but syscall rules without a default action are refused
    doc["linux"]["seccomp"] = {"syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}]}
    with pytest.raises(InvalidArgument, match=r"^linux\.seccomp\.defaultAction"):
        Spec.from_json(doc)


@pytest.mark.parametrize("gid", [-1, 2**32])
def test_additional_gids_are_range_checked(gid: int) -> None:
    doc = _minimal()
    doc["process"]["user"]["additionalGids"] = [0, gid]
    with pytest.raises(InvalidArgument, match=r"^process\.user\.additionalGids\[1\]: ") as info:
        Spec.from_json(doc)
    assert str(gid) in info.value.message


def test_additional_gids_at_the_ends_of_the_range() -> None:
    doc = _minimal()
    doc["process"]["user"]["additionalGids"] = [0, 2**32 - 1]
    spec = Spec.from_json(doc)
    assert spec.process is not None
    assert spec.process.user.additional_gids == (0, 2**32 - 1)


@pytest.mark.parametrize(("given", "read"), [("proc", "/proc"), ("tmp", "/tmp"), ("a/b", "/a/b")])
def test_relative_mount_destination_is_read_from_the_root(given: str, read: str) -> None:
    # runtime spec 1.2 allows it (deprecated, relative to '/'); runc accepts it
    doc = _minimal()
    doc["mounts"][0]["destination"] = given
    spec = Spec.from_json(doc)
    assert spec.mounts[0].destination == read
