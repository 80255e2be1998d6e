"""Volume verbs: ``volume create/ls/inspect/rm/prune``.

Rules:
- Requests are the docker CLI's: ``create`` sends the driver, its options, the labels and the
  name when one is given (``--name`` or the argument, not both); ``prune`` adds the ``all``
  filter for ``-a``; ``rm -f`` passes ``force`` to the daemon.
- Output is the docker CLI's: ``create`` prints the name the daemon gives; ``ls`` is sorted
  by name in natural order with the default table ``DRIVER  VOLUME NAME`` (``-q``: names);
  ``rm`` prints each name removed; ``prune`` prints "Deleted Volumes:" and the names, then
  "Total reclaimed space: SIZE".
- Errors: the daemon's as ``Error response from daemon: …``, exit 1; ``inspect`` as
  ``common.inspect_each``.
"""

from __future__ import annotations

import sys
from typing import Any

from berth.cli.client import ApiError
from berth.cli.common import CliError, Context, filters_query, inspect_each, parser
from berth.cli.options import key_values
from berth.cli.render import human_size, natural_sorted, print_rows
from berth.cli.template import Record

LS_DEFAULT = "table {{.Driver}}\t{{.Name}}"
LS_HEADERS: dict[str, Any] = {
    "ID": "ID", "Name": "VOLUME NAME", "Group": "GROUP", "Driver": "DRIVER", "Scope": "SCOPE",
    "Availability": "AVAILABILITY", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS",
    "Links": "LINKS", "Size": "SIZE", "Status": "STATUS", "Label": str,
}  # fmt: skip
PRUNE_WARNING = (
    "WARNING! This will remove anonymous local volumes not used by at least one container."
)
PRUNE_ALL_WARNING = (
    "WARNING! This will remove all local volumes not used by at least one container."
)


def volume_row(v: dict[str, Any]) -> Record:
    """One ``volume ls`` row from a ``GET /volumes`` entry."""
    labels = v.get("Labels") or {}
    usage = v.get("UsageData")
    return Record(
        Name=v.get("Name", ""),
        Driver=v.get("Driver", ""),
        Scope=v.get("Scope", ""),
        Mountpoint=v.get("Mountpoint", ""),
        Labels=",".join(f"{k}={val}" for k, val in sorted(labels.items())),
        Links="N/A" if usage is None else str(usage.get("RefCount", 0)),
        Size="N/A" if usage is None else human_size(usage.get("Size", 0)),
        Group="N/A",
        Availability="N/A",
        Status="N/A",
        Label=lambda name: labels.get(name, ""),
    )


def cmd_volume_create(ctx: Context, argv: list[str]) -> int:
    p = parser("volume create", "[OPTIONS] [VOLUME]", "Create a volume")
    p.add_argument("-d", "--driver", default="local")
    p.add_argument("--name", default="")
    p.add_argument("-o", "--opt", action="append", default=[])
    p.add_argument("--label", action="append", default=[])
    p.add_argument("volume", nargs="?", metavar="VOLUME")
    a = p.parse_args(argv)
    if a.volume is not None:
        if a.name:
            raise CliError(
                "conflicting options: cannot specify a volume-name through both --name and as "
                "a positional arg"
            )
        a.name = a.volume
    body = {
        "Driver": a.driver,
        "DriverOpts": key_values(a.opt) or None,
        "Labels": key_values(a.label) or None,
        "Name": a.name or None,
    }
    result = ctx.client.post("/volumes/create", body={k: v for k, v in body.items() if v}) or {}
    sys.stdout.write(f"{result.get('Name', '')}\n")
    return 0


def cmd_volume_ls(ctx: Context, argv: list[str]) -> int:
    p = parser("volume ls", "[OPTIONS]", "List volumes")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--format", default="")
    p.add_argument("-f", "--filter", action="append", default=[])
    a = p.parse_args(argv)
    listed = ctx.client.get("/volumes", {"filters": filters_query(a.filter)}) or {}
    volumes = natural_sorted(listed.get("Volumes") or [], lambda v: str(v.get("Name", "")))
    fmt = "{{.Name}}" if a.quiet and a.format in ("", "table") else a.format
    print_rows([volume_row(v) for v in volumes], fmt, LS_DEFAULT, LS_HEADERS)
    return 0


def cmd_volume_inspect(ctx: Context, argv: list[str]) -> int:
    p = parser("volume inspect", "[OPTIONS] VOLUME [VOLUME...]")
    p.add_argument("-f", "--format", default="")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    a = p.parse_args(argv)
    return inspect_each(a.names, lambda n: ctx.client.get(f"/volumes/{n}"), a.format)


def cmd_volume_rm(ctx: Context, argv: list[str]) -> int:
    p = parser("volume rm", "[OPTIONS] VOLUME [VOLUME...]")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("names", nargs="+", metavar="VOLUME")
    a = p.parse_args(argv)
    failed = False
    for name in a.names:
        try:
            ctx.client.call("DELETE", f"/volumes/{name}", {"force": a.force})
        except ApiError as e:
            sys.stderr.write(f"Error response from daemon: {e.message}\n")
            failed = True
            continue
        sys.stdout.write(f"{name}\n")
    return 1 if failed else 0


def cmd_volume_prune(ctx: Context, argv: list[str]) -> int:
    from berth.cli.prune import confirmed

    p = parser("volume prune", "[OPTIONS]")
    p.add_argument("-a", "--all", action="store_true")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    a = p.parse_args(argv)
    filters = filters_query(a.filter) or {}
    if a.all:
        if "all" in filters:
            raise CliError("conflicting options: cannot specify both --all and --filter all=1")
        filters["all"] = {"true": True}
    if not confirmed(PRUNE_ALL_WARNING if a.all else PRUNE_WARNING, a.force):
        return 0
    result = ctx.client.post("/volumes/prune", {"filters": filters or None}) or {}
    deleted = result.get("VolumesDeleted") or []
    reclaimed = 0
    if deleted:
        sys.stdout.write("Deleted Volumes:\n" + "".join(f"{v}\n" for v in deleted) + "\n")
        reclaimed = int(result.get("SpaceReclaimed") or 0)
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed)}\n")
    return 0
