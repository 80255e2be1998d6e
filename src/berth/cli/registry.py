"""``berth registry``: run Berth's OCI registry server, or collect its garbage.

    berth registry serve --addr HOST:PORT --root DIR [--htpasswd FILE] [--access FILE]
                         [--token-realm URL [--token-service NAME] [--token-key FILE]]
                         [--tls-cert FILE --tls-key FILE] [--read-only] [--no-auth-anywhere]
    berth registry gc --root DIR [--grace SECONDS]

Rules: ``serve`` runs in the foreground until SIGINT/SIGTERM (open uploads are aborted on the
way out) and logs to stderr. Without ``--htpasswd`` it serves without authentication, which it
does only on a loopback address unless ``--no-auth-anywhere`` says so. ``--token-realm`` turns
Basic auth into the Docker token flow, the token endpoint served by this registry at the
realm's path. ``gc`` removes blobs no manifest references (older than ``--grace``, so a push
in progress keeps its blobs); it is safe while the server runs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from berth.cli.common import CliError, Context, UsageError, parser
from berth.errors import BerthError

USAGE = """Usage:  berth registry COMMAND

Commands:
  serve       Serve an OCI distribution registry (docker-registry's HTTP API)
  gc          Delete blobs that no manifest references
"""


def _serve(argv: list[str]) -> int:
    p = parser("registry serve", "--addr HOST:PORT --root DIR [OPTIONS]")
    p.add_argument("--addr", default="127.0.0.1:5000", help="listen address (HOST:PORT)")
    p.add_argument("--root", required=True, help="storage directory")
    p.add_argument("--htpasswd", help="bcrypt htpasswd file (htpasswd -B): Basic auth")
    p.add_argument("--access", help="per-repository rights: USER ACTIONS PATTERN... per line")
    p.add_argument("--token-realm", help="use the token flow; the URL of this token endpoint")
    p.add_argument("--token-service", default="berth-registry", help="the tokens' audience")
    p.add_argument("--token-key", help="HMAC secret file (default ROOT/token.key, made once)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's key (PEM)")
    p.add_argument("--read-only", action="store_true", help="refuse pushes and deletes")
    p.add_argument(
        "--no-auth-anywhere",
        action="store_true",
        help="allow serving without authentication on a non-loopback address",
    )
    p.add_argument("-D", "--debug", action="store_true", help="log every token and upload")
    args = p.parse_args(argv)
    from berth.registry.server import ServerConfig, is_loopback, parse_address, start, tls_context

    try:
        host, port = parse_address(args.addr)
    except BerthError as e:
        raise UsageError(f"--addr: {e.message}") from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not (args.htpasswd or args.access) and not is_loopback(host) and not args.no_auth_anywhere:
        raise CliError(
            f"berth registry: refusing to serve {args.addr} without authentication "
            f"(give --htpasswd, or --no-auth-anywhere)",
            1,
        )
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = ServerConfig(
        root=args.root,
        htpasswd=args.htpasswd,
        access=args.access,
        token_realm=args.token_realm,
        token_service=args.token_service,
        token_key=args.token_key,
        read_only=args.read_only,
    )

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        context = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
        runner = await start(config, host, port, context)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(serve())
    except (BerthError, OSError) as e:
        raise CliError(f"berth registry: {getattr(e, 'message', None) or e}", 1) from None
    return 0


def _gc(argv: list[str]) -> int:
    p = parser("registry gc", "--root DIR [--grace SECONDS]")
    p.add_argument("--root", required=True, help="the registry's storage directory")
    p.add_argument(
        "--grace", type=float, default=3600.0, help="keep blobs younger than this (seconds)"
    )
    args = p.parse_args(argv)
    from berth.registry.storage import RegistryStorage

    removed = RegistryStorage(args.root).gc(args.grace)
    for digest in removed:
        sys.stdout.write(f"deleted: {digest}\n")
    sys.stdout.write(f"{len(removed)} blobs deleted\n")
    return 0


def cmd_registry(_ctx: Context, argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    sub, rest = argv[0], argv[1:]
    if sub == "serve":
        return _serve(rest)
    if sub == "gc":
        return _gc(rest)
    raise UsageError(f"unknown registry command {sub!r} (serve, gc)")
