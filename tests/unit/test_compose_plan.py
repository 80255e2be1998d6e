"""berth compose's request bodies, labels and config hash; the log prefixer; the option split."""

from __future__ import annotations

import dataclasses
import io
import textwrap
import threading
from pathlib import Path

import pytest

from berth.cli.common import UsageError
from berth.cli.compose import plan
from berth.cli.compose.commands import split_options
from berth.cli.compose.logs import PrefixedLines, prefixes
from berth.cli.compose.model import Project
from berth.cli.compose.normalize import load_project

TEXT = """
name: shop
services:
  db:
    image: busybox
    volumes: [data:/data, ./conf:/conf:ro, /cache]
    networks: [back]
    healthcheck:
      test: ["CMD", "true"]
      interval: 2s
      retries: 3
    deploy:
      resources:
        limits: {cpus: "0.5", memory: 64m, pids: 20}
  web:
    build: ./web
    ports: ["8080:80", "127.0.0.1::9000/udp"]
    expose: ["7000"]
    environment: {MODE: prod}
    networks:
      front:
      back:
        aliases: [www]
    depends_on:
      db: {condition: service_healthy}
    restart: on-failure:3
    command: httpd -f
volumes:
  data:
networks:
  front:
  back:
    external: true
    name: shared-back
"""


@pytest.fixture
def project(tmp_path: Path) -> Project:
    path = tmp_path / "compose.yaml"
    path.write_text(textwrap.dedent(TEXT))
    return load_project([str(path)], environ={})


def test_container_body_and_labels(project: Project) -> None:
    web = project.services["web"]
    body = plan.create_body(project, web, 2, "sha256:abc")
    labels = body["Labels"]
    assert labels[plan.PROJECT] == "shop" and labels[plan.SERVICE] == "web"
    assert labels[plan.NUMBER] == "2" and labels[plan.ONEOFF] == "False"
    assert labels[plan.WORKING_DIR] == project.working_dir
    assert labels[plan.CONFIG_FILES] == project.config_files[0]
    assert labels[plan.CONFIG_HASH] == plan.config_hash(web)
    assert labels[plan.DEPENDS_ON] == "db:service_healthy:false"
    assert labels[plan.IMAGE] == "sha256:abc"
    assert labels[plan.VERSION] == plan.COMPOSE_VERSION
    assert body["Image"] == "shop-web"
    assert body["Cmd"] == ["httpd", "-f"]
    assert body["Env"] == ["MODE=prod"]
    assert body["ExposedPorts"] == {"80/tcp": {}, "9000/udp": {}, "7000/tcp": {}}
    host = body["HostConfig"]
    assert host["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "9000/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
    }
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["NetworkMode"] == "shop_front"
    endpoints = body["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints == {"shop_front": {"Aliases": ["web", "shop-web-2"]}}
    assert plan.extra_networks(project, web, 2) == [
        {"Network": "shared-back", "EndpointConfig": {"Aliases": ["web", "shop-web-2", "www"]}}
    ]
    assert plan.container_name(project, web, 2) == "shop-web-2"


def test_mounts_limits_and_healthcheck(project: Project) -> None:
    db = project.services["db"]
    body = plan.create_body(project, db, 1, "sha256:abc")
    host = body["HostConfig"]
    assert host["Binds"] == [f"{project.working_dir}/conf:/conf:ro"]
    assert host["Mounts"] == [
        {"Type": "volume", "Target": "/data", "Source": "shop_data"},
        {"Type": "volume", "Target": "/cache"},
    ]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 500_000_000, 20)
    assert body["Healthcheck"] == {"Test": ["CMD", "true"], "Interval": 2_000_000_000,
                                   "Retries": 3}  # fmt: skip
    assert host["NetworkMode"] == "shared-back"


def test_network_and_volume_bodies(project: Project) -> None:
    assert plan.volume_body(project, "data") == {
        "Name": "shop_data",
        "Labels": {plan.VOLUME: "data", plan.PROJECT: "shop", plan.VERSION: plan.COMPOSE_VERSION},
    }
    network = plan.network_body(project, "front")
    assert network["Name"] == "shop_front"
    assert network["Labels"][plan.NETWORK] == "front"
    assert plan.project_filter("shop", "web") == {
        "label": {f"{plan.PROJECT}=shop": True, f"{plan.SERVICE}=web": True}
    }


def test_config_hash_follows_what_changes_a_container(project: Project) -> None:
    web = project.services["web"]
    same = plan.config_hash(web)
    assert plan.config_hash(dataclasses.replace(web)) == same
    assert plan.config_hash(dataclasses.replace(web, scale=3)) == same
    assert plan.config_hash(dataclasses.replace(web, depends_on={})) == same
    assert plan.config_hash(dataclasses.replace(web, environment={"MODE": "dev"})) != same
    assert plan.config_hash(dataclasses.replace(web, memory=1 << 20)) != same


def test_prefixed_lines_are_whole_and_aligned() -> None:
    out = io.BytesIO()
    lock = threading.Lock()
    marks = prefixes(["shop-web-1", "shop-db-1"], "shop", colour=False, no_prefix=False)
    assert marks == {"shop-web-1": b"web-1 | ", "shop-db-1": b"db-1  | "}
    web = PrefixedLines(marks["shop-web-1"], out, lock)  # type: ignore[arg-type]
    db = PrefixedLines(marks["shop-db-1"], out, lock)  # type: ignore[arg-type]
    web.write(b"hel")
    db.write(b"one\ntwo")
    web.write(b"lo\n")
    db.close()
    assert out.getvalue() == b"db-1  | one\nweb-1 | hello\ndb-1  | two\n"
    coloured = prefixes(["shop-web-1"], "shop", colour=True, no_prefix=False)["shop-web-1"]
    assert coloured.startswith(b"\033[36m") and coloured.endswith(b"\033[0m")


def test_split_options() -> None:
    options, rest = split_options(["-f", "a.yaml", "--file=b.yaml", "-pname", "up", "-d"])
    assert (options.files, options.project_name, rest) == (["a.yaml", "b.yaml"], "name",
                                                            ["up", "-d"])  # fmt: skip
    options, rest = split_options(["--project-directory", "/x", "ps"])
    assert (options.project_directory, rest) == ("/x", ["ps"])
    with pytest.raises(UsageError):
        split_options(["--bogus", "up"])
    with pytest.raises(UsageError):
        split_options(["-f"])
