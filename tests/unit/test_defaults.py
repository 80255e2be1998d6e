"""berth.spec.defaults: `spec` matches runc's output, both documents match the OCI schemas.

Rules: runs the real `runc spec` only in a temp dir (skipped when runc is missing); schemas are
read offline from the shared specs directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from berth.spec.config import Spec
from berth.spec.defaults import CAPABILITIES, default_spec, features

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "specs" / "oci-runtime"
if not SCHEMA_DIR.is_dir():  # a checkout elsewhere: fall back to the machines' shared dir
    SCHEMA_DIR = Path("/work/shared/specs/oci-runtime")


def _validator(schema_file: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    if not SCHEMA_DIR.is_dir():
        pytest.skip(f"no OCI schemas at {SCHEMA_DIR}")
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        contents = json.loads(path.read_text())
        resources.append((path.name, DRAFT4.create_resource(contents)))
    registry = referencing.Registry().with_resources(resources)
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def _runc_spec(tmp_path: Path, *flags: str) -> Any:
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    subprocess.run([runc, "spec", *flags], cwd=tmp_path, check=True, capture_output=True)
    return json.loads((tmp_path / "config.json").read_text())


@pytest.mark.peer
@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_is_runcs_including_key_order(tmp_path: Path, rootless: bool) -> None:
    expected = _runc_spec(tmp_path, *(["--rootless"] if rootless else []))
    got = default_spec(rootless=rootless)
    assert got == expected
    # json.dumps keeps dict order, so this also compares the key order at every level.
    assert json.dumps(got, indent=1) == json.dumps(expected, indent=1)


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_validates_against_config_schema(rootless: bool) -> None:
    validator = _validator("config-schema.json")
    errors = [e.message for e in validator.iter_errors(default_spec(rootless=rootless))]
    assert errors == []


def test_schema_validator_rejects_a_broken_spec() -> None:
    # Guards the registry wiring: a validator that resolves nothing would accept anything.
    validator = _validator("config-schema.json")
    spec = default_spec()
    spec["linux"]["namespaces"] = [{"type": "bogus"}]
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": "x", "soft": 1}]
    assert len(list(validator.iter_errors(spec))) >= 2


@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_parses_with_spec_from_json(rootless: bool) -> None:
    spec = Spec.from_json(default_spec(rootless=rootless))
    assert spec.root is not None
    assert spec.root.path == "rootfs"


def test_default_spec_returns_a_fresh_dict() -> None:
    a = default_spec()
    a["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
    a["mounts"][0]["source"] = "changed"
    assert default_spec() != a


def test_features_validates_against_features_schema() -> None:
    validator = _validator("features-schema.json")
    errors = [e.message for e in validator.iter_errors(features())]
    assert errors == []


def test_features_contents() -> None:
    feats = features()
    assert feats["ociVersionMin"] == "1.0.0"
    assert feats["ociVersionMax"] == "1.2.0"
    assert feats["hooks"] == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    linux = feats["linux"]
    assert sorted(linux["namespaces"]) == sorted(
        ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]
    )
    assert linux["capabilities"][-1] == "CAP_CHECKPOINT_RESTORE"
    assert len(CAPABILITIES) == 41 == len(set(CAPABILITIES))
    assert linux["cgroup"] == {"v1": True, "v2": True, "systemd": False, "systemdUser": False}
    assert linux["apparmor"] == {"enabled": False}
    assert linux["selinux"] == {"enabled": False}
    assert all(k.startswith("org.berth.") for k in feats["annotations"])


@pytest.mark.peer
def test_features_lists_match_runcs(tmp_path: Path) -> None:
    runc = shutil.which("runc")
    if runc is None:
        pytest.skip("runc is not installed")
    out = subprocess.run([runc, "features"], check=True, capture_output=True, text=True).stdout
    theirs = json.loads(out)
    ours = features()
    assert ours["hooks"] == theirs["hooks"]
    # runc's list less tmpcopyup, which berth does not support and so does not advertise
    assert "tmpcopyup" not in ours["mountOptions"]
    assert ours["mountOptions"] == [o for o in theirs["mountOptions"] if o != "tmpcopyup"]
    for key in ("namespaces", "capabilities"):
        assert ours["linux"][key] == theirs["linux"][key]
    for key in ("actions", "operators", "archs"):
        assert ours["linux"]["seccomp"][key] == theirs["linux"]["seccomp"][key]
