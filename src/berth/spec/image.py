"""OCI image spec 1.1 documents (and Docker's v2 schema 2) as frozen value classes.

Rules: each document has one ``from_json`` (the way in: checks types, required fields, digests
and media types, and raises ``InvalidArgument`` naming the dotted field path, as
``spec.config`` does) and one ``to_json`` (field names as the spec spells them, keys in the
spec's order, empty optional fields left out). Attribute names are the spec's, in snake_case.
Docker's media types are accepted wherever the OCI ones are; Berth writes OCI ones.
``to_json`` is for documents Berth writes: a document read from elsewhere keeps its original
bytes, because its digest is the digest of those bytes, not of a re-encoding.
No ``re`` here: ``spec`` imports fast.
"""

from __future__ import annotations

from berth.errors import InvalidArgument, NotFound
from berth.spec import fields as f
from berth.spec.value import field, value

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


# OCI image spec 1.1 media types
OCI_DESCRIPTOR = "application/vnd.oci.descriptor.v1+json"
OCI_LAYOUT_HEADER = "application/vnd.oci.layout.header.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
# "non-distributable" layers: deprecated in 1.1, still to be read
OCI_FOREIGN_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_FOREIGN_LAYER_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_FOREIGN_LAYER_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# Docker image manifest v2 schema 2
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# layer media type -> compression ("" for a plain tar)
LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_FOREIGN_LAYER: "",
    OCI_FOREIGN_LAYER_GZIP: "gzip",
    OCI_FOREIGN_LAYER_ZSTD: "zstd",
    DOCKER_LAYER: "",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_FOREIGN_LAYER: "gzip",
}
LAYER_TYPES = frozenset(LAYER_COMPRESSION)
FOREIGN_LAYER_TYPES = frozenset(
    {OCI_FOREIGN_LAYER, OCI_FOREIGN_LAYER_GZIP, OCI_FOREIGN_LAYER_ZSTD, DOCKER_FOREIGN_LAYER}
)

_LOWER_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ALG_SEPARATORS = frozenset("+._-")
_ENCODED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789=_-")
_HEX = frozenset("0123456789abcdef")
# registered algorithms: their encoded part is exactly this many lowercase hex digits
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_MEDIA_TYPE_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$&^_.+-"
)


def digest_problem(text: str) -> str | None:
    """Why ``text`` is not an OCI digest (``algorithm:encoded``), or None if it is one.

    The grammar is the spec's; sha256 and sha512 (the registered algorithms) must also have
    exactly 64 or 128 lowercase hex digits. Other algorithms pass if they fit the grammar.
    """
    algorithm, sep, encoded = text.partition(":")
    if not sep or not algorithm or not encoded:
        return "expected <algorithm>:<encoded>, such as sha256:<64 hex digits>"
    for part in algorithm.replace("+", ".").replace("_", ".").replace("-", ".").split("."):
        if not part or not set(part) <= _LOWER_ALNUM:
            return f"bad algorithm {algorithm!r}"
    if not set(encoded) <= _ENCODED:
        return f"bad encoded part {encoded!r}"
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if length is not None and (len(encoded) != length or not set(encoded) <= _HEX):
        return f"{algorithm} needs {length} lowercase hex digits"
    return None


def check_digest(text: str, path: str) -> str:
    problem = digest_problem(text)
    if problem is not None:
        raise InvalidArgument(f"{path}: invalid digest {text!r}: {problem}")
    return text


def check_media_type(text: str, path: str) -> str:
    kind, sep, sub = text.partition("/")
    ok = (
        sep == "/"
        and 0 < len(kind) <= 127
        and 0 < len(sub) <= 127
        and kind[0].isalnum()
        and sub[0].isalnum()
        and set(kind) <= _MEDIA_TYPE_CHARS
        and set(sub) <= _MEDIA_TYPE_CHARS
    )
    if not ok:
        raise InvalidArgument(f"{path}: {text!r} is not a media type (type/subtype)")
    return text


