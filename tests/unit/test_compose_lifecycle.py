"""The pure part of ``compose restart``: which services a restart of some reaches."""

from __future__ import annotations

import textwrap
from pathlib import Path

from berth.cli.compose.lifecycle import with_restart_dependents
from berth.cli.compose.normalize import load_project

COMPOSE = """
services:
  db: {image: busybox}
  cache: {image: busybox}
  api:
    image: busybox
    depends_on:
      db: {condition: service_started, restart: true}
      cache: {condition: service_started}
  web:
    image: busybox
    depends_on:
      api: {condition: service_started, restart: true}
  worker:
    image: busybox
    depends_on: [db]
"""


def test_restart_reaches_restart_true_dependents_transitively(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(textwrap.dedent(COMPOSE))
    project = load_project([], str(tmp_path), "deps")
    # not worker (no restart: true); api's dependency on cache has none either
    assert with_restart_dependents(project, ["db"]) == ["db", "api", "web"]
    assert with_restart_dependents(project, ["cache"]) == ["cache"]
    assert with_restart_dependents(project, ["web"]) == ["web"]
