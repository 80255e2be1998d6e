"""The built-in ``debian:<suite>`` base image, made on this machine as Debian's official images
are made (debuerreotype): ``debootstrap --variant=minbase`` from Debian's package archive, the
official images' container tweaks and clean-ups, then a reproducible one-layer image.

Rules:
- The mirror defaults to the one apt uses here (the first ``deb`` entry for the suite in
  ``/etc/apt/sources.list`` or ``sources.list.d/*.list|*.sources``), else deb.debian.org. It
  is probed (``dists/<suite>/InRelease``) before anything is written: unreachable is
  ``Unavailable`` naming the mirror, a suite it does not carry is ``NotFound``.
- debootstrap runs with ``--force-check-gpg`` (the archive's signature is checked against the
  host's debian-archive-keyring) in a temp dir under the store's root (same filesystem, so no
  cross-device copies) and in its own mount namespace (``unshare --mount``, private
  propagation): the /proc, /sys and /dev mounts it makes in its target die with it and never
  reach the host, even when it is killed. Before the temp dir is removed, anything still
  mounted below it in our namespace is detached, so removal never descends into a mount.
  The temp dir goes on every exit; nothing is tagged unless the whole build worked.
- The clean-up (``finish_rootfs``) does, in our words, what debuerreotype's init, minimizing
  config, fixup and tar exclusions do: init scripts kept from starting (``policy-rc.d`` exits
  101), dpkg without fsync, apt told to keep no .deb files or .bin caches, no translations,
  gzip'd indexes, aggressive autoremove; a deb822 ``debian.sources`` for the suite, its
  updates and security; no apt lists, apt caches, install logs or ldconfig aux-cache; empty
  /dev, /proc, /sys; no ``/etc/machine-id`` (never booted: systemd's first-boot logic should
  run if someone boots it); the host's hostname and resolv.conf replaced; password-change days
  in /etc/shadow clamped to the epoch; ``/`` owned 0:0, mode 0755.
- The epoch (SOURCE_DATE_EPOCH) is the newest mtime of a file some package installed that
  predates the build (package files carry their build's time; files written during the
  install do not count), else ``BASE_EPOCH``. Every mtime newer than the epoch is clamped to
  it, and the config's ``created`` is the epoch: the same package set gives the same layer
  digest and image id.
- The layer is written by ``layers.diff_to_layer`` from the finished tree: sorted entries,
  numeric uid/gid kept, no user names, hard links as links, xattrs as PAX, uncompressed.
- The config is the official one: Env PATH, Cmd ``["bash"]``, history ADD + CMD.
- Imports ``berth.spec``, ``berth.errors`` and this package only; stdlib only.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import glob
import logging
import os
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, BinaryIO, cast

from berth.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from berth.image import reference
from berth.image.base import BASE_EPOCH, _host_architecture
from berth.image.layers import diff_to_layer
from berth.spec import image as spec

if TYPE_CHECKING:
    from berth.image.store import Image, ImageStore

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SUITE = "bookworm"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEBOOTSTRAP_TIMEOUT = 1800.0  # seconds; a stalled download must not hang a build forever
PROBE_TIMEOUT = 20.0
_SUITE = re.compile(r"^[a-z][a-z0-9.-]*$")
_TAIL_LINES = 40
_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"

# What debuerreotype's minimizing config writes, keyed by path (comments shortened).
POLICY_RC_D = (
    "#!/bin/sh\n\n"
    "# Package installs in images happen during builds, where starting services does not work:\n"
    "# tell invoke-rc.d that no init script may run.\n\n"
    "exit 101\n"
)
APT_CLEAN = (
    '"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
    '/var/cache/apt/*.bin || true";'
)
MINIMIZING_CONFIG = {
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": (
        "# Image builds do not survive power loss anyway: no fsync after each file.\n\n"
        "force-unsafe-io\n"
    ),
    "etc/apt/apt.conf.d/docker-autoremove-suggests": (
        "# Remove packages that were only kept because another package suggests them.\n"
        'Apt::AutoRemove::SuggestsImportant "false";\n'
    ),
    "etc/apt/apt.conf.d/docker-clean": (
        "# Every install becomes a layer: keep no downloaded .deb files or binary caches in it.\n"
        f"DPkg::Post-Invoke {{ {APT_CLEAN} }};\n"
        f"APT::Update::Post-Invoke {{ {APT_CLEAN} }};\n\n"
        'Dir::Cache::pkgcache "";\n'
        'Dir::Cache::srcpkgcache "";\n'
    ),
    "etc/apt/apt.conf.d/docker-gzip-indexes": (
        '# Keep the package lists compressed on disk.\nAcquire::GzipIndexes "true";\n'
    ),
    "etc/apt/apt.conf.d/docker-no-languages": (
        '# No translated package descriptions.\nAcquire::Languages "none";\n'
    ),
}
HOSTNAME = "berth\n"
RESOLV_CONF = "nameserver 1.1.1.1\nnameserver 1.0.0.1\n"  # debuerreotype's choice
# Removed outright (files) or emptied (directories), relative to the root.
REMOVED_FILES = (
    "etc/machine-id",
    "etc/apt/apt.conf.d/01autoremove-kernels",
    "var/log/dpkg.log",
    "var/log/bootstrap.log",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/cache/ldconfig/aux-cache",
    "run/mount/utab",
    "run/motd.dynamic",
    "etc/apt/sources.list",
)
EMPTIED_DIRS = ("dev", "proc", "sys", "var/cache/apt", "var/lib/apt/lists")


# --------------------------------------------------------------------------- the mirror


def apt_mirror(suite: str = DEFAULT_SUITE, apt_dir: str = "/etc/apt") -> str:
    """The mirror apt uses for ``suite`` here (its first ``deb`` entry for that suite, one-line
    or deb822), else ``DEFAULT_MIRROR``."""
    paths = [os.path.join(apt_dir, "sources.list")]
    paths += sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.list")))
    paths += sorted(glob.glob(os.path.join(apt_dir, "sources.list.d", "*.sources")))
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        entries = _deb822_entries(text) if path.endswith(".sources") else _one_line_entries(text)
        for uri, suites in entries:
            if suite in suites:
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def _one_line_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == "deb":
            words = words[1:]
            if words and words[0].startswith("["):  # options: [arch=amd64 signed-by=…]
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2:
                yield words[0], [words[1]]


def _deb822_entries(text: str) -> Iterable[tuple[str, list[str]]]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, val = line.partition(":")
            fields[key.strip().lower()] = val.strip()
        if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
            suites = fields.get("suites", "").split()
            for uri in fields.get("uris", "").split():
                yield uri, suites


def probe_mirror(mirror: str, suite: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Fetch the head of ``dists/<suite>/InRelease``: Unavailable if the mirror cannot be
    reached, NotFound if it does not carry the suite."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/InRelease"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise NotFound(f"Debian mirror {mirror} has no suite {suite!r} ({url}: 404)") from e
        raise Unavailable(f"Debian mirror {mirror} is unreachable: {url}: HTTP {e.code}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise Unavailable(f"Debian mirror {mirror} is unreachable: {url}: {reason}") from e


def security_mirror(mirror: str) -> str:
    """The security archive beside ``mirror`` (``…/debian`` -> ``…/debian-security``)."""
    base = mirror.rstrip("/")
    return (
        base + "-security" if base.endswith("/debian") else "http://deb.debian.org/debian-security"
    )


# --------------------------------------------------------------------------- the image


def debian_image(
    store: ImageStore,
    suite: str = DEFAULT_SUITE,
    mirror: str | None = None,
    *,
    ref: str | None = None,
    progress: Progress | None = None,
    timeout: float = DEBOOTSTRAP_TIMEOUT,
) -> Image:
    """Build ``debian:<suite>`` with debootstrap from ``mirror`` (apt's by default) and tag it
    ``ref`` (``docker.io/library/debian:<suite>``). ``progress`` gets debootstrap's output,
    line by line, and one line per later step. Takes a minute or more and ~40 MB of downloads.
    """
    if not _SUITE.match(suite):
        raise InvalidArgument(f"Debian suite {suite!r}: expected a name like 'bookworm'")
    ref = ref or f"docker.io/library/debian:{suite}"
    reference.parse(ref)
    mirror = (mirror or apt_mirror(suite)).rstrip("/")
    say = progress or (lambda _line: None)
    debootstrap = _tool("debootstrap", "debootstrap")
    unshare = _tool("unshare", "util-linux")
    if os.geteuid() != 0:
        raise FailedPrecondition(f"building debian:{suite} needs root (debootstrap chroots)")
    probe_mirror(mirror, suite)
    tmp = tempfile.mkdtemp(dir=store.root, prefix=".debian-")
    rootfs = os.path.join(tmp, "rootfs")
    try:
        started = time.time()
        say(f"debootstrap --variant=minbase {suite} from {mirror}")
        argv = [unshare, "--mount", "--propagation", "private", "--", debootstrap]
        argv += ["--variant=minbase", "--force-check-gpg", suite, rootfs, mirror]
        _run_debootstrap(argv, mirror, rootfs, say, timeout)
        _detach_mounts_below(tmp)  # the namespace is gone with debootstrap; be sure anyway
        say("clean-up: the official images' container config and exclusions")
        epoch = finish_rootfs(rootfs, suite, mirror, installed_before=started)
        say("writing the layer")
        with store.content.writer() as writer:
            stats = diff_to_layer(rootfs, cast("BinaryIO", writer))
        blob = writer.commit()
        created = _rfc3339(epoch)
        config = spec.ImageConfig(
            architecture=_host_architecture(),
            os="linux",
            created=created,
            rootfs=spec.RootFS(diff_ids=(stats.diff_id,)),
            config=spec.ContainerConfig(env=(PATH_ENV,), cmd=("bash",)),
            history=(
                spec.History(
                    created=created,
                    created_by=f"berth: debootstrap --variant=minbase {suite} {mirror}",
                ),
                spec.History(created=created, created_by='CMD ["bash"]', empty_layer=True),
            ),
        )
        image = store.write_image(config, [blob.descriptor(spec.OCI_LAYER)], ref)
        say(f"{ref}: image {image.short_id}, {stats.entries} entries, {blob.size} bytes")
        log.info("debian image %s built from %s (%s)", image.short_id, mirror, suite)
        return image
    finally:
        _detach_mounts_below(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_SBIN_PATH)
    if found is None:
        raise Unavailable(f"{name} is missing: install the Debian package {package}")
    return found


def _run_debootstrap(
    argv: list[str], mirror: str, rootfs: str, say: Progress, timeout: float
) -> None:
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C",
        "DEBIAN_FRONTEND": "noninteractive",
        **{k: v for k, v in os.environ.items() if k.lower().endswith("_proxy")},
    }
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: killed whole on any failure
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            pending = b""
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable(
                        f"debootstrap from {mirror} did not finish in {timeout:.0f} s; "
                        "last output:\n" + "\n".join(tail)
                    )
                if not sel.select(timeout=min(left, 5.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                *lines, pending = (pending + chunk).split(b"\n")
                if not chunk and pending:
                    lines, pending = [pending], b""  # a last line without a newline
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    tail.append(line)
                    say(line)
                if not chunk:
                    break
        code = proc.wait()
    except BaseException:
        _kill_group(proc)
        raise
    finally:
        proc.stdout.close()
    if code != 0:
        detail = "\n".join(tail)
        log_path = os.path.join(rootfs, "debootstrap", "debootstrap.log")
        with contextlib.suppress(OSError), open(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4000))
            detail += "\n--- debootstrap.log (end) ---\n" + f.read().decode("utf-8", "replace")
        download = re.search(
            r"(?i)fail(ed|ure) (getting|downloading|retrieving)|couldn't download"
            r"|unable to connect|name or service not known",
            detail,
        )
        kind = Unavailable if download else FailedPrecondition
        raise kind(f"debootstrap from Debian mirror {mirror} failed (exit {code}):\n{detail}")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _mounts_below(directory: str) -> list[str]:
    """Mount points at or below ``directory`` in our mount namespace, deepest first."""
    prefix = os.path.realpath(directory)
    found: list[str] = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _detach_mounts_below(directory: str) -> None:
    if not os.path.isdir(directory):
        return
    for point in _mounts_below(directory):
        log.warning("detaching %s left mounted by debootstrap", point)
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    left = _mounts_below(directory)
    if left:
        raise FailedPrecondition(f"could not unmount {', '.join(left)}; {directory} kept")


# --------------------------------------------------------------------------- the clean-up


def finish_rootfs(rootfs: str, suite: str, mirror: str, installed_before: float) -> int:
    """Turn a fresh debootstrap tree into what the official image holds (see the module
    docstring); the epoch its mtimes are clamped to."""
    epoch = package_epoch(rootfs, installed_before)
    for rel, text in MINIMIZING_CONFIG.items():
        if os.path.isdir(os.path.join(rootfs, os.path.dirname(rel))):
            _write(rootfs, rel, text, 0o644)
    _write(rootfs, "usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
    _write(rootfs, "etc/apt/sources.list.d/debian.sources", sources(suite, mirror), 0o644)
    _write(rootfs, "etc/hostname", HOSTNAME, 0o644)
    _write(rootfs, "etc/resolv.conf", RESOLV_CONF, 0o644)
    for rel in REMOVED_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rootfs, rel))
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(rootfs, "run", "mount"))  # only if empty
    for rel in EMPTIED_DIRS:
        _empty(os.path.join(rootfs, rel))
    for rel in ("etc/shadow", "etc/shadow-"):
        _clamp_shadow(os.path.join(rootfs, rel), epoch // 86400)
    if os.geteuid() == 0:
        os.chown(rootfs, 0, 0)
    os.chmod(rootfs, 0o755)
    clamp_mtimes(rootfs, epoch)
    return epoch


def sources(suite: str, mirror: str) -> str:
    """A deb822 ``debian.sources`` as the official images carry: the suite and its updates
    from ``mirror``, its security suite from the security archive."""
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    return (
        f"Types: deb\nURIs: {mirror}\nSuites: {suite} {suite}-updates\nComponents: main\n"
        f"Signed-By: {keyring}\n\n"
        f"Types: deb\nURIs: {security_mirror(mirror)}\nSuites: {suite}-security\n"
        f"Components: main\nSigned-By: {keyring}\n"
    )


def package_epoch(rootfs: str, installed_before: float) -> int:
    """The newest mtime (whole seconds) of a regular file listed in dpkg's ``info/*.list``
    that is older than ``installed_before``; ``BASE_EPOCH`` when there is none."""
    newest = 0
    for listing in glob.glob(os.path.join(rootfs, "var/lib/dpkg/info/*.list")):
        with open(listing, "rb") as f:
            names = f.read().splitlines()
        for name in names:
            try:
                st = os.lstat(os.path.join(rootfs, os.fsdecode(name).lstrip("/")))
            except OSError:
                continue
            if st.st_mode & 0o170000 == 0o100000 and newest < st.st_mtime < installed_before:
                newest = int(st.st_mtime)
    return newest or BASE_EPOCH


def clamp_mtimes(rootfs: str, epoch: int) -> None:
    """Set every mtime (and atime) newer than ``epoch`` to ``epoch``, symlinks themselves
    included; directories last, so clamping their children does not move them again."""
    for top, dirs, files in os.walk(rootfs, topdown=False):
        for name in [*files, *dirs]:
            _clamp(os.path.join(top, name), epoch)
    _clamp(rootfs, epoch)


def _clamp(path: str, epoch: int) -> None:
    st = os.lstat(path)
    if st.st_mtime > epoch:
        os.utime(path, (epoch, epoch), follow_symlinks=False)


def _write(rootfs: str, rel: str, text: str, mode: int) -> None:
    path = os.path.join(rootfs, rel)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a host file debootstrap copied may be read-only or a symlink
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)


def _empty(directory: str) -> None:
    """Remove what ``directory`` holds (never following symlinks), keeping it."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _clamp_shadow(path: str, day: int) -> None:
    """Field 3 (the day of the last password change) set to ``day`` where it is later."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
    except FileNotFoundError:
        return
    out: list[str] = []
    for line in lines:
        fields = line.rstrip("\n").split(":")
        if len(fields) > 2 and fields[2].isdigit() and int(fields[2]) > day:
            fields[2] = str(day)
            out.append(":".join(fields) + ("\n" if line.endswith("\n") else ""))
        else:
            out.append(line)
    if out != lines:
        with open(path, "w", encoding="utf-8") as f:  # in place: mode and owner stay
            f.write("".join(out))


def _rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
