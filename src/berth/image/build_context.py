"""The build context of ``berth.image.build``: ``.dockerignore``, COPY/ADD sources, their
content hash for the cache, and copying them (or a stage's files) into a layer being made.

Rules:
- ``.dockerignore`` follows Docker's ``patternmatcher``: one pattern a line, ``#`` comments
  and blank lines skipped, each pattern cleaned (``filepath.Clean``) with a leading ``/``
  dropped; ``*`` and ``?`` never match ``/``, ``**`` matches any number of directories
  (zero included), ``\\`` escapes; a pattern that matches a parent directory matches what it
  holds; ``!pattern`` re-includes; the last pattern that matches decides.
- A source names a path relative to the context root (``/`` is that root too) and may hold
  globs (Go's ``filepath.Match`` per path component). A source that leaves the context, or
  that matches nothing left after ``.dockerignore``, is an ``InvalidArgument`` that the
  builder prefixes with the Dockerfile line. Symlinks are copied as symlinks, never followed.
- ``content_hash`` covers what a copy puts in the image — relative paths, file types,
  permission bits, contents and symlink targets — and never mtimes or owners, so touching a
  file keeps the cache and changing a byte does not.
- Trees of a stage are read through ``ChainView`` without mounting anything: overlay lower
  dirs top first, honouring whiteouts (0:0 character devices) and opaque directories; in copy
  mode the one lower dir is the whole tree.
- stdlib only; imports ``berth.errors`` and this package, never the runtime.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
from collections.abc import Iterator, Sequence

from berth.errors import InvalidArgument
from berth.image.layers import apply_layer
from berth.spec.value import value

OPAQUE_XATTR = "trusted.overlay.opaque"


# --------------------------------------------------------------------------- .dockerignore


@value
class IgnorePattern:
    """One ``.dockerignore`` line: ``pattern`` cleaned, ``exclusion`` for ``!`` lines."""

    pattern: str
    exclusion: bool
    regex: re.Pattern[str]
    dirs: int


def _clean(path: str) -> str:
    cleaned = os.path.normpath(path) if path else "."
    cleaned = cleaned.lstrip("/") or "."
    return "." if cleaned == "//" else cleaned


def _compile(pattern: str) -> re.Pattern[str]:
    out = ["^"]
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if i + 1 < len(pattern) and pattern[i + 1] == "*":
                i += 1
                if i + 1 < len(pattern) and pattern[i + 1] == "/":
                    i += 1
                out.append(".*" if i + 1 >= len(pattern) else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise InvalidArgument(f".dockerignore: pattern {pattern!r}: unterminated [")
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "!" + body[1:]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return re.compile("".join(out))


def parse_dockerignore(text: str) -> tuple[IgnorePattern, ...]:
    """The patterns of a ``.dockerignore`` file, in order."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
            if not line:
                raise InvalidArgument(".dockerignore: illegal exclusion pattern: '!'")
        cleaned = _clean(line)
        patterns.append(
            IgnorePattern(cleaned, exclusion, _compile(cleaned), len(cleaned.split("/")))
        )
    return tuple(patterns)


def ignored(patterns: Sequence[IgnorePattern], rel: str) -> bool:
    """Whether the context path ``rel`` (slash-separated, no leading ``/``) is excluded."""
    parents = rel.split("/")[:-1]
    matched = False
    for p in patterns:
        hit = bool(p.regex.match(rel)) or any(
            p.regex.match("/".join(parents[: n + 1])) for n in range(len(parents))
        )
        if hit:
            matched = not p.exclusion
    return matched


# --------------------------------------------------------------------------- the context


@value
class SourceEntry:
    """A resolved source: its path on disk and its name relative to the context."""

    path: str
    rel: str


