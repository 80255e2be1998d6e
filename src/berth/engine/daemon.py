"""``berthd``: the engine daemon's command line, start-up and shutdown.

    berthd [--data-root DIR] [--host unix:///run/berth/berth.sock] [--cgroup-parent NAME]
           [--ip-forward=true|false] [--registry-addr 127.0.0.1:5000]
           [--insecure-registry HOST[:PORT]|CIDR ...] [--userland-proxy=true|false] [--debug]

Rules:
- One daemon per data root: the pid file (``Paths.pid_file``) is flock'ed for the daemon's
  life (a locked one is refused; a crashed daemon's lock goes with it) and removed at exit.
  A socket path that still answers is refused (another daemon serves it); a dead one is
  replaced.
- The API socket is mode 0660 (root and its group, as dockerd's), its directory made 0755.
- TCP only with TLS client certificates (``--tlsverify --tlscacert --tlscert --tlskey``): a
  plain ``tcp://`` host is refused.
- SIGTERM and SIGINT stop the daemon gracefully: the listener closes, requests in flight
  finish (up to ``SHUTDOWN_TIMEOUT`` s), the socket and the pid file are removed.
- Containers (``containers.ContainerManager``) are loaded before the API serves, with the
  supervisor started if none serves the data root; the supervisor and its containers outlive
  the daemon. Their cgroups go under ``--cgroup-parent`` (relative to the daemon's own).
- Networks (``networks.NetworkManager``) live in berthd's network namespace; with
  ``--ip-forward`` (the default, as dockerd) forwarding is enabled there once a masquerading
  network exists. A stop leaves every bridge, veth and namespace as it is.
- ``--insecure-registry`` (repeatable, as dockerd's) names registries spoken to over plain
  http besides loopback ones (``api_registry``).
- Logging goes to stderr through ``logging``; ``--debug`` adds one line per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import socket
import ssl
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from berth.engine import api, api_containers, api_exec, api_registry
from berth.engine.containers import DEFAULT_CGROUP_PARENT, ContainerManager
from berth.engine.execs import ExecManager
from berth.engine.health import HealthMonitor
from berth.engine.network_services import NetworkServices
from berth.engine.networks import NetworkManager
from berth.engine.paths import DEFAULT_DATA_ROOT, DEFAULT_SOCKET, Paths
from berth.errors import BerthError, Conflict, InvalidArgument
from berth.image.store import ImageStore
from berth.registry.client import check_insecure_entry

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 10.0
SOCKET_MODE = 0o660


@dataclass(frozen=True)
class Listener:
    kind: str  # "unix" | "tcp"
    address: str  # the socket path, or the host
    port: int = 0


def parse_host(text: str, tls: bool) -> Listener:
    """``unix:///path``, ``/path``, or ``tcp://host:port`` (TLS only)."""
    if text.startswith("/"):
        return Listener("unix", text)
    parts = urlsplit(text)
    if parts.scheme == "unix":
        path = parts.path or DEFAULT_SOCKET
        if not path.startswith("/"):
            raise InvalidArgument(f"--host {text!r}: the socket path must be absolute")
        return Listener("unix", path)
    if parts.scheme == "tcp":
        if not tls:
            raise InvalidArgument(
                f"--host {text!r}: TCP needs --tlsverify with --tlscacert/--tlscert/--tlskey"
            )
        if parts.port is None:
            raise InvalidArgument(f"--host {text!r}: give a port (tcp://HOST:2376)")
        return Listener("tcp", parts.hostname or "0.0.0.0", parts.port)
    raise InvalidArgument(f"--host {text!r}: expected unix:///PATH or tcp://HOST:PORT")


def tls_context(cacert: str, cert: str, key: str) -> ssl.SSLContext:
    """A server context that requires a client certificate signed by ``cacert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=cacert)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="berthd", description="Berth's Docker-compatible engine.")
    p.add_argument("--data-root", default=DEFAULT_DATA_ROOT, help="persistent state")
    p.add_argument(
        "-H", "--host", default=f"unix://{DEFAULT_SOCKET}", help="unix:///PATH or tcp://H:P"
    )
    p.add_argument("--tlsverify", action="store_true", help="require client certificates")
    p.add_argument("--tlscacert", help="CA that signs client certificates")
    p.add_argument("--tlscert", help="the server's certificate")
    p.add_argument("--tlskey", help="the server's key")
    p.add_argument(
        "--cgroup-parent",
        default=DEFAULT_CGROUP_PARENT,
        help="the cgroup containers go under, relative to the daemon's own",
    )
    p.add_argument(
        "--ip-forward",
        nargs="?",
        const="true",
        default="true",
        choices=("true", "false"),
        help="enable net.ipv4.ip_forward in berthd's namespace (default true)",
    )
    p.add_argument(
        "--registry-addr",
        help="also serve an OCI registry (no auth: loopback only) on HOST:PORT, "
        "stored under DATA_ROOT/registry",
    )
    p.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]|CIDR",
        help="a registry to reach over plain http (loopback ones always are)",
    )
    p.add_argument(
        "--userland-proxy",
        nargs="?",
        const="true",
        default="true",
        choices=("true", "false"),
        help="serve published ports on the host's loopback by a proxy (default true, as"
        " dockerd); false: by DNAT (route_localnet on berth's bridges)",
    )
    p.add_argument("-D", "--debug", action="store_true", help="log every request")
    return p


def take_pid_file(path: str) -> int:
    """Lock ``path`` and write our pid in it; the open descriptor (the lock lives as long as it
    does, so a daemon killed with -9 leaves no lock behind). A locked file is ``Conflict``."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise Conflict(
            f"pid file found, ensure berthd is not running: {path} is locked by pid {holder}"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_pid_file(path: str, fd: int) -> None:
    _remove(path)
    os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _clear_stale_socket(path: str) -> None:
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise
        _remove(path)
        return
    finally:
        probe.close()
    raise Conflict(f"{path}: another daemon is serving this socket")


