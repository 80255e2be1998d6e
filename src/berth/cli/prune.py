"""``container prune``, ``image prune`` and ``system prune``: remove what is not in use.

Rules:
- Without ``-f`` the command asks first, as docker does ("Are you sure you want to continue?
  [y/N]"), reading one line from stdin; anything but ``y``/``yes`` cancels with exit 0.
- The output is docker's: a "Deleted Containers:" / "Deleted Images:" section when something
  went, then "Total reclaimed space: SIZE".
- ``image prune`` removes dangling images only; ``-a`` every image no container uses.
"""

from __future__ import annotations

import sys
from typing import Any

from berth.cli.common import Context, filters_query, parser
from berth.cli.render import human_size

CONTAINERS_WARNING = "WARNING! This will remove all stopped containers."
IMAGES_WARNING = "WARNING! This will remove all dangling images."
ALL_IMAGES_WARNING = (
    "WARNING! This will remove all images without at least one container associated to them."
)
SYSTEM_WARNING = """WARNING! This will remove:
  - all stopped containers
  - all dangling images"""


def confirmed(warning: str, force: bool) -> bool:
    if force:
        return True
    sys.stdout.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip().lower() if sys.stdin else ""
    return answer in ("y", "yes")


def _prune_containers(ctx: Context, filters: list[str]) -> int:
    result: dict[str, Any] = ctx.client.post(
        "/containers/prune", {"filters": filters_query(filters)}
    ) or {}  # fmt: skip
    deleted = result.get("ContainersDeleted") or []
    if deleted:
        sys.stdout.write("Deleted Containers:\n" + "".join(f"{c}\n" for c in deleted) + "\n")
    return int(result.get("SpaceReclaimed") or 0)


def _prune_images(ctx: Context, filters: list[str], everything: bool) -> int:
    query_filters = [*filters, "dangling=false" if everything else "dangling=true"]
    result: dict[str, Any] = ctx.client.post(
        "/images/prune", {"filters": filters_query(query_filters)}
    ) or {}  # fmt: skip
    deleted = result.get("ImagesDeleted") or []
    if deleted:
        lines = [f"{key.lower()}: {item[key]}\n" for item in deleted for key in item]
        sys.stdout.write("Deleted Images:\n" + "".join(lines) + "\n")
    return int(result.get("SpaceReclaimed") or 0)


def _prune_parser(what: str, images: bool = False) -> Any:
    p = parser(f"{what} prune", "[OPTIONS]")
    p.add_argument("-f", "--force", action="store_true")
    p.add_argument("--filter", action="append", default=[])
    if images:
        p.add_argument("-a", "--all", action="store_true")
    return p


def cmd_container_prune(ctx: Context, argv: list[str]) -> int:
    a = _prune_parser("container").parse_args(argv)
    if not confirmed(CONTAINERS_WARNING, a.force):
        return 0
    reclaimed = _prune_containers(ctx, a.filter)
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed)}\n")
    return 0


def cmd_image_prune(ctx: Context, argv: list[str]) -> int:
    a = _prune_parser("image", images=True).parse_args(argv)
    if not confirmed(ALL_IMAGES_WARNING if a.all else IMAGES_WARNING, a.force):
        return 0
    reclaimed = _prune_images(ctx, a.filter, a.all)
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed)}\n")
    return 0


def cmd_system_prune(ctx: Context, argv: list[str]) -> int:
    a = _prune_parser("system", images=True).parse_args(argv)
    if not confirmed(SYSTEM_WARNING, a.force):
        return 0
    reclaimed = _prune_containers(ctx, a.filter)
    reclaimed += _prune_images(ctx, a.filter, a.all)
    sys.stdout.write(f"Total reclaimed space: {human_size(reclaimed)}\n")
    return 0
