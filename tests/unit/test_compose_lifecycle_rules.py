"""The pure parts of the lifecycle verbs: which services a restart reaches, and the project
that ``-p`` without a file reads from the containers' labels."""

from __future__ import annotations

import textwrap
from pathlib import Path

from berth.cli.compose import plan
from berth.cli.compose.lifecycle import project_from_labels, with_restart_dependents
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


def test_project_from_labels_orders_by_the_depends_on_label() -> None:
    def container(service: str, depends: str) -> dict[str, object]:
        labels = {plan.SERVICE: service, plan.DEPENDS_ON: depends, plan.PROJECT: "p"}
        return {"Id": service, "Image": "busybox", "Labels": labels}

    project = project_from_labels("p", [
        container("web", "api:service_healthy:true,gone:service_started:false"),
        container("api", "db:service_started:false"),
        container("db", ""),
        container("db", ""),  # a second replica
    ])  # fmt: skip
    assert list(project.services) == ["db", "api", "web"]
    web = project.services["web"].depends_on
    assert (web["api"].condition, web["api"].restart) == ("service_healthy", True)
    assert not web["gone"].required  # a service with no container left is skipped
    assert with_restart_dependents(project, ["api"]) == ["api", "web"]