class Context:
    """A context directory with its ``.dockerignore``."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise InvalidArgument(f"build context {root!r} is not a directory")
        try:
            with open(os.path.join(self.root, ".dockerignore"), encoding="utf-8") as f:
                self.patterns = parse_dockerignore(f.read())
        except FileNotFoundError:
            self.patterns = ()

    def ignored(self, rel: str, extra: Sequence[IgnorePattern] = ()) -> bool:
        return rel not in ("", ".") and ignored((*self.patterns, *extra), rel)

    def resolve(self, source: str, exclude: Sequence[IgnorePattern] = ()) -> list[SourceEntry]:
        """The context entries ``source`` names (globs expanded), sorted."""
        rel = os.path.normpath("/" + source).lstrip("/")
        if ".." in source.replace("\\", "/").split("/") and not _inside(self.root, source):
            raise InvalidArgument(f"{source}: outside the build context")
        if rel in ("", "."):
            return [SourceEntry(self.root, "")]
        if not any(c in rel for c in "*?["):
            path = os.path.join(self.root, rel)
            if not os.path.lexists(path) or self.ignored(rel, exclude):
                raise InvalidArgument(f"{source}: not found in the build context")
            return [SourceEntry(path, rel)]
        found = [
            SourceEntry(os.path.join(self.root, r), r)
            for r in _glob(self.root, rel.split("/"))
            if not self.ignored(r, exclude)
        ]
        if not found:
            raise InvalidArgument(f"{source}: no source files were specified (nothing matches)")
        return sorted(found, key=lambda e: e.rel)

    def walk(self, entry: SourceEntry, exclude: Sequence[IgnorePattern] = ()) -> Iterator[str]:
        """Context paths under ``entry`` (itself first) that ``.dockerignore`` keeps; a
        directory is kept when it is not ignored or holds something kept."""
        yield entry.rel
        if not os.path.isdir(entry.path) or os.path.islink(entry.path):
            return
        yield from self._walk_dir(entry.rel, exclude)

    def _walk_dir(self, rel: str, exclude: Sequence[IgnorePattern]) -> Iterator[str]:
        path = os.path.join(self.root, rel)
        for name in sorted(os.listdir(path)):
            child = f"{rel}/{name}" if rel else name
            full = os.path.join(self.root, child)
            is_dir = os.path.isdir(full) and not os.path.islink(full)
            if is_dir:
                inner = list(self._walk_dir(child, exclude))
                if inner or not self.ignored(child, exclude):
                    yield child
                    yield from inner
            elif not self.ignored(child, exclude):
                yield child


def _inside(root: str, source: str) -> bool:
    return os.path.normpath(os.path.join(root, source.lstrip("/"))).startswith(root)


def _glob(root: str, parts: list[str]) -> Iterator[str]:
    def step(rel: str, rest: list[str]) -> Iterator[str]:
        if not rest:
            yield rel
            return
        here = os.path.join(root, rel)
        head = rest[0]
        if any(c in head for c in "*?["):
            try:
                names = sorted(os.listdir(here))
            except (NotADirectoryError, FileNotFoundError):
                return
            for name in names:
                if fnmatch.fnmatchcase(name, head):
                    yield from step(f"{rel}/{name}" if rel else name, rest[1:])
        elif os.path.lexists(os.path.join(here, head)):
            yield from step(f"{rel}/{head}" if rel else head, rest[1:])

    yield from step("", parts)


def content_hash(
    context: Context, entries: Sequence[SourceEntry], exclude: Sequence[IgnorePattern] = ()
) -> str:
    """sha256 over the paths, types, permission bits, contents and link targets of what
    copying ``entries`` takes (mtimes and owners left out)."""
    h = hashlib.sha256()
    for entry in entries:
        h.update(f"source {entry.rel}\n".encode())
        for rel in context.walk(entry, exclude):
            _hash_entry(h, os.path.join(context.root, rel), rel)
    return "sha256:" + h.hexdigest()


def _hash_entry(h: hashlib._Hash, path: str, rel: str) -> None:
    st = os.lstat(path)
    h.update(f"{rel}\0{stat.S_IFMT(st.st_mode):o}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    elif stat.S_ISLNK(st.st_mode):
        h.update(os.readlink(path).encode())
    h.update(b"\n")


# --------------------------------------------------------------------------- copying


@value
class Owner:
    """What ``--chown``/``--chmod`` ask for: None keeps the source's value."""

    uid: int | None = None
    gid: int | None = None
    mode: int | None = None


