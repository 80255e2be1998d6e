"""Image verbs: images, rmi, tag, build, load, save, history (pull and push:
``registry_client``).

Rules:
- ``images`` prints one row per repository:tag (``<none>`` for an untagged image), IDs cut to
  12 hex digits unless ``--no-trunc``, sizes as ``4.26MB``; ``-q`` prints the rows' IDs
  (an image with two tags twice, as docker does).
- References are normalized as the docker CLI does (``normalize_repository``): ``busybox``
  is ``docker.io/library/busybox`` with tag ``latest``.
- ``build`` sends the context directory as a tar (``.dockerignore`` patterns left out, the
  Dockerfile always in), streams the daemon's messages and prints the image ID with ``-q``.
- ``load`` shows a progress bar of the bytes sent when stderr is a terminal; ``save`` refuses
  to write a tar to a terminal.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from typing import Any

from berth.cli.common import CliError, Context, filters_query, is_terminal, parser
from berth.cli.progress import show, show_plain
from berth.cli.render import ago, human_size, print_rows, short_id, unix_time_text
from berth.cli.template import Record

IMAGES_DEFAULT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
IMAGES_HEADERS = {
    "Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT", "Size": "SIZE", "Digest": "DIGEST", "Containers": "CONTAINERS",
    "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
}  # fmt: skip


def split_reference(ref: str) -> tuple[str, str]:
    """(repository, tag or ``@digest``) — the tag is ``latest`` when none is given."""
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        return repo, "@" + digest
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        return ref[:colon], ref[colon + 1 :]
    return ref, "latest"


def normalize_repository(repo: str) -> str:
    """``busybox`` → ``docker.io/library/busybox``, ``me/app`` → ``docker.io/me/app``."""
    first, sep, _rest = repo.partition("/")
    if not sep:
        return f"docker.io/library/{repo}"
    if "." in first or ":" in first or first == "localhost":
        return repo
    return f"docker.io/{repo}"


def image_rows(images: list[dict[str, Any]], trunc: bool, digests: bool = False) -> list[Record]:
    """One row per repository:tag; ``digests`` fills ``.Digest`` (else ``<none>``, as docker
    does unless ``--digests`` or a format naming ``.Digest`` asks)."""
    rows = []
    for image in images:
        tags = image.get("RepoTags") or []
        repo_digests = image.get("RepoDigests") or [] if digests else []
        pairs = [split_reference(t) for t in tags if t != "<none>:<none>"] or [("<none>", "<none>")]
        for repo, tag in pairs:
            digest = next(
                (d.split("@", 1)[1] for d in repo_digests if d.split("@", 1)[0] == repo), "<none>"
            )
            size = image.get("Size", 0)
            shared = image.get("SharedSize", -1)
            rows.append(
                Record(
                    Repository=repo, Tag=tag,
                    ID=short_id(image["Id"]) if trunc else image["Id"],
                    CreatedSince=ago(image.get("Created", 0)),
                    CreatedAt=unix_time_text(image.get("Created", 0)),
                    Size=human_size(size), VirtualSize=human_size(size, 4), Digest=digest,
                    Containers=str(image.get("Containers", -1)).replace("-1", "N/A"),
                    SharedSize="N/A" if shared < 0 else human_size(shared),
                    UniqueSize="N/A" if shared < 0 else human_size(size - shared),
                )
            )  # fmt: skip
    return rows


def cmd_images(ctx: Context, argv: list[str]) -> int:
    p = parser("images", "[OPTIONS] [REPOSITORY[:TAG]]", "List images")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-f", "--filter", action="append", default=[])
    p.add_argument("--format", default="")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("--digests", action="store_true")
    p.add_argument("reference", nargs="?")
    a = p.parse_args(argv)
    filters = list(a.filter)
    if a.reference:
        filters.append(f"reference={a.reference}")
    images = ctx.client.get("/images/json", {"all": a.all, "filters": filters_query(filters)})
    images.sort(key=lambda i: i.get("Created", 0), reverse=True)
    if a.quiet:  # one ID per row, repeated for each tag, as docker prints them
        a.format = "{{.ID}}"
    default = IMAGES_DEFAULT
    if a.digests:
        default = default.replace("{{.Tag}}\t", "{{.Tag}}\t{{.Digest}}\t")
    rows = image_rows(images, not a.no_trunc, a.digests or ".Digest" in a.format)
    print_rows(rows, a.format, default, IMAGES_HEADERS)
    return 0


def cmd_rmi(ctx: Context, argv: list[str]) -> int:
    p = parser("rmi", "[OPTIONS] IMAGE [IMAGE...]")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--no-prune", action="store_true")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    a = p.parse_args(argv)
    from berth.cli.client import ApiError

    failed = False
    for name in a.images:
        try:
            result = ctx.client.call(
                "DELETE", f"/images/{name}", {"force": a.force, "noprune": a.no_prune}
            )
        except ApiError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
            continue
        for item in result or []:
            for key in ("Untagged", "Deleted"):
                if key in item:
                    sys.stdout.write(f"{key}: {item[key]}\n")
    return 1 if failed else 0


def cmd_tag(ctx: Context, argv: list[str]) -> int:
    p = parser("tag", "SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]")
    p.add_argument("source")
    p.add_argument("target")
    a = p.parse_args(argv)
    repo, tag = split_reference(a.target)
    if tag.startswith("@"):
        raise CliError("Error parsing reference: refusing to create a tag with a digest", 1)
    ctx.client.post(f"/images/{a.source}/tag", {"repo": repo, "tag": tag})
    return 0


# ------------------------------------------------------------------ build


def _ignored_patterns(context: str) -> list[str]:
    try:
        with open(os.path.join(context, ".dockerignore"), encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        return []
    return [line.strip("/") for line in lines if line and not line.startswith("#")]


def _excluded(relative: str, patterns: list[str]) -> bool:
    from fnmatch import fnmatch

    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!")
        if fnmatch(relative, glob) or relative.startswith(glob.rstrip("*").rstrip("/") + "/"):
            excluded = not negate
    return excluded


def context_tar(context: str, dockerfile: str) -> bytes:
    """The build context as a tar (``.dockerignore`` applied; the Dockerfile always sent)."""
    import tarfile

    patterns = _ignored_patterns(context)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for root, dirs, files in os.walk(context):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(root, name)
                relative = os.path.relpath(path, context)
                if relative != dockerfile and _excluded(relative, patterns):
                    continue
                info = tar.gettarinfo(path, relative)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            dirs[:] = [
                d
                for d in dirs
                if not _excluded(os.path.relpath(os.path.join(root, d), context), patterns)
            ]
    return buffer.getvalue()


def cmd_build(ctx: Context, argv: list[str]) -> int:
    from berth.cli.options import key_values

    p = parser("build", "[OPTIONS] PATH")
    p.add_argument("-t", "--tag", action="append", default=[])
    p.add_argument("-f", "--file", default="Dockerfile")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--pull", action="store_true")
    p.add_argument("--rm", default="true")
    p.add_argument("--force-rm", action="store_true")
    p.add_argument("--build-arg", action="append", default=[])
    p.add_argument("--label", action="append", default=[])
    p.add_argument("--target")
    p.add_argument("--network")
    p.add_argument("path")
    a = p.parse_args(argv)
    if not os.path.isdir(a.path):
        raise CliError(f'unable to prepare context: path "{a.path}" not found', 1)
    dockerfile = os.path.relpath(a.file, a.path) if os.path.isabs(a.file) else a.file
    body = context_tar(a.path, dockerfile)
    query = {
        "t": a.tag or None, "dockerfile": dockerfile, "q": a.quiet, "nocache": a.no_cache,
        "pull": a.pull, "rm": a.rm.lower() != "false", "forcerm": a.force_rm,
        "buildargs": key_values(a.build_arg) or None, "labels": key_values(a.label) or None,
        "target": a.target, "networkmode": a.network, "version": "1",
    }  # fmt: skip
    headers = {"Content-Type": "application/x-tar", "X-Registry-Config": "e30="}
    response = ctx.client.open("POST", "/build", query, body, headers, own_connection=True)
    if not a.quiet:
        show(response.json_lines(), sys.stdout)
        return 0
    # quiet: the daemon streams just the image ID (an aux ID from some daemons)
    captured = io.StringIO()
    aux = show_plain(response.json_lines(), captured)
    ids = [x["ID"] for x in aux if isinstance(x, dict) and "ID" in x]
    sys.stdout.write((ids[-1] if ids else captured.getvalue().strip()) + "\n")
    return 0


# ------------------------------------------------------------------ save, load, history


def _chunks(stream: Any, progress: Any = None) -> Iterator[bytes]:
    while chunk := stream.read(1 << 16):
        if progress is not None:
            progress(len(chunk))
        yield chunk


def cmd_load(ctx: Context, argv: list[str]) -> int:
    p = parser("load", "[OPTIONS]")
    p.add_argument("-i", "--input")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    try:
        source = open(a.input, "rb") if a.input else sys.stdin.buffer  # noqa: SIM115
    except OSError as e:
        raise CliError(f"open {a.input}: {(e.strerror or str(e)).lower()}", 1) from e
    if not a.input and is_terminal(sys.stdin):
        raise CliError("requested load from stdin, but stdin is empty", 1)
    headers = {"Content-Type": "application/x-tar"}
    try:
        if is_terminal(sys.stderr) and not a.quiet:
            from rich.console import Console
            from rich.progress import Progress

            total = os.fstat(source.fileno()).st_size if a.input else None
            with Progress(console=Console(stderr=True), transient=True) as bar:
                task = bar.add_task("Loading", total=total or None)
                body = _chunks(source, lambda n: bar.advance(task, n))
                response = ctx.client.open("POST", "/images/load", {"quiet": True}, body,
                                           headers, own_connection=True)  # fmt: skip
                messages = list(response.json_lines())
        else:
            response = ctx.client.open("POST", "/images/load", {"quiet": a.quiet},
                                       _chunks(source), headers, own_connection=True)  # fmt: skip
            messages = list(response.json_lines())
    finally:
        if a.input:
            source.close()
    show(messages, sys.stdout)
    return 0


def cmd_save(ctx: Context, argv: list[str]) -> int:
    p = parser("save", "[OPTIONS] IMAGE [IMAGE...]")
    p.add_argument("-o", "--output")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    a = p.parse_args(argv)
    if not a.output and is_terminal(sys.stdout):
        raise CliError("cowardly refusing to save to a terminal. Use the -o flag or redirect", 1)
    response = ctx.client.stream("GET", "/images/get", {"names": a.images})
    target = open(a.output + ".tmp", "wb") if a.output else sys.stdout.buffer  # noqa: SIM115
    try:
        while piece := response.read_some():
            target.write(piece)
    finally:
        if a.output:
            target.close()
    if a.output:
        os.replace(a.output + ".tmp", a.output)
    else:
        target.flush()
    return 0


def cmd_history(ctx: Context, argv: list[str]) -> int:
    from berth.cli.render import ellipsis

    p = parser("history", "[OPTIONS] IMAGE")
    p.add_argument("--no-trunc", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("-H", "--human", default="true")
    p.add_argument("image")
    a = p.parse_args(argv)
    rows = []
    for item in ctx.client.get(f"/images/{a.image}/history"):
        ident = item.get("Id", "<missing>")
        created_by = item.get("CreatedBy", "")
        rows.append(
            Record(
                ID=ident if a.no_trunc or ident == "<missing>" else short_id(ident),
                CreatedSince=ago(item.get("Created", 0)),
                CreatedAt=unix_time_text(item.get("Created", 0)),
                CreatedBy=created_by if a.no_trunc else ellipsis(created_by, 45),
                Size=human_size(item.get("Size", 0)),
                Comment=item.get("Comment", ""),
            )
        )
    default = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    headers = {"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
               "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"}  # fmt: skip
    print_rows(rows, "{{.ID}}" if a.quiet else a.format, default, headers)
    return 0