def layer_compression(media_type: str) -> str:
    """``""``, ``"gzip"`` or ``"zstd"`` for a layer media type; InvalidArgument otherwise."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise InvalidArgument(f"{media_type!r} is not a layer media type") from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _opt_media_type(d: f.Obj, key: str, path: str) -> str | None:
    text = f.opt_string(d, key, path)
    return None if text is None else check_media_type(text, _join(path, key))


def _digests(d: f.Obj, key: str, path: str) -> tuple[str, ...]:
    values = f.strings(d, key, path)
    for i, text in enumerate(values):
        check_digest(text, f"{_join(path, key)}[{i}]")
    return values


@value
class Platform:
    architecture: str
    os: str
    os_version: str = ""
    os_features: tuple[str, ...] = ()
    variant: str = ""

    def __str__(self) -> str:
        shown = f"{self.os}/{self.architecture}"
        return f"{shown}/{self.variant}" if self.variant else shown

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Platform:
        return Platform(
            architecture=f.string(d, "architecture", p),
            os=f.string(d, "os", p),
            os_version=f.opt_string(d, "os.version", p) or "",
            os_features=f.strings(d, "os.features", p),
            variant=f.opt_string(d, "variant", p) or "",
        )


@value
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None  # the content itself, base64: spec 1.1's embedded data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        if self.data is not None:
            out["data"] = self.data
        return out

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Descriptor:
        platform = f.opt_obj(d, "platform", p)
        return Descriptor(
            media_type=check_media_type(f.string(d, "mediaType", p), _join(p, "mediaType")),
            digest=check_digest(f.string(d, "digest", p), _join(p, "digest")),
            size=f.integer(d, "size", p, minimum=0, maximum=2**63 - 1),
            urls=f.strings(d, "urls", p),
            annotations=f.string_map(d, "annotations", p),
            platform=None
            if platform is None
            else Platform.from_json(platform, _join(p, "platform")),
            artifact_type=_opt_media_type(d, "artifactType", p),
            data=f.opt_string(d, "data", p),
        )


def _schema_version(d: f.Obj, p: str) -> int:
    version = f.integer(d, "schemaVersion", p)
    if version != 2:
        raise InvalidArgument(f"{_join(p, 'schemaVersion')}: expected 2, got {version!r}")
    return version


def _opt_descriptor(d: f.Obj, key: str, p: str) -> Descriptor | None:
    sub = f.opt_obj(d, key, p)
    return None if sub is None else Descriptor.from_json(sub, _join(p, key))


def _document_json(doc: Manifest | Index, body: dict[str, Any]) -> dict[str, Any]:
    """A manifest's or an index's JSON: the shared head and tail around its own ``body``, in
    the spec's key order."""
    out: dict[str, Any] = {"schemaVersion": doc.schema_version}
    if doc.media_type:
        out["mediaType"] = doc.media_type
    if doc.artifact_type is not None:
        out["artifactType"] = doc.artifact_type
    out.update(body)
    if doc.subject is not None:
        out["subject"] = doc.subject.to_json()
    if doc.annotations:
        out["annotations"] = dict(doc.annotations)
    return out


@value
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...] = ()
    media_type: str = OCI_MANIFEST
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    schema_version: int = 2

    def to_json(self) -> dict[str, Any]:
        return _document_json(
            self,
            {
                "config": self.config.to_json(),
                "layers": [layer.to_json() for layer in self.layers],
            },
        )

    @staticmethod
    def from_json(data: Any, p: str = "") -> Manifest:
        d = f.obj(data, p or "manifest")
        version = _schema_version(d, p)
        media_type = _opt_media_type(d, "mediaType", p) or ""
        if media_type and media_type not in MANIFEST_TYPES:
            raise InvalidArgument(
                f"{_join(p, 'mediaType')}: {media_type!r} is not an image manifest type "
                f"({OCI_MANIFEST} or {DOCKER_MANIFEST})"
            )
        if "manifests" in d:
            raise InvalidArgument(f"{_join(p, 'manifests')}: an image manifest has no manifests")
        config = f.opt_obj(d, "config", p)
        if config is None:
            raise InvalidArgument(f"{_join(p, 'config')}: required field is missing")
        if "layers" not in d:
            raise InvalidArgument(f"{_join(p, 'layers')}: required field is missing")
        return Manifest(
            schema_version=version,
            media_type=media_type,
            config=Descriptor.from_json(config, _join(p, "config")),
            layers=f.items(d, "layers", p, Descriptor.from_json),
            subject=_opt_descriptor(d, "subject", p),
            annotations=f.string_map(d, "annotations", p),
            artifact_type=_opt_media_type(d, "artifactType", p),
        )


