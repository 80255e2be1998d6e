"""berth.spec.image: OCI image documents read, written, checked against the spec's schemas.

Rules: pure data, no I/O beyond reading the shared schemas; every refusal is an
``InvalidArgument`` whose message names the dotted path of the field at fault; every
``to_json`` output validates against the OCI JSON schema of its document and reads back equal.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from berth.errors import InvalidArgument, NotFound
from berth.spec import image as oci
from berth.spec.image import (
    ContainerConfig,
    Descriptor,
    Healthcheck,
    History,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    RootFS,
)

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "specs" / "oci-image"
if not SCHEMA_DIR.is_dir():  # a checkout elsewhere: fall back to the machines' shared dir
    SCHEMA_DIR = Path("/work/shared/specs/oci-image")


def _d(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def _validator(schema_file: str) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT4

    if not SCHEMA_DIR.is_dir():
        pytest.skip(f"no OCI image schemas at {SCHEMA_DIR}")

    # The schemas' ids nest ("…/schema/image/manifest", "…/schema/descriptor/annotations"), so
    # a relative "defs.json" resolves under several bases: look every one up by file name.
    def retrieve(uri: str) -> Any:
        path = SCHEMA_DIR / uri.rsplit("/", 1)[-1]
        return DRAFT4.create_resource(json.loads(path.read_text()))

    registry = referencing.Registry(retrieve=retrieve)
    schema = json.loads((SCHEMA_DIR / schema_file).read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def _errors(schema_file: str, doc: Any) -> list[str]:
    return [
        f"{list(e.absolute_path)}: {e.message}" for e in _validator(schema_file).iter_errors(doc)
    ]


def _oci_manifest() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_CONFIG, "digest": _d("config"), "size": 1470},
        "layers": [
            {"mediaType": oci.OCI_LAYER_GZIP, "digest": _d("layer0"), "size": 2_000_000},
            {
                "mediaType": oci.OCI_LAYER,
                "digest": _d("layer1"),
                "size": 10240,
                "annotations": {"org.opencontainers.image.title": "app"},
            },
        ],
        "subject": {"mediaType": oci.OCI_MANIFEST, "digest": _d("base"), "size": 529},
        "annotations": {"org.opencontainers.image.created": "2024-01-02T03:04:05Z"},
    }


def _docker_manifest() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": {"mediaType": oci.DOCKER_CONFIG, "digest": _d("dconfig"), "size": 1457},
        "layers": [
            {"mediaType": oci.DOCKER_LAYER_GZIP, "digest": _d("dlayer"), "size": 2_220_094},
            {
                "mediaType": oci.DOCKER_FOREIGN_LAYER,
                "digest": _d("foreign"),
                "size": 5000,
                "urls": ["https://example.com/layer.tar.gz"],
            },
        ],
    }


def _index(media_type: str = oci.OCI_INDEX) -> dict[str, Any]:
    manifest = oci.DOCKER_MANIFEST if media_type == oci.DOCKER_MANIFEST_LIST else oci.OCI_MANIFEST
    return {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [
            {
                "mediaType": manifest,
                "digest": _d("arm"),
                "size": 528,
                "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
            },
            {
                "mediaType": manifest,
                "digest": _d("amd64"),
                "size": 528,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": manifest,
                "digest": _d("windows"),
                "size": 528,
                "platform": {
                    "architecture": "amd64",
                    "os": "windows",
                    "os.version": "10.0.17763.5329",
                    "os.features": ["win32k"],
                },
            },
        ],
        "annotations": {"org.opencontainers.image.ref.name": "1.36"},
    }


def _image_config() -> dict[str, Any]:
    return {
        "created": "2024-01-02T03:04:05Z",
        "author": "berth",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"],
            "Entrypoint": ["/entry.sh"],
            "Cmd": ["serve", "--port", "80"],
            "Volumes": {"/data": {}},
            "WorkingDir": "/srv",
            "Labels": {"org.opencontainers.image.version": "1.0"},
            "StopSignal": "SIGTERM",
            "Healthcheck": {
                "Test": ["CMD-SHELL", "nc -z localhost 80"],
                "Interval": 30_000_000_000,
                "Timeout": 5_000_000_000,
                "StartPeriod": 1_000_000_000,
                "Retries": 3,
            },
            "OnBuild": ["RUN echo child"],
            "Shell": ["/bin/sh", "-c"],
        },
        "rootfs": {"type": "layers", "diff_ids": [_d("diff0"), _d("diff1")]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:x in /"},
            {
                "created": "2024-01-02T03:04:05Z",
                "created_by": "ENV LANG=C.UTF-8",
                "comment": "buildkit.dockerfile.v0",
                "empty_layer": True,
            },
            {"created_by": "RUN make", "author": "someone"},
        ],
    }


# --- schemas and round trips --------------------------------------------------------------


DOCUMENTS = [
    ("manifest oci", "image-manifest-schema.json", Manifest, _oci_manifest),
    ("manifest docker", "image-manifest-schema.json", Manifest, _docker_manifest),
    ("index oci", "image-index-schema.json", Index, _index),
    ("index docker", "image-index-schema.json", Index, lambda: _index(oci.DOCKER_MANIFEST_LIST)),
    ("config", "config-schema.json", ImageConfig, _image_config),
]


@pytest.mark.parametrize(
    ("schema", "cls", "make"), [d[1:] for d in DOCUMENTS], ids=[d[0] for d in DOCUMENTS]
)
def test_documents_validate_and_round_trip_including_key_order(
    schema: str, cls: Any, make: Any
) -> None:
    doc = make()
    assert _errors(schema, doc) == []  # the fixture itself is a valid document
    parsed = cls.from_json(doc)
    out = parsed.to_json()
    assert _errors(schema, out) == []
    # json.dumps keeps dict order: this also compares key order at every level
    assert json.dumps(out, indent=1) == json.dumps(doc, indent=1)
    assert cls.from_json(json.loads(json.dumps(out))) == parsed


def test_minimal_values_write_valid_documents() -> None:
    layer = Descriptor(oci.OCI_LAYER_GZIP, _d("l"), 3)
    manifest = Manifest(config=Descriptor(oci.OCI_CONFIG, _d("c"), 2), layers=(layer,))
    assert _errors("image-manifest-schema.json", manifest.to_json()) == []
    assert list(manifest.to_json()) == ["schemaVersion", "mediaType", "config", "layers"]
    index = Index(
        manifests=(Descriptor(oci.OCI_MANIFEST, _d("m"), 9, platform=Platform("amd64", "linux")),)
    )
    assert _errors("image-index-schema.json", index.to_json()) == []
    config = ImageConfig(architecture="amd64", os="linux")
    assert config.to_json() == {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    assert _errors("config-schema.json", config.to_json()) == []
    assert ImageConfig.from_json(config.to_json()) == config


def test_every_field_round_trips_through_values() -> None:
    config = ImageConfig(
        architecture="arm64",
        os="linux",
        variant="v8",
        os_version="1",
        os_features=("f",),
        created="2024-01-02T03:04:05Z",
        author="a",
        rootfs=RootFS(diff_ids=(_d("x"),)),
        config=ContainerConfig(
            user="u",
            exposed_ports=("8080/tcp",),
            env=("A=1",),
            entrypoint=(),
            cmd=None,
            volumes=("/v",),
            working_dir="/w",
            labels={"k": "v"},
            stop_signal="SIGINT",
            args_escaped=True,
            healthcheck=Healthcheck(test=("NONE",), start_interval=5),
            on_build=("RUN x",),
            shell=("/bin/bash", "-c"),
        ),
        history=(History(created="2024-01-02T03:04:05Z", empty_layer=True),),
    )
    out = config.to_json()
    assert _errors("config-schema.json", out) == []
    assert out["config"]["Entrypoint"] == []  # an empty list (reset) differs from unset
    assert "Cmd" not in out["config"]
    assert ImageConfig.from_json(out) == config
    assert config.platform == Platform("arm64", "linux", "1", ("f",), "v8")
    descriptor = Descriptor(
        oci.OCI_MANIFEST,
        _d("m"),
        1,
        urls=("https://x/y",),
        annotations={"a": "b"},
        platform=Platform("amd64", "linux"),
        artifact_type="application/vnd.example+json",
        data="e30=",
    )
    assert _errors("content-descriptor.json", descriptor.to_json()) == []
    assert Descriptor.from_json(descriptor.to_json(), "") == descriptor


def test_schema_validator_rejects_a_broken_manifest() -> None:
    # Guards the registry wiring: a validator that resolves nothing would accept anything.
    doc = _oci_manifest()
    doc["layers"][0]["digest"] = "sha256:nothex!"
    doc["config"]["mediaType"] = "no-slash"
    assert len(_errors("image-manifest-schema.json", doc)) >= 2


# --- refusals name the field -----------------------------------------------------------


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    keys: list[Any] = [int(k) if k.isdigit() else k for k in path.split("/")]
    target: Any = doc
    for key in keys[:-1]:
        target = target[key]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


MANIFEST_ERRORS = [
    ("schemaVersion", 1, "schemaVersion: expected 2"),
    ("schemaVersion", KeyError, "schemaVersion: required"),
    ("mediaType", oci.OCI_INDEX, "mediaType: 'application/vnd.oci.image.index.v1+json' is not"),
    ("mediaType", "text", "mediaType: 'text' is not a media type"),
    ("config", KeyError, "config: required"),
    ("config", [], "config: expected an object"),
    ("layers", KeyError, "layers: required"),
    ("layers", {}, "layers: expected a list"),
    ("config/digest", "sha256:abc", "config.digest: invalid digest 'sha256:abc'"),
    ("config/digest", KeyError, "config.digest: required"),
    ("config/size", -1, "config.size: expected an integer in"),
    ("config/size", "12", "config.size: expected an integer"),
    ("layers/1/digest", "md5", "layers[1].digest: invalid digest 'md5'"),
    ("layers/1/digest", "SHA256:" + "a" * 64, "layers[1].digest: invalid digest"),
    ("layers/1/digest", "sha256:" + "A" * 64, "layers[1].digest: invalid digest"),
    ("layers/0/mediaType", 7, "layers[0].mediaType: expected a string"),
    ("layers/1/annotations", {"k": 1}, "layers[1].annotations: expected an object of strings"),
    ("layers/0/urls", "http://x", "layers[0].urls: expected a list of strings"),
    ("subject/size", None, "subject.size: required"),
    ("annotations", [], "annotations: expected an object of strings"),
    ("artifactType", "x", "artifactType: 'x' is not a media type"),
]


@pytest.mark.parametrize(("path", "value", "message"), MANIFEST_ERRORS)
def test_manifest_refusals_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Manifest.from_json(_set(_oci_manifest(), path, value))
    assert info.value.message.startswith(message), info.value.message


def test_manifest_refusals_of_non_objects_and_indexes() -> None:
    with pytest.raises(InvalidArgument, match=r"^manifest: expected an object"):
        Manifest.from_json([])
    with pytest.raises(InvalidArgument, match=r"^manifests: an image manifest has no manifests"):
        Manifest.from_json({**_oci_manifest(), "mediaType": None, "manifests": []})


INDEX_ERRORS = [
    ("manifests", KeyError, "manifests: required"),
    ("mediaType", oci.OCI_MANIFEST, "mediaType: 'application/vnd.oci.image.manifest.v1+json' is"),
    ("manifests/1/platform/os", KeyError, "manifests[1].platform.os: required"),
    ("manifests/0/platform/os.features", "x", "manifests[0].platform.os.features: expected a list"),
    ("manifests/2/digest", "sha512:" + "0" * 64, "manifests[2].digest: invalid digest"),
    ("manifests/0", "x", "manifests[0]: expected an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), INDEX_ERRORS)
def test_index_refusals_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Index.from_json(_set(_index(), path, value))
    assert info.value.message.startswith(message), info.value.message


CONFIG_ERRORS = [
    ("architecture", KeyError, "architecture: required"),
    ("os", 3, "os: expected a string"),
    ("rootfs", KeyError, "rootfs: required"),
    ("rootfs/type", "tarballs", "rootfs.type: expected 'layers'"),
    ("rootfs/diff_ids", KeyError, "rootfs.diff_ids: required"),
    ("rootfs/diff_ids/1", "sha256:xyz", "rootfs.diff_ids[1]: invalid digest 'sha256:xyz'"),
    ("config/Env/1", "NOEQUALS", "config.Env[1]: 'NOEQUALS' is not NAME=value"),
    ("config/ExposedPorts", ["80/tcp"], "config.ExposedPorts: expected an object of objects"),
    ("config/Volumes", {"/data": 1}, "config.Volumes: expected an object of objects"),
    ("config/Cmd", "serve", "config.Cmd: expected a list of strings"),
    ("config/Labels", {"a": None}, "config.Labels: expected an object of strings"),
    ("config/Healthcheck/Interval", -1, "config.Healthcheck.Interval: expected an integer in"),
    ("config/Healthcheck/Test", "CMD", "config.Healthcheck.Test: expected a list of strings"),
    ("config/OnBuild", [1], "config.OnBuild: expected a list of strings"),
    ("history/1/empty_layer", "yes", "history[1].empty_layer: expected true or false"),
    ("history/0", 1, "history[0]: expected an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), CONFIG_ERRORS)
def test_image_config_refusals_name_the_field(path: str, value: Any, message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ImageConfig.from_json(_set(_image_config(), path, value))
    assert info.value.message.startswith(message), info.value.message


def test_null_fields_mean_unset_as_docker_writes_them() -> None:
    doc = _image_config()
    doc["config"].update(Entrypoint=None, Cmd=None, Volumes=None, Labels=None)
    doc["config"]["Env"] = None
    config = ImageConfig.from_json(doc).config
    assert (config.entrypoint, config.cmd, config.volumes, config.labels, config.env) == (
        None,
        None,
        (),
        {},
        (),
    )


def test_docker_config_fields_outside_the_spec_are_ignored() -> None:
    doc = _image_config()
    doc.update(container="abc", docker_version="20.10.24", container_config={"Hostname": "x"})
    assert ImageConfig.from_json(doc) == ImageConfig.from_json(_image_config())


# --- digests, media types, documents ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (_d("x"), None),
        ("sha512:" + "ab" * 64, None),
        ("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", None),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", None),
        ("sha256", "expected <algorithm>:<encoded>"),
        (":abc", "expected <algorithm>:<encoded>"),
        ("sha256:", "expected <algorithm>:<encoded>"),
        ("Sha256:" + "a" * 64, "bad algorithm 'Sha256'"),
        ("sha256..x:" + "a" * 64, "bad algorithm"),
        ("sha256:" + "a" * 63, "sha256 needs 64 lowercase hex digits"),
        ("sha256:" + "g" * 64, "sha256 needs 64 lowercase hex digits"),
        ("sha512:" + "a" * 64, "sha512 needs 128 lowercase hex digits"),
        ("foo:a b", "bad encoded part 'a b'"),
    ],
)
def test_digest_grammar(text: str, problem: str | None) -> None:
    found = oci.digest_problem(text)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_layer_compression_covers_oci_and_docker_types() -> None:
    assert oci.layer_compression(oci.OCI_LAYER) == ""
    assert oci.layer_compression(oci.OCI_LAYER_GZIP) == "gzip"
    assert oci.layer_compression(oci.OCI_LAYER_ZSTD) == "zstd"
    assert oci.layer_compression(oci.DOCKER_LAYER_GZIP) == "gzip"
    assert oci.layer_compression(oci.DOCKER_FOREIGN_LAYER) == "gzip"
    assert oci.layer_compression(oci.OCI_FOREIGN_LAYER) == ""
    assert oci.DOCKER_FOREIGN_LAYER in oci.FOREIGN_LAYER_TYPES
    assert set(oci.MANIFEST_TYPES) == {oci.OCI_MANIFEST, oci.DOCKER_MANIFEST}
    assert set(oci.INDEX_TYPES) == {oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST}
    assert set(oci.CONFIG_TYPES) == {oci.OCI_CONFIG, oci.DOCKER_CONFIG}
    with pytest.raises(InvalidArgument, match="'application/json' is not a layer media type"):
        oci.layer_compression("application/json")


def test_parse_document_tells_manifests_from_indexes() -> None:
    assert isinstance(oci.parse_document(_oci_manifest()), Manifest)
    assert isinstance(oci.parse_document(_docker_manifest()), Manifest)
    assert isinstance(oci.parse_document(_index(oci.DOCKER_MANIFEST_LIST)), Index)
    no_type = _index()
    del no_type["mediaType"]  # optional in OCI: told by its fields
    assert isinstance(oci.parse_document(no_type), Index)
    assert oci.parse_document(no_type).media_type == ""


# --- picking a platform ------------------------------------------------------------------


def test_pick_manifest_takes_linux_amd64() -> None:
    for media_type in (oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST):
        chosen = oci.pick_manifest(Index.from_json(_index(media_type)))
        assert chosen.digest == _d("amd64")


def test_pick_manifest_prefers_the_exact_variant_then_none() -> None:
    def entry(name: str, variant: str, media_type: str = oci.OCI_MANIFEST) -> Descriptor:
        return Descriptor(
            media_type, _d(name), 1, platform=Platform("arm64", "linux", variant=variant)
        )

    index = Index(
        manifests=(entry("v8", "v8"), entry("plain", ""), entry("attest", "", oci.OCI_INDEX))
    )
    assert oci.pick_manifest(index, architecture="arm64").digest == _d("plain")
    assert oci.pick_manifest(index, architecture="arm64", variant="v8").digest == _d("v8")
    only_v8 = Index(manifests=(entry("v8", "v8"),))
    assert oci.pick_manifest(only_v8, architecture="arm64").digest == _d("v8")


def test_pick_manifest_names_the_platforms_there_are() -> None:
    doc = _index()
    doc["manifests"] = [m for m in doc["manifests"] if m["digest"] != _d("amd64")]
    doc["manifests"].append({"mediaType": oci.OCI_MANIFEST, "digest": _d("x"), "size": 2})
    with pytest.raises(NotFound) as info:
        oci.pick_manifest(Index.from_json(doc))
    assert info.value.message == (
        "no image manifest for linux/amd64 in the index; it has linux/arm/v7, unknown, "
        "windows/amd64"
    )
    with pytest.raises(InvalidArgument, match="image index lists no manifests"):
        oci.pick_manifest(Index())
