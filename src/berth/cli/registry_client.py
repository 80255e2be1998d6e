"""Registry verbs: pull, push, login, logout.

Rules:
- The daemon does the transfers (``POST /images/create``, ``/images/{name}/push``); the CLI
  sends the credentials it has for the reference's registry in ``X-Registry-Auth``, read from
  Docker's ``config.json`` (``$DOCKER_CONFIG`` or ``~/.docker``), as the docker CLI does, and
  shows the streamed progress (``progress.show``: rich bars on a terminal, plain lines else).
- References are normalized as the docker CLI does before ``/images/create``: ``busybox`` is
  ``docker.io/library/busybox`` with tag ``latest``; a pull prints the full reference last.
- ``login`` asks the daemon to check the credentials (``POST /auth``) and stores them in
  ``config.json`` only when it says "Login Succeeded"; ``-p`` warns as docker does, and
  ``--password-stdin`` reads the password from standard input (trailing newline dropped).
  With neither a username nor a password given, stored credentials are tried first, then the
  user is asked on a terminal; with no terminal that is docker's error.
- ``logout`` forgets the server's credentials ("Not logged in to …" when there were none).
- Messages and exit codes are the docker CLI's: the daemon's refusal is "Error response from
  daemon: …" and 1.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from berth.cli.client import ApiError
from berth.cli.common import CliError, Context, is_terminal, parser
from berth.cli.images import normalize_repository, split_reference
from berth.cli.progress import show
from berth.errors import BerthError
from berth.registry import credentials

DEFAULT_SERVER = "docker.io"
PASSWORD_WARNING = "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n"


def registry_of(repository: str) -> str:
    """The registry host of a normalized repository (``docker.io`` for Docker Hub's)."""
    return repository.split("/", 1)[0]


def auth_header(repository: str) -> dict[str, str]:
    """``X-Registry-Auth`` with the stored credentials of the repository's registry."""
    try:
        auth = credentials.ConfigFile().get(registry_of(repository))
    except BerthError as e:
        raise CliError(f"Error: {e.message}", 1) from None
    return {"X-Registry-Auth": credentials.encode_header(auth)}


def pull_image(ctx: Context, ref: str, out: TextIO, platform: str | None = None) -> str:
    """Pull with progress on ``out``; the full reference pulled."""
    repo, tag = split_reference(ref)
    full = normalize_repository(repo)
    # a digest travels inside fromImage (docker.io/library/x@sha256:…), a tag beside it
    wanted = f"{full}{tag}" if tag.startswith("@") else f"{full}:{tag}"
    query = {
        "fromImage": wanted if tag.startswith("@") else full,
        "tag": None if tag.startswith("@") else tag,
        "platform": platform,
    }
    response = ctx.client.open("POST", "/images/create", query, headers=auth_header(full),
                               own_connection=True)  # fmt: skip
    show(response.json_lines(), out)
    return wanted


def cmd_pull(ctx: Context, argv: list[str]) -> int:
    p = parser("pull", "[OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-a", "--all-tags", action="store_true")
    p.add_argument("--platform")
    p.add_argument("name")
    a = p.parse_args(argv)
    if a.all_tags:
        raise CliError("berth pull: --all-tags is not supported; name one tag", 125)
    out = open(os.devnull, "w") if a.quiet else sys.stdout  # noqa: SIM115
    full = pull_image(ctx, a.name, out, a.platform)
    sys.stdout.write(full + "\n")
    return 0


def cmd_push(ctx: Context, argv: list[str]) -> int:
    p = parser("push", "[OPTIONS] NAME[:TAG]", "Upload an image to a registry")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("-a", "--all-tags", action="store_true")
    p.add_argument("name")
    a = p.parse_args(argv)
    repo, tag = split_reference(a.name)
    if tag.startswith("@"):
        raise CliError(f"invalid reference format: cannot push a digest reference: {a.name}", 1)
    query = {"tag": None if a.all_tags else tag}
    full = normalize_repository(repo)
    response = ctx.client.open("POST", f"/images/{full}/push", query,
                               headers=auth_header(full), own_connection=True)  # fmt: skip
    out = open(os.devnull, "w") if a.quiet else sys.stdout  # noqa: SIM115
    show(response.json_lines(), out)
    if a.quiet:
        sys.stdout.write(a.name + "\n")
    return 0


def _ask(prompt: str, secret: bool = False) -> str:
    if not is_terminal(sys.stdin):
        raise CliError("Error: Cannot perform an interactive login from a non TTY device", 1)
    if secret:
        import getpass

        return getpass.getpass(prompt)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    return sys.stdin.readline().rstrip("\n")


def _check(ctx: Context, auth: credentials.AuthConfig) -> None:
    """The daemon checks the credentials against the registry (``ApiError`` if refused)."""
    ctx.client.post("/auth", body=auth.to_json())


def cmd_login(ctx: Context, argv: list[str]) -> int:
    p = parser("login", "[OPTIONS] [SERVER]", "Authenticate to a registry")
    p.add_argument("-u", "--username", default="")
    p.add_argument("-p", "--password", default=None)
    p.add_argument("--password-stdin", action="store_true")
    p.add_argument("server", nargs="?", default=DEFAULT_SERVER)
    a = p.parse_args(argv)
    if a.password is not None:
        sys.stderr.write(PASSWORD_WARNING)
        if a.password_stdin:
            raise CliError("--password and --password-stdin are mutually exclusive", 1)
    if a.password_stdin:
        if not a.username:
            raise CliError("Must provide --username with --password-stdin", 1)
        a.password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    store = credentials.ConfigFile()
    key = credentials.server_key(a.server)
    if not a.username and a.password is None:
        stored = store.get(a.server)
        if stored is not None:
            try:
                _check(ctx, stored)
            except ApiError:
                pass  # stale: ask for new ones
            else:
                sys.stdout.write("Login Succeeded\n")
                return 0
    username = a.username or _ask("Username: ")
    if not username:
        raise CliError("Error: Non-null Username Required", 1)
    password = a.password if a.password is not None else _ask("Password: ", secret=True)
    if not password:
        raise CliError("Error: Password Required", 1)
    auth = credentials.AuthConfig(username=username, password=password, server_address=key)
    _check(ctx, auth)
    store.store(a.server, auth)
    sys.stderr.write(
        f"WARNING! Your credentials are stored unencrypted in '{store.path}'.\n"
        "Configure a credential helper to remove this warning.\n\n"
    )
    sys.stdout.write("Login Succeeded\n")
    return 0


def cmd_logout(ctx: Context, argv: list[str]) -> int:
    p = parser("logout", "[SERVER]", "Log out from a registry")
    p.add_argument("server", nargs="?", default=DEFAULT_SERVER)
    a = p.parse_args(argv)
    shown = credentials.server_key(a.server)
    if credentials.ConfigFile().erase(a.server):
        sys.stdout.write(f"Removing login credentials for {shown}\n")
    else:
        sys.stdout.write(f"Not logged in to {shown}\n")
    return 0