@value
class Index:
    manifests: tuple[Descriptor, ...] = ()
    media_type: str = OCI_INDEX
    subject: Descriptor | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    schema_version: int = 2

    def to_json(self) -> dict[str, Any]:
        return _document_json(self, {"manifests": [m.to_json() for m in self.manifests]})

    @staticmethod
    def from_json(data: Any, p: str = "") -> Index:
        d = f.obj(data, p or "index")
        version = _schema_version(d, p)
        media_type = _opt_media_type(d, "mediaType", p) or ""
        if media_type and media_type not in INDEX_TYPES:
            raise InvalidArgument(
                f"{_join(p, 'mediaType')}: {media_type!r} is not an image index type "
                f"({OCI_INDEX} or {DOCKER_MANIFEST_LIST})"
            )
        if "manifests" not in d:
            raise InvalidArgument(f"{_join(p, 'manifests')}: required field is missing")
        return Index(
            schema_version=version,
            media_type=media_type,
            manifests=f.items(d, "manifests", p, Descriptor.from_json),
            subject=_opt_descriptor(d, "subject", p),
            annotations=f.string_map(d, "annotations", p),
            artifact_type=_opt_media_type(d, "artifactType", p),
        )


def parse_document(data: Any) -> Manifest | Index:
    """A manifest or an index, told apart by ``mediaType`` or else by its fields."""
    d = f.obj(data, "document")
    media_type = d.get("mediaType")
    if media_type in INDEX_TYPES or (media_type is None and "manifests" in d):
        return Index.from_json(d)
    return Manifest.from_json(d)


def pick_manifest(
    index: Index, os: str = "linux", architecture: str = "amd64", variant: str = ""
) -> Descriptor:
    """The index's image manifest for one platform (linux/amd64 unless told otherwise).

    Candidates are the entries with a manifest media type (or none) whose platform has this
    os and architecture; among them an exact variant wins, then one with no variant, then the
    first. ``InvalidArgument`` for an index with no entries; ``NotFound`` naming the platforms
    the index has when none fits (entries without a platform show as "unknown").
    """
    if not index.manifests:
        raise InvalidArgument("image index lists no manifests")
    candidates = [
        m
        for m in index.manifests
        if m.platform is not None
        and m.platform.os == os
        and m.platform.architecture == architecture
        and (not m.media_type or m.media_type in MANIFEST_TYPES)
    ]
    for wanted in (variant, ""):
        for m in candidates:
            if m.platform is not None and m.platform.variant == wanted:
                return m
    if candidates and not variant:
        return candidates[0]
    asked = f"{os}/{architecture}" + (f"/{variant}" if variant else "")
    available = sorted({str(m.platform) if m.platform else "unknown" for m in index.manifests})
    raise NotFound(f"no image manifest for {asked} in the index; it has {', '.join(available)}")