def copy_entry(src: str, dst: str, owner: Owner) -> None:
    """Copy one non-directory (or create one directory) at ``dst``, replacing what is there."""
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        if os.path.lexists(dst) and not os.path.isdir(dst):
            os.unlink(dst)
        os.makedirs(dst, exist_ok=True)
    else:
        if os.path.isdir(dst) and not os.path.islink(dst):
            shutil.rmtree(dst)
        elif os.path.lexists(dst):
            os.unlink(dst)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, dst, follow_symlinks=False)
        else:
            raise InvalidArgument(f"{src}: cannot copy a {_kind(st.st_mode)}")
    uid = st.st_uid if owner.uid is None else owner.uid
    gid = st.st_gid if owner.gid is None else owner.gid
    if os.geteuid() == 0:
        os.chown(dst, uid, gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        mode = stat.S_IMODE(st.st_mode) if owner.mode is None else owner.mode
        os.chmod(dst, mode)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "fifo"
    return "device"


def copy_tree(src_root: str, rels: Sequence[str], dst: str, owner: Owner) -> None:
    """Copy ``src_root``'s entries ``rels`` (relative to it, parents before children; "" is
    ``src_root`` itself, copied as ``dst``) into ``dst``; directory times set last."""
    dirs: list[tuple[str, str]] = []
    base = rels[0] if rels else ""
    for rel in rels:
        sub = os.path.relpath(rel, base) if base else rel
        target = dst if sub in ("", ".") else os.path.join(dst, sub)
        source = os.path.join(src_root, rel) if rel else src_root
        copy_entry(source, target, owner)
        if os.path.isdir(target) and not os.path.islink(target):
            dirs.append((source, target))
    for source, target in reversed(dirs):
        st = os.lstat(source)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def is_archive(path: str) -> bool:
    """A local file ADD extracts: a tar, plain or gzip."""
    if not os.path.isfile(path) or os.path.islink(path):
        return False
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:2] == b"\x1f\x8b":
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def extract(path: str, dst: str) -> None:
    """Extract a local tar (plain or gzip) into ``dst`` (``layers.apply_layer``'s safety)."""
    os.makedirs(dst, exist_ok=True)
    with open(path, "rb") as f:
        apply_layer(f, dst, whiteouts="delete")


# --------------------------------------------------------------------------- stage trees


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class ChainView:
    """Read-only view of a committed chain: its lower dirs, top first, merged as overlay
    would (``Snapshotter.lowers``)."""

    def __init__(self, lowers: Sequence[str]) -> None:
        self.lowers = tuple(lowers)

    def lookup(self, rel: str) -> str | None:
        """The path on disk of ``rel`` (no symlinks followed), or None if absent."""
        parts = [p for p in rel.strip("/").split("/") if p and p != "."]
        for lower in self.lowers:
            path = lower
            for k, name in enumerate(parts):
                parent = path
                path = os.path.join(path, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    if k > 0 and _opaque(parent):
                        return None
                    break
                if _is_whiteout(st):
                    return None
                if k < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                    return None
            else:
                return path
        return None

    def listdir(self, rel: str) -> list[str]:
        """The names in directory ``rel`` of the merged tree, sorted."""
        parts = [p for p in rel.strip("/").split("/") if p and p != "."]
        names: set[str] = set()
        hidden: set[str] = set()
        for lower in self.lowers:
            path = os.path.join(lower, *parts)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                break
            for name in os.listdir(path):
                if name in hidden or name in names:
                    continue
                if _is_whiteout(os.lstat(os.path.join(path, name))):
                    hidden.add(name)
                else:
                    names.add(name)
            if _opaque(path):
                break
        return sorted(names)

    def walk(self, rel: str) -> Iterator[tuple[str, str]]:
        """``(relative path, path on disk)`` of ``rel`` and everything under it."""
        path = self.lookup(rel)
        if path is None:
            return
        yield rel, path
        if stat.S_ISDIR(os.lstat(path).st_mode):
            for name in self.listdir(rel):
                yield from self.walk(f"{rel.rstrip('/')}/{name}")

    def read_text(self, rel: str) -> str:
        path = self.lookup(rel)
        if path is None or not os.path.isfile(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()


def copy_from_view(view: ChainView, rel: str, dst: str, owner: Owner) -> None:
    """Copy ``rel`` of a stage's tree (a directory: its content) into ``dst``."""
    dirs: list[tuple[str, str]] = []
    root = rel.rstrip("/") or "/"
    for sub, path in view.walk(root):
        inner = os.path.relpath(sub, root)
        target = dst if inner == "." else os.path.join(dst, inner)
        copy_entry(path, target, owner)
        if os.path.isdir(target) and not os.path.islink(target):
            dirs.append((path, target))
    for source, target in reversed(dirs):
        st = os.lstat(source)
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def resolve_owner(chown: str, view: ChainView) -> tuple[int, int]:
    """``--chown``'s ``user[:group]`` as ids: numbers as given, names from the stage's
    ``/etc/passwd`` and ``/etc/group``; a user alone gives the group of the same number."""
    user, _, group = chown.partition(":")
    uid = _id_of(user, view.read_text("/etc/passwd"), "user", chown)
    gid = uid if not group else _id_of(group, view.read_text("/etc/group"), "group", chown)
    return uid, gid


def _id_of(name: str, table: str, what: str, chown: str) -> int:
    if name.isdigit():
        return int(name)
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            return int(fields[2])
    raise InvalidArgument(f"--chown={chown}: unable to find {what} {name!r} in the image")
