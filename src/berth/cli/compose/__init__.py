"""``berth compose``: multi-container applications from a compose file, client-side.

Rules: like Docker Compose (a CLI plugin), it is orchestration in the client over the Docker
Engine API, through ``berth.cli.client``; the daemon knows nothing of projects but the labels.
The package's modules: ``loader`` (files, ``.env``, interpolation, merging), ``model`` (the
validated project as frozen dataclasses), ``plan`` (names, labels, config hash, request
bodies; pure), ``up`` (converging and tearing down a project), ``logs`` (prefixed logs of
several containers), ``commands`` (the verbs and their flags), ``lifecycle`` (stop, start,
restart, pull, rm of existing containers). Only ``cmd_compose`` is imported at start-up (the
verb table wants it here); the rest loads with it.
"""

from __future__ import annotations

from berth.cli.common import Context


def cmd_compose(ctx: Context, argv: list[str]) -> int:
    from berth.cli.compose.commands import cmd_compose as run

    return run(ctx, argv)