@value
class Healthcheck:
    """Docker's HEALTHCHECK (durations in nanoseconds, as Docker stores them)."""

    test: tuple[str, ...] = ()
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, number in (
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if number:
                out[key] = number
        return out

    @staticmethod
    def from_json(d: f.Obj, p: str) -> Healthcheck:
        return Healthcheck(
            test=f.strings(d, "Test", p),
            interval=f.integer(d, "Interval", p, default=0, minimum=0),
            timeout=f.integer(d, "Timeout", p, default=0, minimum=0),
            start_period=f.integer(d, "StartPeriod", p, default=0, minimum=0),
            start_interval=f.integer(d, "StartInterval", p, default=0, minimum=0),
            retries=f.integer(d, "Retries", p, default=0, minimum=0),
        )


def _opt_strings(d: f.Obj, key: str, p: str) -> tuple[str, ...] | None:
    return None if d.get(key) is None else f.strings(d, key, p)


def _object_keys(d: f.Obj, key: str, p: str) -> tuple[str, ...]:
    """The keys of a ``{"80/tcp": {}}`` set, as the spec writes ExposedPorts and Volumes."""
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise f.fail(_join(p, key), "an object of objects", value)
    return tuple(value)


@value
class ContainerConfig:
    """The ``config`` of an image config: what a container of the image runs by default."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None  # Docker's
    on_build: tuple[str, ...] = ()  # Docker's
    shell: tuple[str, ...] = ()  # Docker's

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {port: {} for port in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {volume: {} for volume in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_json()
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.shell:
            out["Shell"] = list(self.shell)
        return out

    @staticmethod
    def from_json(d: f.Obj, p: str) -> ContainerConfig:
        env = f.strings(d, "Env", p)
        for i, entry in enumerate(env):
            if "=" not in entry:
                raise InvalidArgument(f"{p}.Env[{i}]: {entry!r} is not NAME=value")
        health = f.opt_obj(d, "Healthcheck", p)
        return ContainerConfig(
            user=f.opt_string(d, "User", p) or "",
            exposed_ports=_object_keys(d, "ExposedPorts", p),
            env=env,
            entrypoint=_opt_strings(d, "Entrypoint", p),
            cmd=_opt_strings(d, "Cmd", p),
            volumes=_object_keys(d, "Volumes", p),
            working_dir=f.opt_string(d, "WorkingDir", p) or "",
            labels=f.string_map(d, "Labels", p),
            stop_signal=f.opt_string(d, "StopSignal", p) or "",
            args_escaped=f.boolean(d, "ArgsEscaped", p),
            healthcheck=None
            if health is None
            else Healthcheck.from_json(health, f"{p}.Healthcheck"),
            on_build=f.strings(d, "OnBuild", p),
            shell=f.strings(d, "Shell", p),
        )


@value
class RootFS:
    diff_ids: tuple[str, ...] = ()
    type: str = "layers"

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "diff_ids": list(self.diff_ids)}

    @staticmethod
    def from_json(d: f.Obj, p: str) -> RootFS:
        rtype = f.string(d, "type", p)
        if rtype != "layers":
            raise InvalidArgument(f"{p}.type: expected 'layers', got {rtype!r}")
        if "diff_ids" not in d:
            raise InvalidArgument(f"{p}.diff_ids: required field is missing")
        return RootFS(type=rtype, diff_ids=_digests(d, "diff_ids", p))


@value
class History:
    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, text in (
            ("created", self.created),
            ("created_by", self.created_by),
            ("author", self.author),
            ("comment", self.comment),
        ):
            if text:
                out[key] = text
        if self.empty_layer:
            out["empty_layer"] = True
        return out

    @staticmethod
    def from_json(d: f.Obj, p: str) -> History:
        return History(
            created=f.opt_string(d, "created", p) or "",
            created_by=f.opt_string(d, "created_by", p) or "",
            author=f.opt_string(d, "author", p) or "",
            comment=f.opt_string(d, "comment", p) or "",
            empty_layer=f.boolean(d, "empty_layer", p),
        )


@value
class ImageConfig:
    """The image configuration (OCI config, Docker's ``container.image.v1``)."""

    architecture: str
    os: str
    rootfs: RootFS = field(default_factory=RootFS)
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: tuple[History, ...] = ()
    created: str = ""
    author: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @property
    def platform(self) -> Platform:
        return Platform(
            architecture=self.architecture,
            os=self.os,
            os_version=self.os_version,
            os_features=self.os_features,
            variant=self.variant,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out["architecture"] = self.architecture
        if self.variant:
            out["variant"] = self.variant
        out["os"] = self.os
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        out["config"] = self.config.to_json()
        out["rootfs"] = self.rootfs.to_json()
        if self.history:
            out["history"] = [h.to_json() for h in self.history]
        return out

    @staticmethod
    def from_json(data: Any, p: str = "") -> ImageConfig:
        d = f.obj(data, p or "image config")
        rootfs = f.opt_obj(d, "rootfs", p)
        if rootfs is None:
            raise InvalidArgument(f"{_join(p, 'rootfs')}: required field is missing")
        config = f.opt_obj(d, "config", p)
        return ImageConfig(
            architecture=f.string(d, "architecture", p),
            os=f.string(d, "os", p),
            rootfs=RootFS.from_json(rootfs, _join(p, "rootfs")),
            config=ContainerConfig()
            if config is None
            else ContainerConfig.from_json(config, _join(p, "config")),
            history=f.items(d, "history", p, History.from_json),
            created=f.opt_string(d, "created", p) or "",
            author=f.opt_string(d, "author", p) or "",
            variant=f.opt_string(d, "variant", p) or "",
            os_version=f.opt_string(d, "os.version", p) or "",
            os_features=f.strings(d, "os.features", p),
        )