def engine_id(paths: Paths) -> str:
    """The daemon's persistent id (made once per data root)."""
    try:
        with open(paths.engine_id, encoding="ascii") as f:
            found = f.read().strip()
            if found:
                return found
    except FileNotFoundError:
        pass
    new = str(uuid.uuid4())
    tmp = paths.engine_id + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(new + "\n")
    os.rename(tmp, paths.engine_id)
    return new


async def serve(
    paths: Paths,
    listener: Listener,
    ssl_context: ssl.SSLContext | None = None,
    debug: bool = False,
    stop: asyncio.Event | None = None,
    cgroup_parent: str = DEFAULT_CGROUP_PARENT,
    ip_forward: bool = True,
    registry_addr: str | None = None,
    insecure_registries: tuple[str, ...] = (),
    userland_proxy: bool = True,
) -> None:
    """Run the daemon until ``stop`` is set (SIGTERM/SIGINT set it)."""
    paths.make()
    pid_fd = take_pid_file(paths.pid_file)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner: web.AppRunner | None = None
    registry: web.AppRunner | None = None
    containers: ContainerManager | None = None
    services: NetworkServices | None = None
    try:
        state = api.Engine(
            paths=paths,
            images=ImageStore(paths.images),
            engine_id=engine_id(paths),
            debug=debug,
        )
        # What rides on the networks (the embedded DNS, port rules) registers in
        # ``networks.hooks`` here, before ``containers.open()`` (which opens the networks).
        networks = NetworkManager(paths, state.events, ip_forward=ip_forward)
        services = NetworkServices(networks, paths.containers, userland_proxy=userland_proxy)
        containers = ContainerManager(
            paths,
            state.images,
            state.image_lock,
            cgroup_parent,
            events=state.events,
            networks=networks,
        )
        await containers.open()
        await services.start()
        state.containers = containers
        app = api.make_app(state)
        app[api_containers.CONTAINERS] = containers
        app[api_registry.INSECURE_REGISTRIES] = insecure_registries
        execs = app[api_exec.EXECS] = ExecManager(containers)
        health = HealthMonitor(containers, execs)
        health.open()
        app.on_shutdown.append(health.close)
        app.on_shutdown.append(containers.shutdown)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site: web.BaseSite
        if listener.kind == "unix":
            os.makedirs(os.path.dirname(listener.address), mode=0o755, exist_ok=True)
            _clear_stale_socket(listener.address)
            site = web.UnixSite(runner, listener.address)
            await site.start()
            os.chmod(listener.address, SOCKET_MODE)
        else:
            site = web.TCPSite(runner, listener.address, listener.port, ssl_context=ssl_context)
            await site.start()
        log.info(
            "berthd %s serving the Docker API %s on %s (data root %s, snapshots %s)",
            state.engine_id,
            api.API_VERSION,
            site.name,
            paths.data_root,
            state.images.snapshots.mode,
        )
        if registry_addr:
            registry = await _start_registry(paths, registry_addr)
        await stop.wait()
        log.info("berthd %s: shutting down", state.engine_id)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if registry is not None:
            await registry.cleanup()
        if runner is not None:
            await runner.cleanup()
        if containers is not None:
            await containers.close()
        if services is not None:
            await services.shutdown()
        if listener.kind == "unix" and runner is not None:
            _remove(listener.address)
        release_pid_file(paths.pid_file, pid_fd)
    log.info("berthd stopped")


async def _start_registry(paths: Paths, address: str) -> web.AppRunner:
    """The registry server beside the API (``--registry-addr``): no authentication, so on a
    loopback address only; its storage is ``<data-root>/registry``."""
    from berth.registry import server as registry

    host, port = registry.parse_address(address)
    if not registry.is_loopback(host):
        raise InvalidArgument(
            f"--registry-addr {address!r}: berthd serves its registry without authentication, "
            f"on a loopback address only (use `berth registry serve --htpasswd` elsewhere)"
        )
    config = registry.ServerConfig(root=os.path.join(paths.data_root, "registry"))
    return await registry.start(config, host, port)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("asyncio", "aiohttp.access", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        tls = bool(args.tlsverify)
        if tls and not (args.tlscacert and args.tlscert and args.tlskey):
            raise InvalidArgument("--tlsverify needs --tlscacert, --tlscert and --tlskey")
        listener = parse_host(args.host, tls)
        insecure = tuple(check_insecure_entry(e) for e in args.insecure_registry)
        context = None
        if listener.kind == "tcp":
            context = tls_context(args.tlscacert, args.tlscert, args.tlskey)
        asyncio.run(
            serve(
                Paths(args.data_root),
                listener,
                context,
                debug=args.debug,
                cgroup_parent=args.cgroup_parent,
                ip_forward=args.ip_forward == "true",
                userland_proxy=args.userland_proxy == "true",
                registry_addr=args.registry_addr,
                insecure_registries=insecure,
            )
        )
    except BerthError as e:
        print(f"berthd: {e.message}", file=sys.stderr)
        return 1
    except (OSError, ssl.SSLError) as e:
        print(f"berthd: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
